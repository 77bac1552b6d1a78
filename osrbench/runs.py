"""Reading results from Python (a notebook, a script): :func:`read_runs` and :func:`runs_frame`.

    import osrbench

    runs = osrbench.read_runs("runs")          # every finished run under runs/, as Records
    df = runs.to_frame()                       # or osrbench.runs_frame("runs"): a pandas DataFrame
    df.groupby(["dataset", "protocol", "method"])["auroc"].agg(["mean", "std"])

The records are those ``osrbench report`` reads (osrbench.records), checked the same way: a damaged
record, or one whose metrics its stored scores do not give, is skipped with a warning. Reading needs
no torch; the DataFrame needs pandas (``pip install 'osrbench[frames]'``). docs/NOTEBOOK.md shows more.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from osrbench import records
from osrbench.errors import UserError
from osrbench.records import Record

if TYPE_CHECKING:
    import pandas

#: The DataFrame's columns before the metrics (one row per run).
FRAME_COLUMNS = ("method", "dataset", "protocol", "split", "seed", "recipe", "config_hash", "epochs",
                 "external_weights", "plugin", "plugin_version", "device", "created", "dir")


class FramesUnavailable(UserError):
    """``to_frame`` without pandas installed."""


class Runs(list):
    """The :class:`~osrbench.records.Record` of each run (a list), and :meth:`to_frame`."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        super().__init__(records)

    def to_frame(self) -> pandas.DataFrame:
        """One row per run: :data:`FRAME_COLUMNS`, then one column per metric (fractions, not %)."""
        try:
            import pandas
        except ImportError:
            raise FramesUnavailable("to_frame needs pandas, which cannot be imported: "
                                    "pip install 'osrbench[frames]'") from None
        metric_names: list[str] = []
        for rec in self:
            metric_names += [m for m in rec.metrics if m not in metric_names]
        return pandas.DataFrame([row(rec, metric_names) for rec in self],
                                columns=[*FRAME_COLUMNS, *metric_names])


def row(rec: Record, metric_names: Iterable[str]) -> dict[str, Any]:
    """A record as one flat row (the DataFrame's)."""
    return {
        "method": rec.method, "dataset": rec.dataset, "protocol": rec.protocol, "split": rec.split,
        "seed": rec.seed, "recipe": rec.recipe, "config_hash": rec.config_hash, "epochs": rec.config.get("epochs"),
        "external_weights": rec.external_weights is not None, "plugin": rec.plugin.get("distribution"),
        "plugin_version": rec.plugin.get("version"), "device": rec.device, "created": rec.created,
        "dir": None if rec.dir is None else str(rec.dir),
        **{m: rec.metrics.get(m) for m in metric_names},
    }


def read_runs(path: str | Path = "runs", verify: bool = True) -> Runs:
    """Every finished run under ``path`` (the ``--out`` of the runs), in path order; read as
    ``osrbench report`` reads them (osrbench.records.iter_records)."""
    if not Path(path).is_dir():
        raise UserError(f"no results folder {path} (give the --out of your runs)")
    return Runs(records.iter_records(Path(path), lambda msg: warnings.warn(f"skipped {msg}", stacklevel=4),
                                     verify=verify))


def runs_frame(path: str | Path = "runs", verify: bool = True) -> pandas.DataFrame:
    """``read_runs(path).to_frame()``: one row per run, one column per metric."""
    return read_runs(path, verify).to_frame()
