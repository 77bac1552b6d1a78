"""Checks the commands make on their flags before anything is planned, allocated, trained or written.

Each raises a one-line :class:`~osrbench.errors.UsageError` (or another
:class:`~osrbench.errors.UserError`), so a bad flag costs nothing: ``--format nosuch`` must not
end hours of training with a traceback.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from osrbench.errors import UsageError


def check_run_args(args: argparse.Namespace, writes: bool = True) -> None:
    """What a training command checks before anything is planned, allocated or written: the epoch
    count, the device's name, and (``writes``) that ``--out`` is or can be made a writable folder."""
    from osrbench import results
    from osrbench.devices import check_device_name

    check_epochs(args.epochs)
    check_device_name(args.device)
    if writes:
        results.check_writable_dir(args.out or Path("runs"), "--out")


def check_epochs(epochs: int | None) -> None:
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs must be positive, got {epochs}")


def check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")


def check_distinct(names: list[str], what: str = "method") -> None:
    """Each name once: ``compare softmax softmax`` would pair a method with itself (all ties, p = 1)."""
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise UsageError(f"{what} {twice!r} is given twice; name each {what} once")


#: The ``--format`` names of the commands that print plain tables (score, rescore).
TABLE_FORMATS = ("text", "md", "latex", "html")


def check_table_format(fmt: str) -> str:
    """The tabulate style of ``--format`` ``fmt`` (a name of osrbench.formats, an alias, or another
    tabulate style); a one-line usage error listing the formats otherwise."""
    from osrbench import formats

    return formats.parse_format(fmt, TABLE_FORMATS).style


def check_tie_tol(points: float | None) -> None:
    """``--tie-tol``: a finite number of percentage points in [0, 100]."""
    if points is not None and not (math.isfinite(points) and 0 <= points <= 100):
        raise UsageError(f"--tie-tol must be a number of % points in [0, 100], got {points}")


def check_stats_args(args: argparse.Namespace) -> None:
    """compare's statistics flags (``--resamples``, ``--level``, ``--ci-seed``, ``--resolve``), before
    anything is trained: each within the bounds that give a meaningful answer in bounded time."""
    from osrbench import protocols, stats

    if not (math.isfinite(args.level) and 0 < args.level < 1):
        raise UsageError(f"--level must be a confidence level in (0, 1), e.g. 0.95, got {args.level}")
    if args.resamples > stats.MAX_RESAMPLES:
        raise UsageError(f"--resamples {args.resamples:,} is more than {stats.MAX_RESAMPLES:,}: beyond that the "
                         "intervals change by less than the printed digits while the time grows without bound")
    least = stats.min_resamples(args.level)
    if args.resamples < least:
        raise UsageError(f"--resamples {args.resamples:,} is too few for --level {args.level}: a percentile interval "
                         f"needs at least one resample in each {100 * (1 - args.level) / 2:g} % tail, so at least "
                         f"{least:,}" + (f" (more than the {stats.MAX_RESAMPLES:,} allowed: choose a lower --level)"
                                         if least > stats.MAX_RESAMPLES else ""))
    if not 0 <= args.ci_seed <= protocols.MAX_SEED:
        raise UsageError(f"--ci-seed {args.ci_seed} out of range (valid: 0-{protocols.MAX_SEED})")
    if args.resolve is not None and not (math.isfinite(args.resolve) and 0 < args.resolve <= 100):
        raise UsageError(f"--resolve must be a difference in % points in (0, 100], got {args.resolve}")
