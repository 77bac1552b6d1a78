"""``osrbench score``: post-hoc scorers applied to finished runs, and the method x scorer matrix."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from osrbench import verify
from osrbench.commands._checks import TABLE_FORMATS, check_table_format
from osrbench.formats import format_help, format_metavar
from osrbench.commands._options import emit, log, tabulate
from osrbench.errors import UsageError, UserError
from osrbench.records import folder_hash

#: The metrics of the matrix (a scorer has no macro-F1 rule).
SCORE_METRICS = ("auroc", "oscr", "fpr95_known")
#: The column of each run's own main score.
OWN = "own"


def scorer_names(reg: Any, text: str | None) -> list[str]:
    """The scorer names of ``--scorer`` (:func:`parse_scorers`), each checked (did-you-mean)."""
    return parse_scorers(reg, text)[0]


def parse_scorers(reg: Any, text: str | None) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``--scorer``: comma-separated scorer names (default: every registered scorer), each optionally
    with parameters set by hand, ``name:key=value``; a further ``key=value`` item sets another
    parameter of the scorer before it (``gen:gamma=0.5,m=10,energy:temperature=10``). Returns the
    names and name -> hand-set parameters, each parsed as the scorer declares it
    (:func:`osrbench.scoring.parse_param`)."""
    from osrbench.scoring import parse_param

    if not text or text == "all":
        return list(reg.scorers), {}
    items = [n.strip() for n in text.split(",") if n.strip()]
    if not items:  # "," would score nothing and exit 0
        raise UsageError(f"--scorer {text!r} names no scorer (valid: all, or {', '.join(reg.scorers)})")
    names: list[str] = []
    hand: dict[str, dict[str, Any]] = {}
    for item in items:
        if ":" in item:
            name, _, setting = item.partition(":")
            name = name.strip()
            reg.scorer(name)
            names.append(name)
        elif "=" in item:
            if not names:
                raise UsageError(f"--scorer: {item!r} sets a parameter before any scorer is named "
                                 "(write name:key=value, e.g. energy:temperature=10)")
            name, setting = names[-1], item
        else:
            reg.scorer(item)
            names.append(item)
            continue
        key, eq, value = (x.strip() for x in setting.partition("="))
        if not eq or not key or not value:
            raise UsageError(f"--scorer: {item!r} is not name:key=value (e.g. energy:temperature=10)")
        mine = hand.setdefault(name, {})
        if key in mine:
            raise UsageError(f"--scorer: parameter {key!r} of scorer {name!r} is set twice")
        mine[key] = parse_param(reg.scorer(name), key, value)
    return list(dict.fromkeys(names)), hand


def cmd_score(args: argparse.Namespace) -> int:
    from osrbench import compare, plugins, records, report, rescore, scoring
    from osrbench.devices import check_device_name
    from osrbench.protocols import split_label

    reg = plugins.get()
    names, hand_set = parse_scorers(reg, args.scorer)
    specs = [reg.scorer(n) for n in names]
    if args.tune and args.no_tune:
        raise UsageError("--tune and --no-tune contradict each other: give one of them (or neither, for the default)")
    tune = True if args.tune else False if args.no_tune else None
    args.format = check_table_format(args.format)
    check_device_name(args.device)
    metric_names = report.parse_metrics(args.metrics, SCORE_METRICS)
    recs = report.select(report.read_runs(args.runs, log), args.dataset, args.protocol, args.method)
    if not recs:
        raise UserError(f"no result records under {args.runs} match the selection")
    recs.sort(key=lambda r: (r.dataset, r.protocol, r.method, r.config_hash, r.split, r.seed))
    # scorer -> records whose metrics are that scorer's (OWN: the run's own main score)
    by_scorer: dict[str, list[Any]] = {OWN: list(recs), **{n: [] for n in names}}
    not_applicable: dict[tuple[Any, str], str] = {}
    # (group, scorer) -> split label -> the parameters the scorer used there
    used: dict[tuple[Any, str], dict[str, str]] = {}
    for rec in recs:
        t0 = time.perf_counter()
        ph = rescore.ensure_posthoc(rec, specs, compute=True, force=args.force, device=args.device,
                                    data_root=args.data_root, tune=tune, hand_set=hand_set)
        scores = records.read_scores(Path(rec.dir), rec)
        for n in names:
            why = ph.not_applicable(n)
            if why:
                not_applicable[(compare.group_key(rec), n)] = why
            else:
                by_scorer[n].append(rec.replace(metrics=ph.metrics(n, scores)))
                label = f"{split_label(rec.dataset, rec.protocol, rec.split)}" + (f"/seed {rec.seed}" if rec.seed else "")
                used.setdefault((compare.group_key(rec), n), {})[label] = scoring.describe_params(ph.info[n])
        log(f"scored {rec.method} {rec.dataset}/{rec.protocol} split {split_label(rec.dataset, rec.protocol, rec.split)} "
            f"seed {rec.seed} "
            f"({time.perf_counter() - t0:.1f} s)")
    emit(render_matrix(recs, by_scorer, names, metric_names, not_applicable, args.format), fit=args.format == "simple")
    print()
    emit(render_params(used, args.format), fit=args.format == "simple")
    return 0


def params_used(recs: list[Any], name: str) -> str:
    """The parameters scorer ``name`` used on each of ``recs`` (read from their ``posthoc.npz``), the
    runs that used each set counted: ``temperature=1 (5 runs)``."""
    from osrbench import records, scoring

    counts: dict[str, int] = {}
    for rec in recs:
        info = records.read_posthoc(Path(rec.dir), rec).info.get(name, {})
        text = scoring.describe_params(info)
        text = "no parameters" if text == "-" else text
        counts[text] = counts.get(text, 0) + 1
    return "; ".join(f"{text} ({n} run{'s' if n != 1 else ''})" for text, n in counts.items())


def render_params(used: dict[tuple[Any, str], dict[str, str]], fmt: str = "simple") -> str:
    """The parameters each scorer used, per method and the splits that used them (tuned values
    differ between splits; hand-set and default ones do not)."""
    rows = []
    for (key, name), per_split in used.items():
        by_value: dict[str, list[str]] = {}
        for split, text in per_split.items():
            by_value.setdefault(text, []).append(split)
        for text, splits in by_value.items():
            where = "all splits" if len(by_value) == 1 else "split " + ", ".join(splits)
            rows.append([key.method, name, text, where])
    return ("parameters each scorer used (default: published; tuned: chosen on held-out known training classes; "
            "hand-set: --scorer name:key=value)\n" + tabulate(rows, ["method", "scorer", "parameters", "where"], fmt))


def render_matrix(recs: list[Any], by_scorer: dict[str, list[Any]], names: list[str], metric_names: list[str],
                  not_applicable: dict[tuple[Any, str], str], fmt: str = "simple") -> str:
    """Per metric, methods x scorers (mean +- sample std over splits, %), then each scorer against
    the run's own score (paired over splits)."""
    from osrbench import compare

    groups = compare.group_records(recs)
    cols = [OWN, *names]
    # (group, scorer, metric) -> its Summary over splits (None: not applicable or no value)
    summary: dict[tuple[Any, str, str], Any] = {}
    for col in cols:
        for key, mine in compare.group_records(by_scorer[col]).items():
            for m in metric_names:
                summary[key, col, m] = compare.summarize(mine, m).get(key.method)
    out = []
    for m in metric_names:
        rows = []
        for key, members in groups.items():
            external = ", external weights" if members[0].external_weights else ""
            row = [f"{key.method} ({key.recipe or 'no recipe'}, {folder_hash(members[0])}{external})",
                   f"{key.dataset}/{key.protocol}"]
            for col in cols:
                sm = summary.get((key, col, m))
                row.append("n/a" if (key, col) in not_applicable else
                           "-" if sm is None else f"{compare._pct(sm.mean)} +- {compare._pct(sm.std)}")
            rows.append(row)
        arrow = "lower is better" if m in compare.LOWER_IS_BETTER else "higher is better"
        out.append(f"{compare.SHORT.get(m, m)} ({arrow}), %, mean +- sample std over splits; "
                   f"'{OWN}' = the run's own score")
        out.append(tabulate(rows, ["method (recipe, run folder hash)", "dataset/protocol", *cols], fmt))
        out.append("")
    rows = []
    for key in groups:
        for n in names:
            if (key, n) in not_applicable:
                rows.append([key.method, n, *(["n/a"] * len(metric_names)), not_applicable[(key, n)]])
                continue
            cells = []
            for m in metric_names:
                sm, own = summary.get((key, n, m)), summary.get((key, OWN, m))
                if sm is None or own is None:
                    cells.append("-")
                    continue
                pr = compare.paired(sm.per_split, own.per_split, m)
                cells.append(f"{compare._signed(pr.mean_diff)} ({pr.wins}/{pr.ties}/{pr.losses}, "
                             f"p {compare._p(pr.p_wilcoxon)})")
            rows.append([key.method, n, *cells, ""])
    out.append("each scorer - the run's own score, paired over splits: mean difference in points "
               "(wins/ties/losses, exact Wilcoxon signed-rank p, two-sided)")
    out.append(tabulate(rows, ["method", "scorer", *(compare.SHORT.get(m, m) for m in metric_names), "note"], fmt))
    return "\n".join(out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="apply post-hoc scorers (energy, ODIN, KNN, OpenMax, ...) to finished runs",
                       epilog="example: osrbench score --runs runs --scorer energy,odin --dataset cifar10")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="results folder to scan (default runs/)")
    p.add_argument("--scorer", help="comma-separated scorer names (default: all; osrbench list --scorers), each "
                   "optionally with parameters set by hand (never tuned): energy:temperature=10,gen:gamma=0.5,m=10")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--protocol", help="only this protocol")
    p.add_argument("--method", action="append", help="only this method (repeatable)")
    p.add_argument("--metrics", help=f"comma-separated metrics (default {','.join(SCORE_METRICS)})")
    p.add_argument("--tune", action="store_true",
                   help="tune every scorer's grid on held-out known training classes (default: only the scorers "
                        "where that beat the published defaults, README 'Tuning post-hoc scorers')")
    p.add_argument("--no-tune", action="store_true", help="use every scorer's published default parameters")
    p.add_argument("--force", action="store_true", help="score again even where posthoc.npz has the scorer")
    p.add_argument("--device", default="cpu", help="device to score on (default cpu)")
    p.add_argument("--data-root", type=Path, help="data folder (default $OSRBENCH_DATA or ~/.cache/osrbench)")
    p.add_argument("--format", default="text", metavar=format_metavar(TABLE_FORMATS),
                   help=format_help(TABLE_FORMATS, "text"))
    verify.add_option(p)
    p.set_defaults(func=cmd_score)
