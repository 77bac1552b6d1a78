"""Check ``engine``: one osrbench.engine.run of the method on the toy dataset writes a finite record."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

from osrbench import checkpoints
from osrbench.errors import MethodFailed, UserError
from osrbench.testing.runs import _fail, _Session
from osrbench.testing.toy import TOY_BATCH, TOY_DATASET, toy_dataset_spec


def _check_engine(s: _Session) -> str:
    from osrbench import engine

    s.need("engine", "spec", s.spec)
    reg = copy.copy(s.reg)
    reg.datasets = {**s.reg.datasets, TOY_DATASET: toy_dataset_spec()}
    reg.origin = {**s.reg.origin, f"dataset:{TOY_DATASET}": "osrbench"}
    with tempfile.TemporaryDirectory(prefix="osrbench-conformance-") as tmp:
        req = engine.RunRequest(
            method=s.name, dataset=TOY_DATASET, epochs=1, overrides={"batch_size": TOY_BATCH, **s.overrides},
            device=str(s.device), out=Path(tmp) / "runs", data_root=Path(tmp), progress=False, checkpoint_every=1,
        )
        try:
            rec = engine.run(req, registry=reg, log=lambda msg: None).record
        except UserError as exc:
            raise _fail("engine", f"engine.run refused the run: {exc}") from exc
        except MethodFailed as exc:
            raise _fail("engine", f"engine.run failed: {exc}") from exc
        try:
            checkpoints.read(rec.dir / checkpoints.CHECKPOINT)
        except checkpoints.CorruptCheckpoint as exc:
            raise _fail("engine", f"the run's checkpoint cannot be read back for --resume: {exc}") from exc
    bad = {k: v for k, v in rec.metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise _fail("engine", f"the record's metrics are not finite: {bad}")
    return f"auroc {rec.metrics['auroc']:.3f}, acc {rec.metrics['acc']:.3f} (K={len(rec.known_classes)})"
