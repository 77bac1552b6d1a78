"""The types a logger plugin uses: :class:`Logger` (the events), :class:`RunInfo`, :class:`LoggerSpec`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from osrbench.errors import UserError


class UnknownLogger(UserError):
    """A ``--log`` name that no plugin registered, or a logger whose extra is not installed."""


@dataclass(frozen=True)
class RunInfo:
    """Who a run is and where it writes, as a logger sees it at its start."""

    method: str
    dataset: str
    protocol: str
    split: int
    seed: int
    recipe: str | None
    config: Mapping[str, Any]
    config_hash: str
    #: The run folder (``result.json``, checkpoints, scores).
    run_dir: Path
    #: Where this run's tracker files go: the run folder, or ``--log-dir`` + the run folder's path under ``--out``.
    log_dir: Path
    #: The folder above every run's tracker files: ``--log-dir``, else ``--out`` (the default MLflow store lives there).
    log_root: Path
    epochs: int
    #: The epoch training starts from: 0, or the resumed checkpoint's epoch (epochs before it were logged before).
    start_epoch: int = 0

    @property
    def name(self) -> str:
        """A readable run name: ``method-dataset-protocol-sSPLIT-seedSEED-HASH8``."""
        return (f"{self.method}-{self.dataset}-{self.protocol}-s{self.split}-seed{self.seed}-"
                f"{self.config_hash[:8]}")

    def tags(self) -> dict[str, str]:
        """The run's identity as string tags (MLflow tags, W&B config keys)."""
        return {"method": self.method, "dataset": self.dataset, "protocol": self.protocol, "split": str(self.split),
                "seed": str(self.seed), "recipe": self.recipe or "", "config_hash": self.config_hash,
                "run_dir": str(self.run_dir)}


class Logger:
    """What a logger implements; every event is optional (the base class ignores it)."""

    def on_run_start(self, run: RunInfo) -> None:
        """The run starts (or resumes at ``run.start_epoch``)."""

    def on_epoch_end(self, epoch: int, losses: Mapping[str, float], lrs: Mapping[str, float]) -> None:
        """Epoch ``epoch`` (0-based) ended: ``losses`` maps ``phase/term`` to its epoch mean (the
        record's history row), ``lrs`` each optimiser's learning rate during the epoch."""

    def on_evaluation(self, metrics: Mapping[str, float]) -> None:
        """The test sets were scored: the record's metrics (fractions, AUROC etc.)."""

    def on_run_end(self, record: Path, artifacts: Sequence[Path]) -> None:
        """The record is written: its path and the run folder's result files (record, scores, plots)."""

    def on_failure(self, error: str) -> None:
        """The run failed (or was interrupted): the exception in one line. No other event follows."""


@dataclass(frozen=True)
class LoggerSpec:
    """A logger a plugin registers (``osrbench_register_loggers``).

    :param name: the ``--log`` name.
    :param factory: makes one :class:`Logger` per run (a class is a factory); called at the run's start.
    :param requires: modules the logger imports; checked (not imported) before any training.
    :param extra: what to install when one is missing, e.g. ``osrbench[mlflow]`` or ``my-logger``.
    :param help: one line for ``--help`` and ``osrbench plugins``.
    """

    name: str
    factory: Callable[[], Logger]
    requires: tuple[str, ...] = ()
    extra: str | None = None
    help: str = ""


#: The run folder's result files a logger uploads: the record, the scores, plots.
RESULT_FILES = ("result.json", "scores.npz", "posthoc.npz")
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".csv")
