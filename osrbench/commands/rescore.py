"""``osrbench rescore``: a run's metrics again with another stored score, without retraining."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from osrbench import compare, report, rescore, verify
from osrbench.commands._checks import TABLE_FORMATS, check_table_format
from osrbench.formats import format_help, format_metavar
from osrbench.commands._options import emit, log, tabulate
from osrbench.compare import GroupKey
from osrbench.errors import UserError
from osrbench.records import Record, folder_hash


def cmd_rescore(args: argparse.Namespace) -> int:
    name = args.score
    rescore.check_score_name(name)
    args.format = check_table_format(args.format)
    if args.from_checkpoint:
        from osrbench.devices import check_device_name

        check_device_name(args.device)
    metric_names = report.parse_metrics(args.metrics, rescore.RESCORE_METRICS)
    # each record is verified against the scores it is rescored from (rescore_record), so one whose
    # scores.npz is missing can still be rebuilt from its checkpoint
    recs = report.select(report.read_runs(args.runs, log, verify=False), args.dataset, args.protocol, args.method)
    if not recs:
        raise UserError(f"no result records under {args.runs} match the selection")
    rescore.check_rescorable(recs, name)
    rows, done = [], []
    for rec in sorted(recs, key=lambda r: (r.dataset, r.protocol, r.method, r.config_hash, r.split, r.seed)):
        res = rescore.rescore_record(rec, name, args.from_checkpoint, args.device, args.data_root)
        done.append((rec, res))
        m_old, m_new = rec.metrics, res["metrics"]
        row = [rec.method, f"{rec.dataset}/{rec.protocol}", rec.split, rec.seed, res["main_score"]]
        for m in metric_names:
            row.append(f"{compare._pct(m_old.get(m))} -> {compare._pct(m_new.get(m))}")
        row.append(res["source"])
        rows.append(row)
        if args.write:
            rescore.write_rescored(rec, name, res)
    heads = ["method", "dataset/protocol", "split", "seed", "main score",
             *(f"{compare.SHORT.get(m, m)} main -> {name}" for m in metric_names), "from"]
    print(f"rescored with score {name!r}: values in %, the run's main score -> {name!r}; "
          "macro-F1 keeps each method's own rule")
    emit(tabulate(rows, heads, args.format), fit=args.format == "simple")
    # Summary per config group: mean +- std over splits, both scores, and the paired difference.
    groups: dict[GroupKey, list[tuple[Record, dict[str, Any]]]] = {}
    for rec, res in done:
        groups.setdefault(compare.group_key(rec), []).append((rec, res))
    rows = []
    for key, items in groups.items():
        old = [r for r, _ in items]
        new = [r.replace(metrics=res["metrics"]) for r, res in items]
        row = [f"{key.method} ({key.recipe or 'no recipe'}, {folder_hash(old[0])})", f"{key.dataset}/{key.protocol}",
               len({r.split for r in old})]
        for m in metric_names:
            a = compare.summarize(old, m).get(key.method)
            b = compare.summarize(new, m).get(key.method)
            if a is None or b is None:
                row.append("-")
                continue
            p = compare.paired(b.per_split, a.per_split, m)
            row.append(f"{compare._pct(a.mean)} -> {compare._pct(b.mean)} ({compare._signed(p.mean_diff)})")
        rows.append(row)
    print()
    print("mean over splits, main score -> " + repr(name) + " (paired mean difference)")
    emit(tabulate(rows, ["method (recipe, run folder hash)", "dataset/protocol", "splits",
                         *(compare.SHORT.get(m, m) for m in metric_names)], args.format), fit=args.format == "simple")
    if args.write:
        print(f"wrote metrics_{name}.json beside {len(done)} record(s)")
    # --from-checkpoint: a record whose own numbers are not its checkpoint's is a finding (exit 1)
    wrong = [(rec, res["problem"]) for rec, res in done if res.get("problem")]
    for rec, problem in wrong:
        log(f"error: {rec.dir}: the record is not what its checkpoint gives ({problem}): {verify.MISMATCH}")
    return 1 if wrong else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rescore", help="recompute metrics with another stored score, without retraining",
                       epilog="example: osrbench rescore --runs runs --score mls --dataset cifar10 --write")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="results folder to scan (default runs/)")
    p.add_argument("--score", required=True, help="stored score name, e.g. msp or mls (score = the run's main score)")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--protocol", help="only this protocol")
    p.add_argument("--method", action="append", help="only this method (repeatable)")
    p.add_argument("--metrics", help=f"comma-separated metrics to show (default {','.join(rescore.RESCORE_METRICS)})")
    p.add_argument("--write", action="store_true", help="write metrics_<score>.json beside each record")
    p.add_argument("--from-checkpoint", action="store_true",
                   help="score the test sets again from checkpoint.pt (default: only when scores.npz is missing); "
                        "exit 1 when a record's stored metrics are not the ones its checkpoint gives")
    p.add_argument("--device", default="cpu", help="device for --from-checkpoint (default cpu)")
    p.add_argument("--data-root", type=Path, help="data folder for --from-checkpoint")
    p.add_argument("--format", default="text", metavar=format_metavar(TABLE_FORMATS),
                   help=format_help(TABLE_FORMATS, "text"))
    verify.add_option(p)
    p.set_defaults(func=cmd_rescore)
