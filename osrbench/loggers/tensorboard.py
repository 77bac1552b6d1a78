"""``--log tensorboard``: event files per run (``tensorboard --logdir OUT`` shows every run).

Scalars per epoch (step = epoch): every loss term (``train/loss``) and learning rate (``lr``);
the final metrics as ``eval/NAME`` at step = epochs; the resolved config as text and as
hyperparameters (the HPARAMS tab) with the final metrics. The files go to ``RUN/tensorboard/``
(or ``--log-dir``). A resumed run writes a new event file in the same folder from its resumed
epoch on, purging what a killed process had logged past its last checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from osrbench.loggers.base import Logger, LoggerSpec, RunInfo

FOLDER = "tensorboard"


def _hparam(value: Any) -> Any:
    """A config value as TensorBoard's hparams take it (numbers, strings, bools; others as JSON)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class TensorBoardLogger(Logger):
    def __init__(self) -> None:
        self.writer: Any = None
        self.run: RunInfo | None = None

    def on_run_start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        folder = Path(run.log_dir) / FOLDER
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=run.start_epoch or None)
        if run.start_epoch == 0:
            text = json.dumps({**run.tags(), "config": dict(run.config)}, indent=2, sort_keys=True, default=str)
            self.writer.add_text("config", "```\n" + text + "\n```", 0)

    def on_epoch_end(self, epoch: int, losses: Mapping[str, float], lrs: Mapping[str, float]) -> None:
        for key, value in {**losses, **lrs}.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def on_evaluation(self, metrics: Mapping[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        assert self.run is not None
        final = {f"eval/{k}": float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(v)}
        for key, value in final.items():
            self.writer.add_scalar(key, value, self.run.epochs)
        params = {k: _hparam(v) for k, v in {**self.run.config, **self.run.tags()}.items()}
        # into this run's own file (SummaryWriter.add_hparams would open a new run folder)
        for summary in hparams(params, final):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def on_run_end(self, record: Path, artifacts: Sequence[Path]) -> None:
        self.writer.close()

    def on_failure(self, error: str) -> None:
        if self.writer is not None:
            self.writer.add_text("failure", error)
            self.writer.close()


SPEC = LoggerSpec(name="tensorboard", factory=TensorBoardLogger, requires=("tensorboard",),
                  extra="osrbench[tensorboard]", help="TensorBoard event files in RUN/tensorboard (or --log-dir)")
