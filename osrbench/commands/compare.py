"""``osrbench compare``: run what is missing, then the comparison table of methods over splits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from osrbench import compare, formats, stats, verify
from osrbench.commands._checks import (check_distinct, check_jobs, check_run_args, check_stats_args,
                                       check_tie_tol)
from osrbench.commands._options import (add_pack_option, add_plot_format_option, add_run_options, add_std_option,
                                       emit, log, request_from_args, resolve_protocol)
from osrbench.errors import EXIT_FAILED, UsageError

#: compare's ``--format`` names (osrbench.formats).
FORMATS = ("text", "md", "latex", "html", "json", "csv")


def cmd_compare(args: argparse.Namespace) -> int:
    fmt = formats.parse_format(args.format, FORMATS)
    if args.dataset is not None:
        return _compare(args, fmt)
    # no --dataset: every (dataset, protocol) where finished runs of the named methods exist
    check_distinct(args.methods)
    groups = found_comparisons(args)
    code = 0
    several_json = fmt.name == "json" and len(groups) > 1  # one document: a JSON list of the comparisons
    if several_json:
        print("[")
    for n, (dataset, protocol, splits) in enumerate(groups):
        one = argparse.Namespace(**vars(args))
        one.dataset, one.protocol, one.splits, one.no_run = dataset, protocol, ",".join(map(str, splits)), True
        if len(groups) > 1:  # one figure folder and one bundle per comparison
            tag = f"{dataset}_{protocol}"
            one.plot = args.plot / tag if args.plot else None
            one.export = args.export.with_name(f"{args.export.stem}_{tag}{args.export.suffix}") if args.export else None
        one.csv_header = n == 0  # csv: one table, its header once
        if n and fmt.style is not None:
            print()
        elif n and several_json:
            print(",")
        code = max(code, _compare(one, fmt))
    if several_json:
        print("]")
    return code


def found_comparisons(args: argparse.Namespace) -> list[tuple[str, str, list[int]]]:
    """``(dataset, protocol, splits)`` of every comparison the finished runs under ``--out`` allow:
    each named method has a result of the config the run options give (``--epochs``, ``--recipe``,
    ``--set``) on every split listed, for every seed of ``--seeds``. A one-line usage error naming
    ``--dataset`` when there is none."""
    from osrbench import engine, protocols, report

    seeds = set(protocols.parse_indices(args.seeds, protocols.MAX_SEED + 1, "seed"))
    recs = report.select(report.read_runs(args.out, log) if Path(args.out).is_dir() else [],
                         protocol=args.protocol, methods=args.methods)
    hashes: dict[tuple[str, str, str], str] = {}  # (method, dataset, protocol) -> the config hash asked for
    have: dict[tuple[str, str], dict[str, dict[int, set[int]]]] = {}  # (dataset, protocol) -> method -> split -> seeds
    for rec in sorted(recs, key=lambda r: (r.dataset, r.protocol, r.method, r.split, r.seed)):
        key = (rec.method, rec.dataset, rec.protocol)
        if key not in hashes:
            one = argparse.Namespace(**{**vars(args), "dataset": rec.dataset, "protocol": rec.protocol})
            hashes[key] = engine.plan(request_from_args(one, rec.method, rec.split, rec.seed)).config_hash
        if rec.config_hash == hashes[key] and rec.seed in seeds:
            have.setdefault((rec.dataset, rec.protocol), {}).setdefault(rec.method, {}).setdefault(
                rec.split, set()).add(rec.seed)
    found = []
    for (dataset, protocol), by_method in sorted(have.items()):
        if set(by_method) != set(args.methods):
            continue
        splits = sorted(set.intersection(*({k for k, s in per.items() if s == seeds} for per in by_method.values())))
        if splits:
            found.append((dataset, protocol, splits))
    if not found:
        raise UsageError(f"no finished runs of {' and '.join(args.methods)} on a common dataset under {args.out} "
                         "(with these --epochs/--recipe/--set/--seeds); give --dataset to train and compare them")
    return found


def _compare(args: argparse.Namespace, fmt: formats.Format) -> int:
    """compare on one dataset (``args.dataset``), training what is missing unless ``--no-run``."""
    from osrbench import compare, engine, export, plugins, protocols, report

    check_distinct(args.methods)
    reg = plugins.get()
    spec = reg.dataset(args.dataset)
    resolve_protocol(args)
    splits = protocols.parse_splits(args.splits, spec, args.protocol)
    seeds = protocols.parse_indices(args.seeds, protocols.MAX_SEED + 1, "seed")
    # every flag checked before anything is trained: a bad --format must not waste hours of training
    check_run_args(args, writes=not args.no_run)
    check_jobs(args.jobs)
    check_tie_tol(args.tie_tol)
    check_stats_args(args)
    if args.plot:
        from osrbench import plots

        plots.check_plot_dir(args.plot)
    if args.export:
        from osrbench import results

        results.check_output_file(args.export, "--export")
    metric_names = report.parse_metrics(args.metrics, compare.METRICS)
    if args.score and args.score not in reg.scorers:  # else a score the runs stored: known once they are read
        from osrbench.rescore import check_score_name

        check_score_name(args.score)
    notes, dropped = [], {}
    if args.unique_splits:
        splits, dropped = compare.unique_splits(spec, args.protocol, splits, args.data_root)
        if dropped:
            notes.append("unique splits only: dropped " + ", ".join(
                f"split {d} (same class sets as split {f})" for d, f in dropped.items()))
    else:
        for line in compare.duplicate_split_warnings(spec, args.protocol, splits, args.data_root):
            log(f"warning: {line}")
            notes.append(f"note: {line}")
    for name in args.methods:  # fail fast on a typo before hours of training
        engine.plan(request_from_args(args, name, splits[0], seeds[0], "auto", False))
    records, failures = report.collect(
        args.methods, splits, seeds, lambda m, k, s: request_from_args(args, m, k, s, "auto", False),
        run=not args.no_run, jobs=args.jobs, log=log, pack=args.pack)
    if records and args.score:
        from osrbench import rescore

        records = rescore.with_score(records, args.score, device=args.device,
                                     data_root=args.data_root)
        what = ("post-hoc scorer" if args.score in reg.scorers else "stored score")
        notes.append(f"note: every run scored with {what} {args.score!r}"
                     + (" (no macro-F1: a scorer has no threshold rule)" if args.score in reg.scorers else ""))
        if args.score in reg.scorers:
            from osrbench.commands.score import params_used

            notes.append(f"note: parameters of {args.score!r}: {params_used(records, args.score)}")
    if records:
        installed = _installed_plugins(reg, args.methods)
        c = compare.build(records, args.methods, metric_names, report.tie_tol_from(args.tie_tol), installed,
                          ddof=compare.STD_CHOICES[args.std], score=args.score)
        for m, key in c.groups.items():  # one plugin per method, but maybe not the installed one
            if m in installed and key.plugin != installed[m]:
                line = (f"records of {m!r} were made by plugin {key.plugin_label}, the installed one is "
                        f"{compare.plugin_label(*installed[m])}")
                log(f"warning: {line}")
                notes.append(f"note: {line}")
        unverified = verify.unverified_note(records)
        notes = [*([unverified] if unverified else []), *notes]
        if fmt.style is not None:
            emit(compare.render_comparison(c, fmt=fmt.style, notes=notes), fit=fmt.style == "simple")
        sections, breakdown = _statistics(c, args, fmt.style)
        if fmt.name == "json":  # the comparison and its statistics as the export bundle holds them
            print(json.dumps(export.export_doc(c, args.unique_splits, dropped, sections), indent=2))
        elif fmt.name == "csv":
            print(comparison_csv(c, header=getattr(args, "csv_header", True)), end="")
        if args.plot:
            from osrbench import analysis, plots

            written = plots.comparison_plots(c, args.plot, log=lambda m: log(f"warning: {m}"), fmt=args.plot_format)
            breakdown = breakdown or analysis.class_breakdown(c)
            written.append(plots.plot_class_heatmap(breakdown, args.plot / f"classes_auroc.{args.plot_format}",
                                                    f"AUROC per class, {c.dataset}/{c.protocol}"))
            log(f"wrote {len(written)} plots to {args.plot}")
        if args.export:
            if failures:
                log("osrbench: not exporting an incomplete comparison")
            else:
                doc = export.write_export(args.export, export.export_doc(c, args.unique_splits, dropped, sections))
                log(f"wrote {args.export} (sha256 {doc['sha256'][:12]})")
    if failures:
        log(f"{len(failures)} run(s) failed or missing:")
        for line in failures:
            log(f"  {line}")
        return EXIT_FAILED
    return 0


def comparison_csv(c: compare.Comparison, header: bool = True) -> str:
    """One CSV row per metric, method and split: the split's value and the method's mean and std
    over splits, as fractions (a long table: comparisons of other splits append to it; ``header``:
    with the header row first)."""
    import csv
    import io

    from osrbench import protocols

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(["dataset", "protocol", "metric", "method", "split", "value", "mean", "std"])
    for metric in c.metrics:
        for m, s in c.summaries[metric].items():
            for k in c.splits:
                writer.writerow([c.dataset, c.protocol, metric, m, protocols.split_label(c.dataset, c.protocol, k),
                                 repr(s.per_split[k]) if k in s.per_split else "", repr(s.mean), repr(s.std)])
    return buf.getvalue()


def _statistics(c: compare.Comparison, args: argparse.Namespace, style: str | None):
    """Print the statistics sections the flags ask for as tables of ``style`` (``None``: print
    nothing); returns their export sections and the per-class breakdown (``None`` when not asked for)."""
    from osrbench import analysis

    def show(text: str = "") -> None:
        if style is not None:  # json and csv: the sections go into the document instead
            emit(text, fit=style == "simple")

    out: dict = {}
    breakdown = None
    resolve = None if args.resolve is None else args.resolve / 100.0
    if len(c.seeds) > 1 or args.resolve is not None:
        show()
        show(analysis.render_variance(c, style, resolve))
        out["variance"] = analysis.variance_doc(c, resolve)
    if args.ci:
        iv = analysis.intervals(c, args.resamples, args.ci_seed, args.level,
                                progress=not args.quiet and style is not None)
        show()
        show(analysis.render_intervals(c, iv, style))
        out["intervals"] = iv.as_dict()
    if args.by_class:
        breakdown = analysis.class_breakdown(c)
        show()
        show(analysis.render_classes(breakdown, style))
        out["classes"] = breakdown.as_dict()
    return out, breakdown


def _installed_plugins(reg, methods) -> dict[str, tuple[str, str]]:
    """method -> (distribution, version) of the plugin that registers it now."""
    out = {}
    for m in methods:
        try:
            info = reg.plugin_of("method", m)
        except KeyError:
            continue
        out[m] = (info.distribution, info.version)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run what is missing and compare methods over splits",
                       epilog="examples: osrbench compare softmax arpl --dataset cifar10 --protocol osrci "
                              "--splits 0-4; "
                              "osrbench compare dias arpl (no --dataset: every dataset and protocol where finished "
                              "runs of both are under --out)")
    p.add_argument("methods", nargs="+", metavar="METHOD", help="the methods to compare (osrbench list)")
    add_run_options(p, dataset_help="left out: every dataset and protocol where finished runs of the methods "
                                    "exist under --out, nothing trained")
    p.add_argument("--splits", help="split indices, e.g. 0-4 or 0,2, or names (ssb: easy,hard) (default: all)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-2 (default 0)")
    p.add_argument("--no-run", action="store_true", help="only read existing results")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train up to N missing runs at once (default 1): as one pack on a CUDA device, "
                        "else in separate processes (--pack)")
    add_pack_option(p)
    p.add_argument("--format", default="text", metavar=formats.format_metavar(FORMATS),
                   help=formats.format_help(FORMATS, "text", "; json: the comparison as the export bundle holds "
                                            "it, csv: one row per metric, method and split"))
    p.add_argument("--metrics", help="comma-separated metrics (default auroc,oscr,acc,macro_f1,fpr95_known,aupr_in,aupr_out)")
    p.add_argument("--unique-splits", action="store_true",
                   help="keep only the first of splits with the same class sets (the osrci duplicates)")
    p.add_argument("--tie-tol", type=float, default=0.0, metavar="POINTS",
                   help="paired differences up to this many %% points count as ties (default 0: exact)")
    p.add_argument("--score", metavar="NAME",
                   help="compare under one score: a post-hoc scorer (osrbench list --scorers; computed where "
                        "missing) or a score the runs stored (e.g. mls)")
    add_std_option(p)
    p.add_argument("--ci", action="store_true",
                   help="confidence intervals: per split a stratified bootstrap over the test images, over splits "
                        "a t-interval and a bootstrap of the mean, for every method and every pair A - B")
    p.add_argument("--resamples", type=int, default=stats.RESAMPLES, metavar="N",
                   help=f"bootstrap resamples for --ci (default {stats.RESAMPLES})")
    p.add_argument("--ci-seed", type=int, default=0, metavar="N", help="seed of the --ci bootstrap (default 0)")
    p.add_argument("--level", type=float, default=stats.LEVEL, help=f"--ci confidence level (default {stats.LEVEL})")
    p.add_argument("--by-class", action="store_true",
                   help="AUROC of the knowns against each unknown class and of each known class against the unknowns")
    p.add_argument("--resolve", type=float, metavar="POINTS",
                   help="seeds planner: the difference (in %% points) to resolve (default: each pair's observed "
                        "difference; the planner shows with several seeds, or with this flag)")
    p.add_argument("--plot", type=Path, metavar="DIR",
                   help="write ROC, histogram, per-split bar and per-class AUROC heat-map figures to DIR (the ROC "
                        "points and histogram bins as CSV beside them)")
    add_plot_format_option(p)
    p.add_argument("--export", type=Path, metavar="FILE", help="write the comparison's JSON export bundle")
    p.set_defaults(func=cmd_compare)
