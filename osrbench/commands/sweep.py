"""``osrbench sweep``: every missing run of a grid (flags or ``--grid FILE.yaml``), locally or on Ray."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from osrbench import sweep
from osrbench.commands._checks import check_jobs, check_run_args
from osrbench.commands._options import add_pack_option, add_run_options, request_from_args
from osrbench.errors import EXIT_FAILED, UsageError
from osrbench.sweep import EXECUTORS, Event, Stats, SweepError, label

if TYPE_CHECKING:  # the engine imports torch; registering a command must not
    from osrbench import engine


# ---------------------------------------------------------------------------------------- grid

GRID_KEYS = ("methods", "datasets", "protocol", "splits", "seeds", "epochs", "recipe", "set")


def load_grid(path: Path) -> dict[str, Any]:
    """A grid file: a YAML mapping with the keys :data:`GRID_KEYS`, each of its type.

    The text is read within bounds (at most 1 MB, no YAML anchors or aliases, bounded nesting) and
    every key's type is checked here, so a bad file is one line, never a traceback.
    """
    from osrbench.config import safe_yaml

    max_bytes = 1_000_000
    types = {  # key -> (allowed kinds, in words); lists hold names (str) or indices (int)
        "methods": ((str, "list[str]"), "a name or a list of names"),
        "datasets": ((str, "list[str]"), "a name or a list of names"),
        "protocol": ((str,), "one protocol name (auroc, f1, osrci or ssb)"),
        "recipe": ((str,), "one recipe name"),
        "epochs": ((int,), "a positive integer"),
        "splits": ((str, int, "list[int]", "list[str]"), "indices like 0-4, a list of integers or split names, or all"),
        "seeds": ((str, int, "list[int]"), "seeds like 0-2 or a list of integers"),
    }

    def fits(value: Any, kinds: tuple[Any, ...]) -> bool:
        if isinstance(value, bool):
            return False
        for kind in kinds:
            if isinstance(kind, type) and isinstance(value, kind):
                return True
            if isinstance(kind, str) and isinstance(value, list) and value:
                item = str if kind == "list[str]" else int
                if all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                    return True
        return False

    try:
        if Path(path).stat().st_size > max_bytes:
            raise SweepError(f"grid file {path} is larger than {max_bytes:,} bytes; a grid is a short YAML file")
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SweepError(f"cannot read grid file {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise SweepError(f"grid file {path} is not UTF-8 text (a binary file?); a grid is a YAML mapping") from None
    if "\x00" in text:
        raise SweepError(f"grid file {path} holds NUL bytes (a binary file?); a grid is a YAML mapping")
    doc = safe_yaml(text, f"grid file {path}", max_chars=max_bytes, error=SweepError)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SweepError(f"grid file {path} must be a mapping with keys {', '.join(GRID_KEYS)}")
    bad = [k for k in doc if k not in GRID_KEYS]
    if bad:
        raise SweepError(f"grid file {path}: unknown key {str(bad[0])[:40]!r} (valid: {', '.join(GRID_KEYS)})")
    if "set" in doc and not (isinstance(doc["set"], dict) and all(isinstance(k, str) for k in doc["set"])):
        raise SweepError(f"grid file {path}: 'set' must be a mapping of config keys to values")
    for key, (kinds, what) in types.items():
        value = doc.get(key)
        if value is not None and not fits(value, kinds):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise SweepError(f"grid file {path}: {key!r} must be {what}, got {shown}")
    return doc


def _as_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value) and value:
        return list(value)
    raise SweepError(f"grid key {key!r} expects a name or a list of names, got {value!r}")


def _indices(value: Any, upper: int, key: str, spec: Any = None, protocol: str | None = None) -> list[int]:
    """Indices from a flag or grid value; with ``spec`` and ``protocol`` split names (``easy``) too."""
    from osrbench import protocols

    if value is None or value == "all":
        return list(range(upper))
    if isinstance(value, bool):
        raise SweepError(f"grid key {key!r}: cannot read {value!r}")
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, (list, tuple)):
        named = spec is not None and protocols.split_names(spec, protocol) is not None
        if not all((isinstance(v, int) and not isinstance(v, bool)) or (named and isinstance(v, str)) for v in value):
            raise SweepError(f"grid key {key!r} expects integers{' or split names' if named else ''}, got {value!r}")
        value = ",".join(map(str, value))
    if not isinstance(value, str):
        raise SweepError(f"grid key {key!r}: cannot read {value!r}")
    if spec is not None:
        return protocols.parse_splits(value, spec, protocol)
    return protocols.parse_indices(value, upper, key.rstrip("s"))


def _duplicate_key(text: str) -> str | None:
    """A mapping key given twice in a YAML text (at any depth), as ``'set: lr'``; ``None`` when none is.

    YAML loaders keep the last of a repeated key without a word, so ``epochs: 100`` above
    ``epochs: 1`` would silently run one epoch. Only called on text :func:`load_grid` has
    already read within bounds (no aliases, bounded size and depth).
    """
    import yaml

    def walk(node: Any, where: str) -> str | None:
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else repr(key)
                if name in seen:
                    return f"{where}{name}"
                seen.add(name)
                found = walk(value, f"{where}{name}: ")
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for value in node.value:
                found = walk(value, where)
                if found:
                    return found
        return None

    return walk(yaml.compose(text, Loader=yaml.SafeLoader), "")


def grid_requests(args: argparse.Namespace) -> list[engine.RunRequest]:
    """The runs of the grid the flags (and ``--grid FILE``) describe; flags win over the file."""
    from osrbench import plugins, protocols
    from osrbench.config import parse_overrides

    grid = load_grid(args.grid) if args.grid else {}
    twice = _duplicate_key(Path(args.grid).read_text(encoding="utf-8")) if args.grid else None
    if twice:
        raise SweepError(f"grid file {args.grid}: key {twice[:60]!r} is given twice; give each key once")
    methods = args.methods or (_as_list(grid["methods"], "methods") if "methods" in grid else None)
    datasets = args.dataset or (_as_list(grid["datasets"], "datasets") if "datasets" in grid else None)
    if not methods:
        raise SweepError("no methods: pass --methods NAME ... or a grid file with 'methods'")
    if not datasets:
        raise SweepError("no datasets: pass --datasets NAME ... or a grid file with 'datasets'")
    protocol = args.protocol or grid.get("protocol")  # None: each dataset's default
    epochs = args.epochs if args.epochs is not None else grid.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise SweepError(f"--epochs must be positive, got {epochs!r}")
    recipe = args.recipe or grid.get("recipe")
    overrides = {**grid.get("set", {}), **parse_overrides(args.overrides)}
    splits_spec = args.splits if args.splits is not None else grid.get("splits")
    seeds = _indices(args.seeds if args.seeds is not None else grid.get("seeds", 0), 2**31, "seeds")
    reg = plugins.get()
    out = []
    for name in datasets:
        spec = reg.dataset(name)
        proto = protocol or protocols.default_protocol(spec)
        splits = _indices(splits_spec, protocols.num_splits(spec, proto), "splits", spec, proto)
        ns = argparse.Namespace(**{**vars(args), "dataset": name, "protocol": proto, "epochs": epochs,
                                   "recipe": recipe, "overrides": [], "out": args.out or Path("runs")})
        for method in dict.fromkeys(methods):
            for split in splits:
                for seed in seeds:
                    req = request_from_args(ns, method, split, seed, "auto", False)
                    out.append(dataclasses.replace(req, overrides=dict(overrides)))
    return out


# ------------------------------------------------------------------------------------ printing


def _fmt_progress(ev: Event) -> str:
    return f"[{ev.completed}/{ev.to_run} done, {ev.running} running, {ev.failed} failed]"


def _printer(quiet: bool) -> Callable[[Event], None]:
    def on_event(ev: Event) -> None:
        if ev.kind == "start":
            where = f" on {ev.info['host']} (pid {ev.info['pid']})" if "pid" in ev.info else ""
            print(f"{_fmt_progress(ev)} started {ev.label}{where}", flush=True)
        elif ev.kind in ("retry", "resume"):
            print(f"{_fmt_progress(ev)} {ev.label}: {ev.message}", flush=True)
        elif ev.kind == "done":
            rec = ev.info["record"]
            auroc = rec.metrics.get("auroc")
            how = f"{rec.wall_time_s['train']:.1f} s training" if ev.info.get("trained") else "found finished"
            score = f", auroc {100 * auroc:.2f}" if auroc is not None else ""
            print(f"{_fmt_progress(ev)} done {ev.label} ({how}{score})", flush=True)
        elif ev.kind == "fail":
            print(f"{_fmt_progress(ev)} FAILED {ev.label}: {ev.message}", flush=True)
        elif ev.kind == "log" and not quiet:
            print(f"{ev.label}: {ev.message}", file=sys.stderr, flush=True)

    return on_event


def _describe(args: argparse.Namespace, threads: str) -> str:
    if args.executor == "local":
        how = ("this process" if args.jobs == 1 else f"{args.jobs} at once (one pack or worker processes: "
               f"--pack {args.pack})")
        return f"local executor, {how}, {threads} thread(s) per run"
    gpus = "auto" if args.gpus_per_run is None else f"{args.gpus_per_run:g}"
    where = args.address or ("connected cluster" if sweep.import_ray().is_initialized()
                             else "new local instance on 127.0.0.1 only")
    return (f"Ray executor ({where}), {threads} CPU + {gpus} GPU per run, "
            f"{args.max_retries} retries")


def _with_threads(requests: list[engine.RunRequest], threads: int | None) -> list[engine.RunRequest]:
    """``--threads T``: ``--set threads=T`` for every run of the grid (it wins over ``--set`` and the file)."""
    if threads is None:
        return requests
    return [dataclasses.replace(r, overrides={**r.overrides, "threads": threads}) for r in requests]


# ------------------------------------------------------------------------------------- command


def cmd_sweep(args: argparse.Namespace) -> int:
    from osrbench import engine, plugins

    if args.executor == "local":
        given = [f for f, v in (("--address", args.address), ("--gpus-per-run", args.gpus_per_run),
                                ("--max-retries", args.max_retries)) if v is not None]
        if given:
            raise UsageError(f"{given[0]} applies to --executor ray")
    elif args.jobs is not None:
        raise UsageError("--jobs applies to --executor local (Ray places runs by their CPU/GPU requests)")
    elif args.pack == "yes":
        raise UsageError("--pack yes applies to --executor local (a pack is one process)")
    args.jobs = 1 if args.jobs is None else args.jobs  # not `or 1`: --jobs 0 is a mistake, not the default
    args.max_retries = 2 if args.max_retries is None else args.max_retries
    check_jobs(args.jobs)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    check_run_args(args, writes=not args.dry_run)  # --device, --out: before any plan or run
    requests = _with_threads(grid_requests(args), args.threads)
    if args.executor == "ray":
        sweep.import_ray()
    plans = [engine.plan(r) for r in requests]  # every name checked before anything runs
    if args.executor == "local":
        from osrbench.session import default_data_root

        root = args.data_root or default_data_root()
        for ds in dict.fromkeys(p.dataset.name for p in plans):
            problems = plugins.get().dataset(ds).check(Path(root))
            if problems:
                raise UsageError(f"dataset {ds} is not ready in {root}: {problems[0]} (osrbench data download {ds})")
    distinct = {p.dir: p for p in plans}
    done = sum(p.existing_result() is not None for p in distinct.values())
    threads = "/".join(map(str, sorted({p.config["threads"] for p in distinct.values()})))  # the configs' own
    print(f"sweep: {len(distinct)} runs: {done} done already, {len(distinct) - done} to run "
          f"({_describe(args, threads)})", flush=True)
    if args.dry_run:
        for p in distinct.values():
            if p.existing_result() is None:
                print(f"  {label(p.request)} -> {p.dir}")
        return 0
    summary: list[Stats] = []
    printer = _printer(args.quiet)

    def on_event(ev: Event) -> None:
        if ev.kind == "summary":
            summary.append(ev.info["stats"])
        printer(ev)

    records, failures = sweep.execute(
        requests, executor=args.executor, jobs=args.jobs, address=args.address,
        gpus_per_run=args.gpus_per_run, max_retries=args.max_retries, on_event=on_event, pack=args.pack,
    )
    s = summary[0]
    trained = s.completed
    print(f"sweep: {s.total} runs: {s.skipped} done already, {trained} completed, {s.failed} failed "
          f"in {s.wall_s:.1f} s ({s.retries} worker restart(s), {s.resumed} resumed from a checkpoint)")
    if s.images:
        print(f"aggregate throughput: {s.images_per_s:,.0f} training images/s "
              f"({s.images:,} images over {s.wall_s:.1f} s wall time, {args.executor} executor"
              + (f", {args.jobs} jobs" + (", one pack" if s.packed else "") if args.executor == "local" else "")
              + ")")
    if records:
        print(f"records under {Path(args.out or 'runs')}; table: osrbench report --runs {args.out or 'runs'}")
    if failures:
        print(f"{len(failures)} run(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of methods x datasets x splits x seeds, locally or on Ray",
                       description="Run every missing run of a grid (flags or --grid FILE.yaml); finished runs "
                                   "are skipped, interrupted ones resume from their checkpoint.",
                       epilog="example: osrbench sweep --methods softmax arpl --datasets mnist svhn --splits 0-4 "
                              "--seeds 0-2 --jobs 4")
    p.add_argument("--grid", type=Path, metavar="FILE",
                   help=f"YAML grid with keys {', '.join(GRID_KEYS)} (flags override it)")
    p.add_argument("--methods", nargs="+", metavar="METHOD", help="method names")
    add_run_options(p, many_datasets=True)
    p.set_defaults(protocol=None, out=None)  # None = not given: the grid file or the default applies
    p.add_argument("--splits", help="split indices, e.g. 0-4 or 0,2 (default: all splits of the protocol)")
    p.add_argument("--seeds", help="seeds, e.g. 0-2 (default 0)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local (this machine; default) or ray (a Ray cluster; pip install 'osrbench[ray]')")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="local: N runs at once (default 1 = one after another in this process): as one pack on "
                        "a CUDA device, else in N worker processes (--pack)")
    add_pack_option(p)
    p.add_argument("--threads", type=int, metavar="T",
                   help="torch CPU threads per run, and the CPUs a Ray task requests: the same as --set threads=T "
                        "for every run (config key threads, default 1; CPU results depend on it, so it is part "
                        "of the config hash)")
    p.add_argument("--address", help="ray: cluster address: HEAD_IP:6379 or auto (a cluster started with `ray start`; "
                                     "with token authentication export RAY_AUTH_MODE=token) or ray://HOST:10001 "
                                     "(default: start a local instance that listens on 127.0.0.1 only)")
    p.add_argument("--gpus-per-run", type=float, metavar="G",
                   help="ray: GPUs per run, fractional to share a GPU, e.g. 0.25 (default 1 when the cluster has GPUs)")
    p.add_argument("--max-retries", type=int, metavar="N",
                   help="ray: restarts of a run whose worker died; it resumes from its checkpoint (default 2)")
    p.add_argument("--dry-run", action="store_true", help="only list the runs that would be scheduled")
    p.set_defaults(func=cmd_sweep)
