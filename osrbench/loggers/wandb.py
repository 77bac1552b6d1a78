"""``--log wandb``: one Weights & Biases run per osrbench run, offline unless a key is set.

Mode: ``WANDB_MODE`` when set, else ``offline`` without ``WANDB_API_KEY`` (``wandb sync
RUN/wandb/offline-run-*`` uploads it later) and ``online`` with it. Project: ``WANDB_PROJECT`` or
``osrbench``. The files go to ``RUN/wandb/`` (or ``--log-dir``). Config: the resolved config and
the run's identity (``config_hash`` among them); history per epoch with an ``epoch`` field as the
x axis (every loss term and learning rate); the final metrics as ``eval/NAME`` in the summary; the
record saved as ``record.json`` (not ``result.json``: a second one under ``--out`` would be read as
a misplaced record) and the run folder's plots. A resumed run continues its W&B run (same id,
kept in the log folder's ``wandb-run-id``).
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from osrbench.loggers.base import PLOT_SUFFIXES, Logger, LoggerSpec, RunInfo

RUN_ID_FILE = "wandb-run-id"


def mode() -> str:
    """``WANDB_MODE``, else offline unless an API key is set."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class WandbLogger(Logger):
    def __init__(self) -> None:
        self.wb: Any = None
        self.run: RunInfo | None = None

    def on_run_start(self, run: RunInfo) -> None:
        import wandb

        self.run = run
        folder = Path(run.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / RUN_ID_FILE
        resume = run.start_epoch > 0 and id_file.is_file()
        run_id = id_file.read_text().strip() if resume else secrets.token_hex(4)
        self.wb = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "osrbench"), name=run.name, id=run_id,
            resume="allow" if resume else None, dir=str(folder), mode=mode(),
            config={**dict(run.config), **run.tags()}, reinit="create_new",  # packs hold several runs at once
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        id_file.write_text(run_id + "\n")
        self.wb.define_metric("epoch")
        self.wb.define_metric("*", step_metric="epoch")  # a resumed run logs by epoch, not by W&B's own step

    def on_epoch_end(self, epoch: int, losses: Mapping[str, float], lrs: Mapping[str, float]) -> None:
        self.wb.log({"epoch": epoch, **{k: float(v) for k, v in {**losses, **lrs}.items()}})

    def on_evaluation(self, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.wb.summary[f"eval/{k}"] = float(v)

    def on_run_end(self, record: Path, artifacts: Sequence[Path]) -> None:
        files = Path(self.wb.dir)
        shutil.copyfile(record, files / "record.json")  # in the run's files/, uploaded with the run
        self.wb.save(str(files / "record.json"), base_path=str(files), policy="now")
        for path in artifacts:
            if path.suffix in PLOT_SUFFIXES:
                shutil.copyfile(path, files / path.name)
                self.wb.save(str(files / path.name), base_path=str(files), policy="now")
        self.wb.finish()

    def on_failure(self, error: str) -> None:
        if self.wb is not None:
            self.wb.summary["error"] = error
            self.wb.finish(exit_code=1)


SPEC = LoggerSpec(name="wandb", factory=WandbLogger, requires=("wandb",), extra="osrbench[wandb]",
                  help="a Weights & Biases run per osrbench run (offline without WANDB_API_KEY)")
