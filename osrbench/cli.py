"""The ``osrbench`` command line. Only this module knows about the terminal.

Errors a user can cause end with one line ``osrbench: error: ...`` and exit code 2; a method that
raises ends its run with exit code 1 (its traceback is in the run folder's ``error.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from osrbench import engine, plugins, protocols
from osrbench.config import parse_overrides
from osrbench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USER, MethodFailed, UsageError, UserError, one_line


def _tabulate(rows: list[list[Any]], headers: Sequence[str], fmt: str = "simple") -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


# ------------------------------------------------------------------------------------- run


def add_run_options(p: argparse.ArgumentParser, many_datasets: bool = False) -> None:
    """The options every training command shares (run, compare, sweep; a sweep takes several datasets)."""
    if many_datasets:
        p.add_argument("--datasets", "--dataset", dest="dataset", nargs="+", metavar="DATASET",
                       help="dataset names (osrbench list)")
    else:
        p.add_argument("--dataset", required=True, help="dataset name (osrbench list)")
    p.add_argument("--protocol", default="auroc", help="split protocol: auroc, f1 or osrci (default auroc)")
    p.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    p.add_argument("--recipe", help="a named recipe of the method (osrbench list)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value); repeatable")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--out", type=Path, default=Path("runs"), help="results folder (default runs/)")
    p.add_argument("--data-root", type=Path, help="data folder (default $OSRBENCH_DATA or ~/.cache/osrbench)")
    p.add_argument("--checkpoint-every", type=int, default=10, metavar="N", help="checkpoint every N epochs")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def request_from_args(
    args: argparse.Namespace, method: str, split: int, seed: int, resume: str = "auto", force: bool = False
) -> engine.RunRequest:
    return engine.RunRequest(
        method=method, dataset=args.dataset, protocol=args.protocol, split=split, seed=seed,
        recipe=args.recipe, epochs=args.epochs, overrides=parse_overrides(args.overrides),
        device=args.device, out=args.out, data_root=args.data_root, resume=resume, force=force,
        checkpoint_every=args.checkpoint_every, progress=not args.quiet, deterministic=args.deterministic,
    )


METRIC_ORDER = ("auroc", "oscr", "acc", "macro_f1", "fpr95_known", "aupr_in", "aupr_out", "dtacc")


def cmd_run(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be positive, got {args.epochs}")
    req = request_from_args(args, args.method, args.split, args.seed, "yes" if args.resume else "no", args.force)
    rec = engine.run(req).record
    m = rec.metrics
    rows = [[k, _pct(m[k])] for k in METRIC_ORDER if k in m]
    print(f"{rec.method} on {rec.dataset} ({rec.protocol} split {rec.split}, seed {rec.seed}, "
          f"{rec.epochs} epochs, {rec.device}, {rec.wall_time_s['train']:.1f} s)")
    print(_tabulate(rows, ["metric", "%"]))
    print(f"record: {rec.dir}/result.json")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from osrbench import compare, report

    reg = plugins.get()
    try:
        spec = reg.dataset(args.dataset)
        n = protocols.num_splits(spec, args.protocol)
        splits = protocols.parse_indices(args.splits, n)
        seeds = protocols.parse_indices(args.seeds, 2**31)
    except (plugins.UnknownName, protocols.SplitError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be positive, got {args.epochs}")
    metric_names = report.parse_metrics(args.metrics, compare.METRICS)
    notes, dropped = [], {}
    if args.unique_splits:
        splits, dropped = compare.unique_splits(spec, args.protocol, splits)
        if dropped:
            notes.append("unique splits only: dropped " + ", ".join(
                f"split {d} (same class sets as split {f})" for d, f in dropped.items()))
    else:
        for line in compare.duplicate_split_warnings(spec, args.protocol, splits):
            print(f"warning: {line}", file=sys.stderr)
            notes.append(f"note: {line}")
    for name in args.methods:  # fail fast on a typo before hours of training
        engine.plan(request_from_args(args, name, splits[0], seeds[0], "auto", False))
    records, failures = report.collect(
        args.methods, splits, seeds, lambda m, k, s: request_from_args(args, m, k, s, "auto", False),
        run=not args.no_run, jobs=args.jobs)
    if records:
        c = compare.build(records, args.methods, metric_names, report.tie_tol_from(args.tie_tol))
        print(compare.render_comparison(c, fmt=args.format, notes=notes))
        if args.plot:
            from osrbench import plots

            written = plots.comparison_plots(c, args.plot, log=lambda m: print(f"warning: {m}", file=sys.stderr))
            print(f"wrote {len(written)} plots to {args.plot}", file=sys.stderr)
        if args.export:
            if failures:
                print("osrbench: not exporting an incomplete comparison", file=sys.stderr)
            else:
                doc = report.write_export(args.export, report.export_doc(c, args.unique_splits, dropped))
                print(f"wrote {args.export} (sha256 {doc['sha256'][:12]})", file=sys.stderr)
    if failures:
        print(f"{len(failures)} run(s) failed or missing:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED
    return 0


# --------------------------------------------------------------------------- list / plugins


def cmd_list(args: argparse.Namespace) -> int:
    from osrbench import registry

    reg = plugins.get()
    if args.options is not None:
        from osrbench import config

        spec = reg.method(args.options)  # an unknown name: one line with a did-you-mean, exit 2
        config.check_options(spec)
        defaults = {**config.ENGINE_DEFAULTS, **spec.defaults}
        options = config.options_of(spec)
        rows = []
        for key, default in defaults.items():
            opt = options.get(key)
            rows.append([key, json.dumps(default, default=repr), type(default).__name__,
                         (opt.allowed() if opt else "") or "-", opt.help if opt else ""])
        print(f"Config keys of {spec.name} (--set KEY=VALUE; engine keys first, then the method's own)")
        print(_tabulate(rows, ["key", "default", "type", "allowed", "help"]))
        return 0
    std = registry.load().standard_recipes
    rows = []
    for name, spec in sorted(reg.methods.items()):
        recipes = ", ".join(f"{r}*" if r == spec.default_recipe else r for r in spec.recipes) or "-"
        rows.append([name, reg.plugin_of("method", name).name, recipes, std.get(name, "-"), spec.description])
    print("Methods (* = default recipe)")
    print(_tabulate(rows, ["method", "plugin", "recipes", "standard", "description"]))
    rows = []
    for name, ds in reg.datasets.items():
        sizes = []
        for proto in registry.load().splits:
            try:
                s = protocols.get_split(ds, proto, 0)
                sizes.append(f"{proto} {protocols.num_splits(ds, proto)}x{len(s.known)}/{len(s.unknown)}")
            except protocols.SplitError:
                pass
        rows.append([name, ds.image_size, ds.augment, "; ".join(sizes), ds.description])
    print("\nDatasets (protocol: splits x known/unknown classes)")
    print(_tabulate(rows, ["dataset", "size", "augment", "protocols", "description"]))
    rows = [[n, e.get("description", "")] for n, e in registry.load().protocols.items()]
    print("\nProtocols")
    print(_tabulate(rows, ["protocol", "description"]))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    reg = plugins.get()
    infos = [i.as_dict() for i in reg.infos.values()]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    rows = [[i["name"], i["distribution"], i["version"], ", ".join(i["methods"]) or "-",
             ", ".join(i["datasets"]) or "-", i["error"] or "ok"] for i in infos]
    print(_tabulate(rows, ["plugin", "distribution", "version", "methods", "datasets", "status"]))
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    reg = plugins.get()
    try:
        ds = reg.dataset(args.dataset)
        n = protocols.num_splits(ds, args.protocol)
        rows = []
        seen: dict[Any, int] = {}
        for i in range(n):
            s = protocols.get_split(ds, args.protocol, i)
            dup = seen.setdefault(s.class_set_key, i)
            rows.append([i, " ".join(map(str, s.known)), " ".join(map(str, s.unknown)), s.hash,
                         "" if dup == i else f"same classes as split {dup}"])
    except (plugins.UnknownName, protocols.SplitError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    print(f"{ds.name}, protocol {args.protocol}: known class ids in label order (id at position i = label i)")
    print(_tabulate(rows, ["split", "known", "unknown", "hash", "note"]))
    return 0


# -------------------------------------------------------------------------------------- data


def cmd_data(args: argparse.Namespace) -> int:
    reg = plugins.get()
    from osrbench.session import default_data_root

    root = args.data_root or default_data_root()
    try:
        names = [args.name] if args.name else list(reg.datasets)
        specs = [reg.dataset(n) for n in names]
    except plugins.UnknownName as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    if args.action == "download":
        from osrbench.datasets import DataNotFound

        for spec in specs:
            if spec.download is None:
                print(f"{spec.name}: nothing to download")
                continue
            try:
                spec.download(Path(root))
            except DataNotFound as exc:
                raise UsageError(str(exc)) from None
            print(f"{spec.name}: downloaded to {root}")
        return 0
    missing = 0
    rows = []
    for spec in specs:
        problems = spec.check(Path(root))
        rows.append([spec.name, "ready" if not problems else "missing", spec.licence])
        missing += bool(problems)
        for line in problems:
            rows.append(["", line, ""])
    print(f"data root: {root}")
    print(_tabulate(rows, ["dataset", "status", "licence"]))
    return EXIT_USER if (missing and args.name) else 0


# -------------------------------------------------------------------------------------- main

#: Modules that add their own commands: each has ``register_cli(subparsers)``.
EXTENSIONS: tuple[str, ...] = ("osrbench.report", "osrbench.sweep", "osrbench.scaffold")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osrbench", description="Open-set recognition benchmark host.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train and evaluate one method on one split")
    p.add_argument("--method", required=True)
    add_run_options(p)
    p.add_argument("--split", type=int, default=0, help="split index (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing result or unfinished run")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="run what is missing and compare methods over splits")
    p.add_argument("methods", nargs="+")
    add_run_options(p)
    p.add_argument("--splits", default="0-4", help="split indices, e.g. 0-4 or 0,2 (default 0-4)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-2 (default 0)")
    p.add_argument("--no-run", action="store_true", help="only read existing results")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train up to N missing runs at once, in separate processes (default 1)")
    p.add_argument("--format", default="simple", help="table format (tabulate): simple, github, latex, ...")
    p.add_argument("--metrics", help="comma-separated metrics (default auroc,oscr,acc,macro_f1,fpr95_known,aupr_in,aupr_out)")
    p.add_argument("--unique-splits", action="store_true",
                   help="keep only the first of splits with the same class sets (the osrci duplicates)")
    p.add_argument("--tie-tol", type=float, default=0.0, metavar="POINTS",
                   help="paired differences up to this many %% points count as ties (default 0: exact)")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write ROC, histogram and per-split bar PNGs to DIR")
    p.add_argument("--export", type=Path, metavar="FILE", help="write the comparison's JSON export bundle")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("list", help="methods, datasets and protocols")
    p.add_argument("--options", metavar="METHOD",
                   help="instead: the config keys of METHOD with default, type, allowed values and help")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", help="installed plugins and their status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("splits", help="the class splits of a dataset under a protocol")
    p.add_argument("dataset")
    p.add_argument("--protocol", default="auroc")
    p.set_defaults(func=cmd_splits)

    p = sub.add_parser("data", help="check or download datasets")
    p.add_argument("action", choices=["check", "download"])
    p.add_argument("name", nargs="?")
    p.add_argument("--data-root", type=Path)
    p.set_defaults(func=cmd_data)

    import importlib

    for module in EXTENSIONS:
        importlib.import_module(module).register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        print(f"osrbench: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    except MethodFailed as exc:
        print(f"osrbench: run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("osrbench: interrupted; the last checkpoint is kept (resume with --resume)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
