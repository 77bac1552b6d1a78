"""Score a finished run again from its final checkpoint, set up exactly as the engine set it up.

``rescore --from-checkpoint`` (and rescoring a run whose ``scores.npz`` is missing) rebuilds the
method through :func:`osrbench.session.open_session` with the record's config, loads the
checkpoint's state and evaluates through :func:`osrbench.evaluation.evaluate`: the same code paths
as training, so the scores equal the stored ones bit for bit on the same device.

Post-hoc scorers (``osrbench score``, ``compare --score``) use the same rebuilt run:
:func:`posthoc_from_checkpoint` first checks that it reproduces the stored logits, then applies
the scorers (:mod:`osrbench.scoring`); :func:`ensure_posthoc` keeps their scores in ``posthoc.npz``.

It also holds the library of the ``rescore`` command: :func:`rescore_record` recomputes a run's
metrics with another stored score (softmax: ``msp`` or ``mls``) from its ``scores.npz``, or from its
checkpoint when the score file is missing; :func:`write_rescored` stores them beside the run.
Torch is imported only when a checkpoint is rebuilt, so the command registers without it.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from osrbench import records, results, verify
from osrbench.errors import UserError, one_line
from osrbench.records import ForeignFile, Posthoc, Record, Scores

RESCORE_METRICS = ("auroc", "oscr", "fpr95_known", "aupr_in", "aupr_out")


@contextmanager
def rebuilt(rec: Record, device: str = "cpu", data_root: Path | None = None) -> Iterator[Any]:
    """``rec``'s method restored from its final checkpoint (fitted as the engine fits it), with its
    data, set up exactly as the engine set it up and under the run's thread count; yields
    ``(session, data, torch device)``."""
    from torch import get_num_threads as torch_threads

    from osrbench import checkpoints, devices, plugins, protocols, session

    folder = Path(rec.dir)
    reg = plugins.get()
    try:
        spec = reg.method(rec.method)
        ds = reg.dataset(rec.dataset)
        split = protocols.get_split(ds, rec.protocol, rec.split, root=data_root)
    except UserError as exc:
        raise UserError(f"{folder}: cannot rebuild the run ({one_line(exc)})") from None
    if split.hash != rec.split_hash:
        raise UserError(f"{folder}: split {rec.split} of {rec.protocol} changed since the run (hash)")
    from osrbench.config import ENGINE_DEFAULTS

    # Engine keys added since the run default to the value that reproduces it (score_dtype float64).
    cfg = {**ENGINE_DEFAULTS, **rec.config}
    path = folder / checkpoints.CHECKPOINT
    if not path.exists():
        raise UserError(f"{folder}: no {checkpoints.CHECKPOINT} to rebuild the run from")
    ckpt = checkpoints.read(path)
    rec.identity.check(ckpt.get("identity"), str(path))  # the final checkpoint of exactly this run
    if ckpt.get("epoch") != cfg["epochs"]:
        raise UserError(f"{folder}: checkpoint is at epoch {ckpt.get('epoch')}, not the final {cfg['epochs']}")
    dev = devices.pick_device(device)
    data = session.load_data(ds, split, cfg["image_size"], data_root, **session.test_transform(cfg))
    with devices.cpu_threads(rec.config.get("threads", torch_threads())):  # the run's thread count: the same numbers
        s = session.open_session(spec, cfg, data, num_classes=split.num_known, dataset=ds.name, device=dev,
                                 seed=rec.seed, call=session.guarded(rec.method))
        s.restore(ckpt)
        if s.fits and not ckpt.get("fitted"):  # a checkpoint from before the fit stage: fit as the engine does
            s.fit()
        yield s, data, dev


def scores_from_checkpoint(rec: Record, device: str = "cpu", data_root: Path | None = None) -> Scores:
    """The test-set scores of ``rec``'s run, recomputed from its final checkpoint."""
    from osrbench import evaluation

    with rebuilt(rec, device, data_root) as (s, data, dev):
        return evaluation.evaluate(s.method, data, dev, s.config["normalize"], s.ctx.num_classes, s.precision,
                                   s.call).scores


def check_reproduced(rec: Record, again: Scores, device: Any) -> None:
    """Raise :class:`UserError` unless the rebuilt run gives the stored test logits and scores (bit for
    bit on the run's device; to float32 rounding on another): otherwise its method leaves part of its
    state out of ``state_dict``, and scores computed from it would describe another network."""
    import numpy as np

    from osrbench.devices import device_name

    stored = records.read_scores(Path(rec.dir), rec)
    pairs = [("logits", stored.known_logits, again.known_logits), ("logits", stored.unknown_logits, again.unknown_logits)]
    for name in stored.names:
        if name in again.known:
            pairs += [(f"score {name!r}", stored.known[name], again.known[name]),
                      (f"score {name!r}", stored.unknown[name], again.unknown[name])]
    same_device = rec.device == device_name(device)
    for what, a, b in pairs:
        if a.shape != b.shape:
            raise UserError(f"{rec.dir}: the checkpoint gives {what} of shape {b.shape}, the run stored {a.shape}")
        ok = np.array_equal(a, b) if same_device else np.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(a).max()))
        if not ok:
            raise UserError(
                f"{rec.dir}: the checkpoint does not reproduce the run's stored {what} (max abs difference "
                f"{np.abs(a - b).max():.3g}): {verify.MISMATCH} (or, for a new method, its state_dict() leaves "
                "out part of its state); nothing was written; osrbench verify checks the run")


def posthoc_from_checkpoint(rec: Record, specs: Sequence[Any], device: str = "cpu", data_root: Path | None = None,
                            tune: bool | None = None, hand_set: Mapping[str, Mapping[str, Any]] | None = None
                            ) -> Posthoc:
    """Apply post-hoc scorers (:class:`osrbench.ScoreSpec`) to ``rec``'s run rebuilt from its checkpoint,
    after checking that it reproduces the stored logits (:mod:`osrbench.scoring` says how)."""
    from osrbench import evaluation, plugins, scoring

    reg = plugins.get()

    def plugin_of(name: str) -> dict[str, str]:
        try:
            info = reg.plugin_of("scorer", name)
        except KeyError:
            return {}
        return {"name": info.name, "distribution": info.distribution, "version": info.version}

    with rebuilt(rec, device, data_root) as (s, data, dev):
        again = evaluation.evaluate(s.method, data, dev, s.config["normalize"], s.ctx.num_classes, s.precision, s.call)
        check_reproduced(rec, again.scores, dev)
        out = scoring.score_run(specs, s.method, data, dev, s.config["normalize"], s.precision, rec.seed, tune,
                                plugin_of, hand_set)
    known, unknown, info = {}, {}, {}
    for name, res in out.items():
        if isinstance(res, str):
            info[name] = {"not_applicable": res, "plugin": plugin_of(name)}
        else:
            known[name], unknown[name], info[name] = res.known, res.unknown, res.info
    return Posthoc(known, unknown, info)


def ensure_posthoc(rec: Record, specs: Sequence[Any], compute: bool = True, force: bool = False,
                   device: str = "cpu", data_root: Path | None = None, tune: bool | None = None,
                   hand_set: Mapping[str, Mapping[str, Any]] | None = None) -> Posthoc:
    """``rec``'s post-hoc scores with every scorer of ``specs``: the stored ones, the others computed
    from its checkpoint and stored (``compute``), all of them again with ``force``. ``tune`` and
    ``hand_set`` are :func:`osrbench.scoring.score_run`'s; a stored score computed otherwise (tuned
    or not, other hand-set parameters) is computed again."""
    from osrbench import scoring

    hand_set = hand_set or {}
    folder = Path(rec.dir)
    try:
        have = records.read_posthoc(folder, rec)
    except ForeignFile:
        if not (compute and force):
            raise
        have = Posthoc()
    def asked_otherwise(sp: Any) -> bool:
        stored, hand = have.info[sp.name], json.loads(json.dumps(dict(hand_set.get(sp.name, {}))))
        if "not_applicable" in stored:
            return False
        return (stored.get("hand_set") or {}) != hand or bool(stored.get("tuned")) != scoring.will_tune(sp, tune, hand)

    todo = [sp for sp in specs if force or sp.name not in have.info or asked_otherwise(sp)]
    if not todo:
        return have
    if not compute:
        names = ", ".join(sp.name for sp in todo)
        raise UserError(f"{folder}: no post-hoc score {names} stored; compute it with: osrbench score --scorer {names}")
    merged = have.merged(posthoc_from_checkpoint(rec, todo, device, data_root, tune, hand_set))
    records.write_posthoc(folder, merged, rec)
    return merged


def with_score(recs: Sequence[Record], name: str, compute: bool = True, device: str = "cpu",
               data_root: Path | None = None, log: Any = None) -> list[Record]:
    """``recs`` with their metrics under score ``name``: a registered post-hoc scorer's (computed from
    the checkpoint and stored where missing, when ``compute``; no macro-F1), else a score the runs
    stored themselves (``scores.npz``; macro-F1 keeps each run's own rule)."""
    from osrbench import plugins, protocols

    reg = plugins.get()
    if name not in reg.scorers:
        check_rescorable(recs, name)
        return [rec.replace(metrics=rescore_record(rec, name)["metrics"]) for rec in recs]
    spec = reg.scorer(name)
    out = []
    for rec in recs:
        ph = ensure_posthoc(rec, [spec], compute=compute, device=device, data_root=data_root)
        why = ph.not_applicable(name)
        if why:
            raise UserError(f"scorer {name!r} does not apply to method {rec.method!r}: {why}")
        out.append(rec.replace(metrics=ph.metrics(name, records.read_scores(Path(rec.dir), rec))))
        if log:
            log(f"scored {rec.method} split {protocols.split_label(rec.dataset, rec.protocol, rec.split)} "
                f"seed {rec.seed} with {name}")
    return out


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
        records.verify_metrics(rec, scores)  # the "main" column shows the record's numbers: its scores' own
    else:
        from osrbench import checkpoints

        scores, source = scores_from_checkpoint(rec, device, data_root), checkpoints.CHECKPOINT
        if (folder / records.SCORES).exists():
            from osrbench.devices import pick_device

            check_reproduced(rec, scores, pick_device(device))
    if name not in scores.names:
        raise UserError(f"run {folder} stored no score {name!r} (available: {', '.join(scores.names)})")
    # from the checkpoint: the record's own numbers must be the rebuilt run's (verify.metrics_problem)
    problem = verify.metrics_problem(rec, scores) if source != records.SCORES else None
    return {"metrics": scores.metrics(name, rec.f1_rule), "source": source,
            "main_score": scores.main, "problem": problem}


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
