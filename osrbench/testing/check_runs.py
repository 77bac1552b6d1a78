"""Checks ``train``, ``predict``, ``sign``, ``determinism`` and ``state``: the method trains, predicts,
ranks knowns above unknowns, repeats itself and resumes exactly."""

from __future__ import annotations

import io
import json
from typing import Mapping

import numpy as np
import torch

from osrbench import evaluation, metrics, session
from osrbench.evaluation import Outputs
from osrbench.testing.contracts import MIN_AUROC
from osrbench.testing.runs import _calling, _calls, _contract, _exc_line, _fail, _Session
from osrbench.testing.toy import TOY_CLASSES, TOY_EPOCHS


def _check_train(s: _Session) -> str:
    s.need("train", "config", s.config)
    sess = s.part("train", "session")
    return f"{TOY_EPOCHS} epochs x {len(sess.phases)} phase(s) x {len(sess.stream)} steps on {TOY_CLASSES} classes"


def _check_predict(s: _Session) -> str:
    sess: session.Session = s.part("predict", "session")
    method = sess.method
    s.part("predict", "preds0")
    whole = s.part("predict", "preds1")[0]
    known = s.data().known_x
    half = len(known) // 2
    parts = [s.predict("predict", sess, known[:half]), s.predict("predict", sess, known[half:])]
    for what, x, y in (("logits", whole.logits, np.concatenate([p.logits for p in parts])),
                       ("score", whole.score, np.concatenate([p.score for p in parts]))):
        if not np.allclose(x, y, rtol=1e-4, atol=1e-4):
            raise _fail("predict", f"{what} of an image depend on the other images of its batch (max abs difference "
                                   f"{np.abs(x - y).max():.3g}); networks must be in eval mode in predict")
    with _contract("predict"):
        rule = evaluation.check_f1_rule(_calls("predict")("f1_rule()", method.f1_rule), ["score", *whole.named])
    with _calling("predict", "adaptations()"):
        adaptations = method.adaptations()
    if not isinstance(adaptations, Mapping):
        raise _fail("predict", f"adaptations() returned {type(adaptations).__name__}, expected a dict")
    try:
        json.dumps(adaptations, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _fail("predict", f"adaptations() is not JSON-serialisable (it goes into result.json): {exc}") from None
    return f"logits {tuple(whole.logits.shape)}, scores {['score', *whole.named]}, f1_rule {rule}"


def _check_sign(s: _Session) -> str:
    known, unknown = s.part("sign", "preds1")
    acc = metrics.accuracy(s.data().known_y.numpy(), known.logits.argmax(1))
    # Every named score is stored and rescored by name, so each keeps the main score's convention.
    exempt = dict(getattr(s.spec().factory(), "sign_check_exempt", {}) or {})
    stray = sorted(set(exempt) - set(known.named))
    if stray:
        raise _fail("sign", f"sign_check_exempt names {stray}, which predict does not return as named scores "
                            f"(it returns {sorted(known.named)})")
    values = {"score": metrics.auroc(known.score, unknown.score),
              **{k: metrics.auroc(known.named[k], unknown.named[k]) for k in known.named if k not in exempt}}
    for name, value in values.items():
        if value < MIN_AUROC:
            what = "the main score" if name == "score" else f"the named score {name!r}"
            flipped = " (below 0.5: is the score's sign reversed? higher must mean more likely known)" if value < 0.5 else ""
            raise _fail("sign", f"AUROC of {what} on the separable toy problem is {value:.3f} < {MIN_AUROC}{flipped}; "
                                f"closed-set accuracy {acc:.3f}" + _chance_hint(s, acc))
    named = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k != "score")
    skipped = "; ".join(f"{k}: {why}" for k, why in exempt.items())
    return (f"AUROC {values['score']:.3f}" + (f" (named: {named})" if named else "") + f", accuracy {acc:.3f}"
            + (f"; not sign-checked, as the method declares: {skipped}" if skipped else ""))


def _chance_hint(s: _Session, acc: float) -> str:
    """When the toy run did not learn the known classes (accuracy near chance, 1/K), the likelier cause
    than a reversed score: a learning rate too high (or too low) for the toy's dozen steps."""
    if acc >= 1.5 / TOY_CLASSES:
        return ""
    lr = s.config().get("lr")
    try_lr = f"--set lr={lr / 10:g}" if isinstance(lr, (int, float)) and lr > 0 else "--set with its learning-rate key"
    return (f", near chance (1/{TOY_CLASSES}): the method did not learn the toy in {TOY_EPOCHS} epochs; its learning "
            f"rate may not suit the toy's few steps: try {try_lr} (python -m osrbench.testing NAME --set ..., or "
            "overrides= of check_method)")


def _check_determinism(s: _Session) -> str:
    preds0 = s.part("determinism", "preds0")

    def run_b() -> tuple[Outputs, Outputs]:
        sess = s.fresh("determinism")
        s.epoch("determinism", sess, 0)
        return s.predict_all("determinism", sess)

    b = s._once("run_b", run_b)
    for part, x, y in (("known", preds0[0], b[0]), ("unknown", preds0[1], b[1])):
        diff = x.differs(y)
        if diff:
            raise _fail("determinism", f"two runs with seed {s.seed} gave different {diff} on the {part} images; draw "
                                       "randomness only from the global RNG and ctx.generator, never reseed")
    return f"seed {s.seed}: identical after one epoch"


def _check_state(s: _Session) -> str:
    snapshot = s.part("state", "snapshot")
    preds0, preds1 = s.part("state", "preds0"), s.part("state", "preds1")

    try:
        state = torch.load(io.BytesIO(snapshot["state"]), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise _fail("state", "state_dict() is refused by torch.load(weights_only=True), which the engine uses to "
                             f"resume: keep to tensors, numbers, str, lists and dicts ({_exc_line(exc)})") from exc
    sess = s.fresh("state")
    sess.restore({"state": state, "rng": snapshot["rng"]})
    restored = s.predict_all("state", sess)
    for part, x, y in (("known", preds0[0], restored[0]), ("unknown", preds0[1], restored[1])):
        diff = x.differs(y)
        if diff:
            raise _fail("state", f"a fresh setup + load_state_dict predicts different {diff} on the {part} images "
                                 "than the method whose state_dict it loaded")
    s.epoch("state", sess, 1)
    resumed = s.predict_all("state", sess)
    for part, x, y in (("known", preds1[0], resumed[0]), ("unknown", preds1[1], resumed[1])):
        diff = x.differs(y)
        if diff:
            raise _fail("state", f"resuming from state_dict and training one more epoch gave different {diff} on the "
                                 f"{part} images than the uninterrupted run: state_dict misses something training "
                                 "uses (optimiser state, schedule, epoch counter, ...)")
    return f"{len(snapshot['state']) / 1e6:.1f} MB state; exact predictions and exact resume"
