"""Score a finished run again from its final checkpoint, set up exactly as the engine set it up.

``rescore --from-checkpoint`` (and rescoring a run whose ``scores.npz`` is missing) rebuilds the
method through :func:`osrbench.session.open_session` with the record's config, loads the
checkpoint's state and evaluates through :func:`osrbench.evaluation.evaluate`: the same code paths
as training, so the scores equal the stored ones bit for bit on the same device.
"""

from __future__ import annotations

from pathlib import Path

from osrbench import checkpoints, devices, evaluation, plugins, protocols, session
from osrbench.errors import UserError
from osrbench.records import Record, Scores


def scores_from_checkpoint(rec: Record, device: str = "cpu", data_root: Path | None = None) -> Scores:
    """The test-set scores of ``rec``'s run, recomputed from its final checkpoint."""
    folder = Path(rec.dir)
    reg = plugins.get()
    try:
        spec = reg.method(rec.method)
        ds = reg.dataset(rec.dataset)
        split = protocols.get_split(ds, rec.protocol, rec.split)
    except UserError as exc:
        raise UserError(f"{folder}: cannot rebuild the run ({str(exc).strip(chr(39))})") from None
    if split.hash != rec.split_hash:
        raise UserError(f"{folder}: split {rec.split} of {rec.protocol} changed since the run (hash)")
    cfg = dict(rec.config)
    path = folder / checkpoints.CHECKPOINT
    if not path.exists():
        raise UserError(f"{folder}: neither scores.npz nor {checkpoints.CHECKPOINT} to rescore from")
    ckpt = checkpoints.read(path)
    if ckpt.get("epoch") != cfg["epochs"]:
        raise UserError(f"{folder}: checkpoint is at epoch {ckpt.get('epoch')}, not the final {cfg['epochs']}")
    dev = devices.pick_device(device)
    data = session.load_data(ds, split, cfg["image_size"], data_root)
    s = session.open_session(spec, cfg, data, num_classes=split.num_known, dataset=ds.name, device=dev,
                             seed=rec.seed, call=session.guarded(rec.method))
    s.restore(ckpt)
    return evaluation.evaluate(s.method, data, dev, cfg["normalize"], split.num_known, s.precision, s.call).scores
