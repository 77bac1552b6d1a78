"""``osrbench report``: the paper table of every result record under a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from osrbench import compare, formats, report, verify
from osrbench.commands._options import add_plot_format_option, add_std_option, log
from osrbench.errors import UsageError, UserError


def cmd_report(args: argparse.Namespace) -> int:
    from osrbench import results

    args.format = formats.parse_format(args.format, (*report.FORMATS, "html")).name
    # the page has room for every metric compare shows; the paper tables keep the paper's four
    metrics = report.parse_metrics(args.metrics, compare.METRICS if args.format == "html" else report.REPORT_METRICS)
    if args.output:
        results.check_output_file(args.output, "--output")
    if args.ranks and args.format not in ("md", "json", "html"):
        raise UsageError(f"--ranks goes with --format md or json (html always shows its ranks), not {args.format}")
    if args.plot:
        from osrbench import plots

        plots.check_plot_dir(args.plot)
    recs = report.select(report.read_runs(args.runs, log), args.dataset, args.protocol, args.method)
    if not recs:
        raise UserError(f"no result records under {args.runs} match the selection")
    cells = report.build_report(recs, metrics, args.unique_splits, compare.STD_CHOICES[args.std])
    for line in report.plugin_warnings(cells):
        log(f"warning: {line}")
    if args.format == "html":  # one self-contained page: osrbench.site reads the cells, the report does not know it
        from osrbench.site import report_page

        text = report_page.render(cells, metrics, str(args.runs), log)
    else:
        text = report.render_report(cells, metrics, args.format, str(args.runs), args.layout)
    unverified = verify.unverified_note(recs)
    if unverified:  # marked in the output itself (csv: a comment row would break its readers)
        log(unverified)
        if args.format == "md":
            text = f"**{unverified}**\n\n{text}"
        elif args.format == "latex":
            text = f"% {unverified}\n{text}"
        elif args.format == "json":
            import json

            text = json.dumps({**json.loads(text), "unverified": unverified}, indent=2)
    if args.ranks or args.plot:
        from osrbench import analysis

        ranks = [r for r in (analysis.rank_tests(cells, m) for m in metrics) if r is not None]
        if not ranks:
            log("warning: no ranks: they need at least 2 methods on at least 2 (dataset, protocol) blocks")
        if args.ranks and args.format == "md":
            text = text.rstrip("\n") + "\n" + analysis.render_ranks(ranks) + "\n"
        elif args.ranks and args.format == "json":  # html: the page always has its ranks
            import json

            doc = report.report_doc(cells, metrics, str(args.runs))
            text = json.dumps({**doc, "ranks": [r.as_dict() for r in ranks]}, indent=2)
        if args.plot:
            from osrbench import plots

            for r in ranks:
                path = plots.plot_cd(r, args.plot / f"cd_{r.metric}.{args.plot_format}",
                                     f"{compare.SHORT.get(r.metric, r.metric)}: mean rank over {r.result.n} "
                                     "datasets/protocols")
                log(f"wrote {path}")
    if args.output:
        data = (text if text.endswith("\n") else text + "\n").encode()
        results.atomic_write(args.output, lambda fh: fh.write(data))
        log(f"wrote {args.output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="paper table of every result record: methods x datasets, mean +- std",
                       epilog="example: osrbench report --runs runs --format html --output report.html")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="results folder to scan (default runs/)")
    p.add_argument("--format", default="md", metavar=formats.format_metavar((*report.FORMATS, "html")),
                   help=formats.format_help((*report.FORMATS, "html"), "md",
                                            "; latex is booktabs, html one self-contained page: sortable tables, "
                                            "paired statistics, ranks, figures and every run's provenance"))
    p.add_argument("--metrics", help=f"comma-separated metrics (default {','.join(report.REPORT_METRICS)}; html: "
                                     f"{','.join(compare.METRICS)})")
    p.add_argument("--layout", choices=("metric", "wide"), default="metric",
                   help="md/latex: one table per metric (default) or one table with metrics under each dataset")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--protocol", help="only this protocol")
    p.add_argument("--method", action="append", help="only this method (repeatable)")
    p.add_argument("--unique-splits", action="store_true", help="keep only the first of splits with the same class sets")
    add_std_option(p)
    p.add_argument("--ranks", action="store_true",
                   help="md/json: Friedman test, mean ranks and Nemenyi critical difference of the methods over the "
                        "report's (dataset, protocol) blocks, per metric")
    p.add_argument("--plot", type=Path, metavar="DIR",
                   help="write a critical-difference diagram per metric (cd_<metric>.png) to DIR")
    add_plot_format_option(p)
    p.add_argument("--output", "-o", type=Path, help="write to FILE instead of stdout")
    verify.add_option(p)
    p.set_defaults(func=cmd_report)
