"""The one evaluation path: predict every test image, check what the method returned, score it.

:func:`predict` runs :meth:`Method.predict` over an image set in chunks and returns float64 numpy
outputs, checking every chunk against the Prediction contract (shapes, dtypes, no autograd graph,
finite values); :func:`evaluate` does it for a split's knowns and unknowns and computes the metrics
with :meth:`osrbench.records.Scores.metrics`, which is also what rescoring a stored run calls. The engine, rescore,
the conformance suite and the benchmarks all come through here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch

from osrbench.data.stream import to_input
from osrbench.datasets import OpenSetData
from osrbench.devices import Precision
from osrbench.errors import MethodFailed
from osrbench.method import Method, Prediction
from osrbench.records import Scores, main_score_name

if TYPE_CHECKING:
    from osrbench.data.feed import ImageSet
    from osrbench.data.imagefiles import OpenSetFiles

#: Images per ``predict`` call (and per batch of the fit stage and of post-hoc feature passes).
BATCH = 500


def model_inputs(images: torch.Tensor, device: torch.device, normalize: str, precision: Precision) -> torch.Tensor:
    """uint8 images -> the float network inputs ``predict``, ``fit`` and the scorers receive."""
    return precision.inputs(to_input(images.to(device), normalize))


class BadPrediction(MethodFailed):
    """``predict`` or ``f1_rule`` returned something that breaks the method contract."""

    stage = "predict"


@dataclass(frozen=True)
class Outputs:
    """What a method predicted for one image set: float64 logits, main score and named scores."""

    logits: np.ndarray
    score: np.ndarray
    named: Mapping[str, np.ndarray]

    def differs(self, other: "Outputs") -> str | None:
        """The first output that is not bit-identical to ``other``'s, with its largest difference."""
        if set(self.named) != set(other.named):
            return f"named scores {sorted(self.named)} vs {sorted(other.named)}"
        pairs = [("logits", self.logits, other.logits), ("score", self.score, other.score),
                 *((f"score {k!r}", self.named[k], other.named[k]) for k in sorted(self.named))]
        for what, a, b in pairs:
            if a.shape != b.shape or not np.array_equal(a, b):
                diff = np.abs(a - b).max() if a.shape == b.shape else float("nan")
                return f"{what} (max abs difference {diff:.3g})"
        return None


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if torch.is_tensor(t) else type(t).__name__


def check_prediction(out: Any, n: int, k: int) -> None:
    """Raise :class:`BadPrediction` unless ``out`` is a valid Prediction of ``n`` images, ``k`` classes."""
    if not isinstance(out, Prediction):
        raise BadPrediction(f"predict returned {type(out).__name__}, expected an osrbench.Prediction")
    if not torch.is_tensor(out.logits) or out.logits.shape != (n, k):
        raise BadPrediction(f"logits have shape {_shape(out.logits)}, expected ({n}, {k}) = (images, known classes)")
    if not torch.is_tensor(out.score) or out.score.shape != (n,):
        raise BadPrediction(f"score has shape {_shape(out.score)}, expected ({n},)")
    if not isinstance(out.scores, Mapping):
        raise BadPrediction(f"Prediction.scores is {type(out.scores).__name__}, expected a dict of named scores")
    for key, value in out.scores.items():
        if not isinstance(key, str) or not key or key == "score":
            raise BadPrediction(f"named score {key!r}: names must be non-empty str other than 'score'")
        if not torch.is_tensor(value) or value.shape != (n,):
            raise BadPrediction(f"score {key!r} has shape {_shape(value)}, expected ({n},)")
    for what, t in (("logits", out.logits), ("score", out.score), *((f"score {k!r}", v) for k, v in out.scores.items())):
        if not t.is_floating_point():
            raise BadPrediction(f"{what} have dtype {t.dtype}, expected a floating-point tensor")
        if t.requires_grad:
            raise BadPrediction(f"{what} carry an autograd graph; decorate predict with @torch.no_grad()")
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise BadPrediction(f"{what} contain {bad} non-finite value(s)")


def check_f1_rule(rule: Any, names: Sequence[str]) -> tuple[str, float] | None:
    """The method's macro-F1 rule, checked: ``None`` or (a stored score's name, a finite threshold)."""
    if rule is None:
        return None
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)
            and isinstance(rule[1], (int, float)) and not isinstance(rule[1], bool) and math.isfinite(rule[1])):
        raise BadPrediction(f"f1_rule() returned {rule!r}; expected None or (score name, finite threshold)")
    if rule[0] not in names:
        raise BadPrediction(f"f1_rule() names score {rule[0]!r}, which is neither 'score' nor one of "
                            f"Prediction.scores {sorted(n for n in names if n != 'score')}")
    return rule[0], float(rule[1])


def _call(stage: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def predict(method: Method, images: "torch.Tensor | ImageSet", device: torch.device, normalize: str,
            num_classes: int, precision: Precision | None = None, batch: int = BATCH,
            call: Callable[..., Any] = _call) -> Outputs:
    """Logits, score and named scores for every image (uint8 on any device, or the decoded files of
    an :class:`~osrbench.data.feed.ImageSet`, read ``batch`` at a time), float64 on the CPU.

    ``call(stage, fn, *args)`` makes the calls into the method (the engine's records a failure).
    """
    precision = precision or Precision("fp32", device)
    logits, score, named = [], [], {}
    with torch.no_grad():
        for chunk in images.split(batch):
            with precision.autocast():
                out = call("predict(images)", method.predict, model_inputs(chunk, device, normalize, precision))
            check_prediction(out, len(chunk), num_classes)
            logits.append(out.logits.detach().double().cpu())
            score.append(out.score.detach().double().cpu())
            for k, v in out.scores.items():
                named.setdefault(k, []).append(v.detach().double().cpu())
    return Outputs(torch.cat(logits).numpy(), torch.cat(score).numpy(),
                   {k: torch.cat(v).numpy() for k, v in named.items()})


@dataclass(frozen=True)
class Evaluation:
    scores: Scores
    f1_rule: tuple[str, float] | None
    metrics: dict[str, float]


def evaluate(method: Method, data: "OpenSetData | OpenSetFiles", device: torch.device, normalize: str,
             num_classes: int, precision: Precision | None = None, call: Callable[..., Any] = _call) -> Evaluation:
    """Predict a split's test knowns and unknowns, store the scores, compute every metric.

    A file-backed split's test images are its files through the release's test transform
    (``OpenSetFiles.known_x`` / ``unknown_x``), decoded as they are read.
    """
    known = predict(method, data.known_x, device, normalize, num_classes, precision, call=call)
    unknown = predict(method, data.unknown_x, device, normalize, num_classes, precision, call=call)
    k_scores, u_scores = {"score": known.score, **known.named}, {"score": unknown.score, **unknown.named}
    scores = Scores(known.logits, unknown.logits, data.known_y.numpy(), data.unknown_ids.numpy(), k_scores, u_scores,
                    main_score_name(k_scores, u_scores))
    rule = check_f1_rule(call("f1_rule()", method.f1_rule), scores.names)
    return Evaluation(scores, rule, scores.metrics("score", rule))
