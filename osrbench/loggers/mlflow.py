"""``--log mlflow``: one MLflow run per osrbench run, in a local store or the server you name.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///OUT/mlflow.db`` (or under
``--log-dir``; MLflow 3 refuses new file stores), its artifacts beside it in ``mlflow-artifacts/``.
Experiment: ``MLFLOW_EXPERIMENT_NAME`` or ``osrbench``. Params: the resolved config (nested
values as JSON) and ``config_hash``; tags: the run's identity; metrics per epoch (step = epoch):
every loss term and learning rate; the final metrics as ``eval/NAME``; artifacts: the record
(uploaded as ``record.json``: a second ``result.json`` under ``--out`` would be read as a misplaced
record) and the run folder's plots. A resumed run continues its MLflow run (its id is kept in the
log folder's ``mlflow-run-id``); a failed run ends FAILED with the error as a tag.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from osrbench.loggers.base import PLOT_SUFFIXES, Logger, LoggerSpec, RunInfo

RUN_ID_FILE = "mlflow-run-id"
#: MLflow's limit on a param value's length.
MAX_PARAM = 6000


def tracking_uri(run: RunInfo) -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite store in ``--log-dir`` or ``--out``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{_store_root(run) / 'mlflow.db'}"


def _store_root(run: RunInfo) -> Path:
    return Path(run.log_root).absolute()


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:MAX_PARAM]


class MlflowLogger(Logger):
    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None
        self.run: RunInfo | None = None

    def on_run_start(self, run: RunInfo) -> None:
        from mlflow.tracking import MlflowClient

        for name in ("mlflow.store.db.utils", "alembic"):  # a new store's INFO lines ("Creating initial tables")
            logging.getLogger(name).setLevel(logging.WARNING)
        self.run = run
        uri = tracking_uri(run)
        local = uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI")
        if local:
            _store_root(run).mkdir(parents=True, exist_ok=True)
        # one process at a time creates the store's tables and the experiment (--jobs N workers)
        with _locked(_store_root(run) / ".mlflow.lock" if local else None):
            self.client = MlflowClient(tracking_uri=uri)
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "osrbench")
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                artifacts = (_store_root(run) / "mlflow-artifacts").as_uri() if local else None
                exp_id = self.client.create_experiment(name, artifact_location=artifacts)
            else:
                exp_id = exp.experiment_id
        id_file = Path(run.log_dir) / RUN_ID_FILE
        if run.start_epoch > 0 and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(exp_id, run_name=run.name, tags=run.tags()).info.run_id
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id + "\n")
        have = self.client.get_run(self.run_id).data.params  # params are immutable: a resume adds only new keys
        params = {k: _param(v) for k, v in run.config.items()}
        params["config_hash"] = run.config_hash
        from mlflow.entities import Param

        new = [Param(k, v) for k, v in params.items() if k not in have]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])
        self.client.set_tag(self.run_id, "config_hash", run.config_hash)

    def on_epoch_end(self, epoch: int, losses: Mapping[str, float], lrs: Mapping[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, epoch) for k, v in {**losses, **lrs}.items() if math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_evaluation(self, metrics: Mapping[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        assert self.run is not None
        now = int(time.time() * 1000)
        final = [Metric(f"eval/{k}", float(v), now, self.run.epochs) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=final)

    def on_run_end(self, record: Path, artifacts: Sequence[Path]) -> None:
        self.client.log_text(self.run_id, Path(record).read_text(), "record.json")
        for path in artifacts:
            if path.suffix in PLOT_SUFFIXES:
                self.client.log_artifact(self.run_id, str(path), "plots")
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_failure(self, error: str) -> None:
        if self.run_id is not None:
            self.client.set_tag(self.run_id, "error", error[:5000])
            self.client.set_terminated(self.run_id, "FAILED")


class _locked:
    """An exclusive file lock (``None``: no lock)."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.fh = path, None

    def __enter__(self) -> None:
        if self.path is not None:
            self.fh = open(self.path, "a")
            fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


SPEC = LoggerSpec(name="mlflow", factory=MlflowLogger, requires=("mlflow",), extra="osrbench[mlflow]",
                  help="an MLflow run per osrbench run (MLFLOW_TRACKING_URI, default sqlite:///OUT/mlflow.db)")
