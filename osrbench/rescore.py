"""Score a finished run again from its final checkpoint, set up exactly as the engine set it up.

``rescore --from-checkpoint`` (and rescoring a run whose ``scores.npz`` is missing) rebuilds the
method through :func:`osrbench.session.open_session` with the record's config, loads the
checkpoint's state and evaluates through :func:`osrbench.evaluation.evaluate`: the same code paths
as training, so the scores equal the stored ones bit for bit on the same device.

It also holds the library of the ``rescore`` command: :func:`rescore_record` recomputes a run's
metrics with another stored score (softmax: ``msp`` or ``mls``) from its ``scores.npz``, or from its
checkpoint when the score file is missing; :func:`write_rescored` stores them beside the run.
Torch is imported only when a checkpoint is rebuilt, so the command registers without it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from osrbench import records, results
from osrbench.errors import UserError, one_line
from osrbench.records import Record, Scores

RESCORE_METRICS = ("auroc", "oscr", "fpr95_known", "aupr_in", "aupr_out")


def scores_from_checkpoint(rec: Record, device: str = "cpu", data_root: Path | None = None) -> Scores:
    """The test-set scores of ``rec``'s run, recomputed from its final checkpoint."""
    from torch import get_num_threads as torch_threads

    from osrbench import checkpoints, devices, evaluation, plugins, protocols, session

    folder = Path(rec.dir)
    reg = plugins.get()
    try:
        spec = reg.method(rec.method)
        ds = reg.dataset(rec.dataset)
        split = protocols.get_split(ds, rec.protocol, rec.split)
    except UserError as exc:
        raise UserError(f"{folder}: cannot rebuild the run ({one_line(exc)})") from None
    if split.hash != rec.split_hash:
        raise UserError(f"{folder}: split {rec.split} of {rec.protocol} changed since the run (hash)")
    cfg = dict(rec.config)
    path = folder / checkpoints.CHECKPOINT
    if not path.exists():
        raise UserError(f"{folder}: neither scores.npz nor {checkpoints.CHECKPOINT} to rescore from")
    ckpt = checkpoints.read(path)
    rec.identity.check(ckpt.get("identity"), str(path))  # the final checkpoint of exactly this run
    if ckpt.get("epoch") != cfg["epochs"]:
        raise UserError(f"{folder}: checkpoint is at epoch {ckpt.get('epoch')}, not the final {cfg['epochs']}")
    dev = devices.pick_device(device)
    data = session.load_data(ds, split, cfg["image_size"], data_root)
    with devices.cpu_threads(cfg.get("threads", torch_threads())):  # the run's thread count: the same numbers
        s = session.open_session(spec, cfg, data, num_classes=split.num_known, dataset=ds.name, device=dev,
                                 seed=rec.seed, call=session.guarded(rec.method))
        s.restore(ckpt)
        return evaluation.evaluate(s.method, data, dev, cfg["normalize"], split.num_known, s.precision,
                                   s.call).scores


def available_scores(rec: Record) -> list[str]:
    """Score names a run stored: ``score`` (its main score) and the named ones."""
    return list(rec.scores)


def rescore_record(rec: Record, name: str, from_checkpoint: bool = False, device: str = "cpu",
                   data_root: Path | None = None) -> dict[str, Any]:
    """``{"metrics", "source", "main_score"}`` of one record rescored with score ``name``.

    The scores come from the run's ``scores.npz``, or from its final checkpoint (``from_checkpoint``
    or when the score file is missing); the metrics from :meth:`osrbench.records.Scores.metrics`,
    macro-F1 keeping the run's own rule.
    """
    folder = Path(rec.dir)
    if (folder / records.SCORES).exists() and not from_checkpoint:
        scores, source = records.read_scores(folder, rec), records.SCORES
    else:
        from osrbench import checkpoints

        scores, source = scores_from_checkpoint(rec, device, data_root), checkpoints.CHECKPOINT
    if name not in scores.names:
        raise UserError(f"run {folder} stored no score {name!r} (available: {', '.join(scores.names)})")
    return {"metrics": scores.metrics(name, rec.f1_rule), "source": source,
            "main_score": scores.main}


def check_score_name(name: str) -> None:
    """Raise :class:`UserError` unless ``name`` can be a score name (it becomes part of a file name)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UserError(f"score name {name!r} may only contain letters, digits, '.', '_' and '-'")


def check_rescorable(recs: Sequence[Record], name: str) -> None:
    """Raise :class:`UserError` unless every one of ``recs`` stored the score ``name``."""
    lacking = [r for r in recs if name not in available_scores(r)]
    if lacking:
        avail = sorted({n for r in recs for n in available_scores(r)})
        if len(lacking) == len(recs):
            raise UserError(f"no selected run stored a score {name!r} (available: {', '.join(avail)})")
        r = lacking[0]
        raise UserError(
            f"{len(lacking)} of {len(recs)} selected runs stored no score {name!r}, e.g. {r.method} in {r.dir} "
            f"(it has: {', '.join(available_scores(r))}); narrow the selection with --method/--dataset")


def write_rescored(rec: Record, name: str, res: Mapping[str, Any]) -> Path:
    """Write ``metrics_<name>.json`` beside ``rec`` (the result of :func:`rescore_record`); returns its path."""
    doc = {"score": name, "main_score": res["main_score"], "metrics": res["metrics"],
           "f1_rule": rec.f1_rule, "source": res["source"],
           "record": {k: getattr(rec, k) for k in ("method", "dataset", "protocol", "split", "seed",
                                                   "config_hash", "split_hash", "sha256")},
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = Path(rec.dir) / f"metrics_{name}.json"
    results.write_json(path, doc)
    return path
