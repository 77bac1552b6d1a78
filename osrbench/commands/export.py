"""``osrbench export``: one JSON bundle of a comparison for a leaderboard, or ``--validate`` one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from osrbench import compare, export, report, results, verify
from osrbench.commands._checks import check_distinct, check_tie_tol
from osrbench.commands._options import resolve_protocol
from osrbench.errors import UserError

if TYPE_CHECKING:  # the engine imports torch; registering a command must not
    from osrbench import engine


def cmd_export(args: argparse.Namespace) -> int:
    if args.validate:
        doc = export.read_bundle(args.validate)
        print(f"{args.validate}: valid osrbench export ({doc['dataset']}/{doc['protocol']}, "
              f"{len(doc['methods'])} methods, splits {compare.split_list(doc['splits'])})")
        return 0
    if not args.methods or not args.dataset:
        raise UserError("export needs methods and --dataset (or --validate FILE)")
    if not args.output:
        raise UserError("export needs --output FILE")
    check_distinct(args.methods)
    results.check_output_file(args.output, "--output")
    check_tie_tol(args.tie_tol)
    from osrbench import config as configmod
    from osrbench import engine

    resolve_protocol(args)
    splits, seeds, dropped = report.resolve_splits(args.dataset, args.protocol, args.splits, args.seeds,
                                                   args.unique_splits)
    overrides = configmod.parse_overrides(args.overrides)

    def make(name: str, split: int, seed: int) -> engine.RunRequest:
        return engine.RunRequest(method=name, dataset=args.dataset, protocol=args.protocol, split=split, seed=seed,
                                 recipe=args.recipe, epochs=args.epochs, overrides=overrides, out=args.out)

    for name in args.methods:
        engine.plan(make(name, splits[0], seeds[0]))
    recs, missing = report.collect(args.methods, splits, seeds, make, run=False)
    if missing:
        raise UserError(f"{len(missing)} result(s) missing, e.g. {missing[0]}; export only reads results "
                        "(pass the same --epochs/--recipe/--set/--out as the compare)")
    c = compare.build(recs, args.methods, report.parse_metrics(args.metrics, compare.METRICS),
                      report.tie_tol_from(args.tie_tol))
    doc = export.write_export(args.output, export.export_doc(c, args.unique_splits, dropped))
    export.validate_export(doc)
    print(f"wrote {args.output} ({doc['dataset']}/{doc['protocol']}, {len(doc['methods'])} methods, "
          f"splits {compare.split_list(doc['splits'])}, sha256 {doc['sha256'][:12]})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="one JSON bundle of a comparison for a leaderboard (or --validate one)",
                       epilog="example: osrbench export softmax arpl --dataset cifar10 --protocol osrci "
                              "--output cifar10.json; osrbench export --validate cifar10.json")
    p.add_argument("methods", nargs="*", metavar="METHOD", help="the compared methods (osrbench list)")
    p.add_argument("--dataset", help="dataset name")
    p.add_argument("--protocol", help="split protocol (default auroc; ssb for a dataset only ssb has)")
    p.add_argument("--splits", help="split indices or names (ssb: easy,hard) (default: all)")
    p.add_argument("--seeds", default="0", help="seeds (default 0)")
    p.add_argument("--unique-splits", action="store_true", help="drop splits that repeat an earlier split's classes")
    p.add_argument("--epochs", type=int, help="the epoch count the runs used")
    p.add_argument("--recipe", help="the recipe the runs used")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="the config overrides the runs used; repeatable")
    p.add_argument("--out", type=Path, default=Path("runs"), help="results folder of the runs (default runs/)")
    p.add_argument("--metrics", help="comma-separated metrics (default: all of compare's)")
    p.add_argument("--tie-tol", type=float, default=0.0, metavar="POINTS", help="tie tolerance in %% points (default 0)")
    p.add_argument("--output", "-o", type=Path, help="bundle file to write")
    p.add_argument("--validate", type=Path, metavar="FILE", help="check a bundle's structure and content hash")
    verify.add_option(p)
    p.set_defaults(func=cmd_export)
