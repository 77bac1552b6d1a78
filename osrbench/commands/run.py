"""``osrbench run``: train and evaluate one method on one split, print its metrics."""

from __future__ import annotations

import argparse

from osrbench.commands._checks import check_run_args
from osrbench.commands._options import (SPLIT_HELP, add_run_options, log, pct, request_from_args,
                                       resolve_protocol, split_shown, tabulate)
from osrbench.metrics import METRICS

#: Metrics ``run`` prints besides the catalogue's headline ones.
EXTRA_METRICS = ("dtacc",)

#: The rows ``run`` prints, in catalogue order: the headline metrics and :data:`EXTRA_METRICS`.
METRIC_ORDER = tuple(name for name, m in METRICS.items() if m.headline or name in EXTRA_METRICS)


def cmd_run(args: argparse.Namespace) -> int:
    from osrbench import engine, protocols

    protocols.check_seed(args.seed)
    check_run_args(args)
    resolve_protocol(args)
    req = request_from_args(args, args.method, args.split, args.seed, "yes" if args.resume else "no", args.force)
    rec = engine.run(req, log=log).record
    m = rec.metrics
    rows = [[k, pct(m[k])] for k in METRIC_ORDER if k in m]
    print(f"{rec.method} on {rec.dataset} ({rec.protocol} split {split_shown(rec)}, seed {rec.seed}, "
          f"{rec.epochs} epochs, {rec.device}, {rec.wall_time_s['train']:.1f} s)")
    print(tabulate(rows, ["metric", "%"]))
    if rec.unverified:  # kept as finished only because --allow-unverified was given
        print("UNVERIFIED: this record states no scores hash; its metrics were not checked (osrbench verify)")
    print(f"record: {rec.dir}/result.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train and evaluate one method on one split",
                       epilog="example: osrbench run --method arpl --dataset cifar10 --protocol osrci --split 0 "
                              "--seed 1")
    p.add_argument("--method", required=True, help="method name (osrbench list)")
    add_run_options(p)
    p.add_argument("--split", default="0", help=SPLIT_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing result or unfinished run")
    p.set_defaults(func=cmd_run)
