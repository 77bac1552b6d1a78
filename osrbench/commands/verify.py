"""``osrbench verify``: rebuild each run from its checkpoint and check its stored scores and metrics.

A record's hashes prove that its files are intact and belong together, not where its numbers came
from: anyone can edit the scores, recompute the metrics and both hashes. This command is what
proves them: each run's network is rebuilt from its final checkpoint, its test predictions are made
again and must equal the stored scores (bit for bit on the run's device), and the record's metrics
must be those of the rebuilt predictions. One line per run; exit 1 when any run is not verified.
Each verified run's folder gets a stamp (verified.json: the sha256 of its record, scores and
checkpoint, the osrbench version, device and date), which export and report count while those
files are unchanged; a run that fails loses its stamp. A stamp is not a signature.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import osrbench
from osrbench.commands._options import log
from osrbench.errors import UserError, one_line

#: The exit code of a run that is not what its checkpoint gives (a finding, not a usage error).
EXIT_MISMATCH = 1


def verify_run(rec: Any, device: str, data_root: Path | None) -> str | None:
    """Why ``rec`` is not what its checkpoint gives (``None``: it is, in every stored number)."""
    from osrbench import records, rescore, verify
    from osrbench.devices import pick_device

    stored = None
    if (Path(rec.dir) / records.SCORES).exists():
        try:
            stored = records.read_scores(Path(rec.dir), rec)
        except UserError as exc:
            return f"its scores file is not usable ({one_line(exc)})"
        problem = verify.split_problem(rec, stored)
        if problem:
            return problem
    try:
        again = rescore.scores_from_checkpoint(rec, device, data_root)
    except UserError as exc:
        return f"it cannot be rebuilt from its checkpoint ({one_line(exc)})"
    if stored is not None:
        try:
            rescore.check_reproduced(rec, again, pick_device(device))
        except UserError:
            return f"the checkpoint does not reproduce the stored scores: {verify.MISMATCH}"
    problem = verify.metrics_problem(rec, again)
    if problem:
        return f"the record's numbers are not the checkpoint's ({problem}): {verify.MISMATCH}"
    return None


def _stamp_problem(change: Any, *args: Any) -> str | None:
    """Write or remove a run's stamp; why that failed (a read-only folder: the run is not stamped)."""
    try:
        change(*args)
    except (OSError, UserError) as exc:
        return f"its stamp could not be changed ({one_line(exc)})"
    return None


def cmd_verify(args: argparse.Namespace) -> int:
    from osrbench import report, verify
    from osrbench.devices import device_name, pick_device
    from osrbench.devices import check_device_name

    check_device_name(args.device)
    skipped: list[str] = []

    def on_skip(msg: str) -> None:  # a damaged or misplaced record is not verified either
        skipped.append(msg)
        log(f"NOT VERIFIED {msg}")

    recs = report.select(report.read_runs(args.runs, on_skip, verify=False), args.dataset, args.protocol,
                         args.method)
    if not recs and not skipped:
        raise UserError(f"no result records under {args.runs} match the selection")
    bad = len(skipped)
    for rec in sorted(recs, key=lambda r: (r.dataset, r.protocol, r.method, r.config_hash, r.split, r.seed)):
        problem = verify_run(rec, args.device, args.data_root)
        if problem:
            bad += 1
            print(f"NOT VERIFIED {rec.dir}: {problem}")
            stamp = _stamp_problem(verify.remove_stamp, rec.dir)
        else:
            stamp = _stamp_problem(verify.write_stamp, rec.dir, device_name(pick_device(args.device)),
                                   osrbench.__version__)
            print(f"verified     {rec.dir}: the checkpoint gives its stored scores and metrics")
        if stamp:
            log(f"warning: {rec.dir}: {stamp}")
    print(f"{len(recs) + len(skipped) - bad} of {len(recs) + len(skipped)} run(s) verified from their checkpoints")
    return EXIT_MISMATCH if bad else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="rebuild runs from their checkpoints and check their stored scores and metrics",
                       description=__doc__.split("\n\n", 1)[1].strip(),
                       epilog="example: osrbench verify runs --dataset cifar10 --device cuda")
    p.add_argument("runs", type=Path, help="results folder to scan (every run under it)")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--protocol", help="only this protocol")
    p.add_argument("--method", action="append", help="only this method (repeatable)")
    p.add_argument("--device", default="cpu", help="device to rebuild on (default cpu)")
    p.add_argument("--data-root", type=Path, help="data folder")
    p.set_defaults(func=cmd_verify)
