"""OpenMax (Bendale & Boult, CVPR 2016) as a method: the softmax baseline's training, a fit stage, the OpenMax score.

Training is :class:`~osrbench_softmax.softmax.Softmax`'s, inherited unchanged (network, optimiser,
schedule, recipes, the same random draws in the same order): ``openmax`` and ``softmax`` on the same
split and seed train bit for bit the same network. After the last epoch the fit stage runs the
network (eval mode) over the training images in file order, unaugmented, and fits OpenMax on those
logits in float64 with :func:`osrbench.scorers.openmax.fit_openmax` (OpenOOD v1.5's
``openmax_postprocessor.py``: class means of the correctly classified training logits, a libMR
``FitHigh`` Weibull on each class's ``tail_size`` largest distances). ``predict`` recalibrates the
logits with :func:`osrbench.scorers.openmax.openmax_probs`.

Scores (higher = more likely known): the main ``score`` = ``openmax`` = -P(unknown) of the K+1
OpenMax probabilities; ``msp`` and ``mls`` as softmax computes them; ``openmax_known`` = the largest
known-class OpenMax probability where it is the largest of the K+1 (OpenOOD's argmax, which takes
the first of equal values, so a tie with the unknown's goes to the known class), else 0. The
macro-F1 rule thresholds ``openmax_known`` at ``weibull_threshold`` (0.9, OpenOOD's), i.e. OpenMax's
own decision rule: accept iff the argmax is a known class and its probability reaches the threshold.

Before the fit stage has run (a fresh method; the engine always fits before it evaluates) the model
is absent and ``predict`` scores as an OpenMax with every W-score 0: no logit is recalibrated, the
unknown's activation is 0, so the K+1 probabilities are ``softmax([z, 0])``. It is the limit of the
OpenMax formula with no evidence of outliers, finite and ranked sensibly; ``adaptations()`` then
says ``openmax_fitted: false``.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from osrbench.method import Context, MethodSpec, Option, Prediction
from osrbench.scorers.openmax import DISTANCES, OPENOOD_OPENMAX, OpenMaxModel, fit_openmax, openmax_probs
from osrbench.scoring import NotApplicable
from osrbench.training import logit_scores

from osrbench_softmax.softmax import DEFAULTS as SOFTMAX_DEFAULTS
from osrbench_softmax.softmax import OPTIONS as SOFTMAX_OPTIONS
from osrbench_softmax.softmax import RECIPES as SOFTMAX_RECIPES
from osrbench_softmax.softmax import Softmax

#: OpenOOD v1.5's ``OpenMax.__init__``: ``self.weibull_threshold = 0.9`` (its prediction rule).
OPENOOD_WEIBULL_THRESHOLD = 0.9

_P = OPENOOD_OPENMAX["params"]

#: Softmax's keys except ``score`` (the main score here is always OpenMax's; ``msp`` and ``mls`` are
#: stored as named scores, so ``osrbench rescore`` switches to them), plus OpenMax's.
DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in SOFTMAX_DEFAULTS.items() if k != "score"},
    "tail_size": _P["tail_size"],
    "alpha": _P["alpha"],
    "distance": _P["distance"],
    "eu_weight": _P["eu_weight"],
    "weibull_threshold": OPENOOD_WEIBULL_THRESHOLD,
}

OPTIONS: dict[str, Option] = {
    **{k: v for k, v in SOFTMAX_OPTIONS.items() if k != "score"},
    "tail_size": Option(minimum=2, help="OpenMax: largest distances per class the Weibull is fitted to (OpenOOD: 20)"),
    "alpha": Option(minimum=1, help="OpenMax: top-alpha classes whose logits are recalibrated (OpenOOD: 3; at most K)"),
    "distance": Option(choices=DISTANCES,
                       help="OpenMax: distance of a logit vector to a class mean (OpenOOD: euclidean)"),
    "eu_weight": Option(minimum=0, help="OpenMax: weight of the euclidean part of the eucos distance (OpenOOD: 0.5)"),
    "weibull_threshold": Option(minimum=0, maximum=1, help="OpenMax decision rule (macro-F1): a known class's "
                                                           "probability above it (OpenOOD: 0.9)"),
}

#: Softmax's recipes without their ``score`` entries (the MLS recipe scores softmax runs by MLS).
RECIPES = {
    name: {scope: {k: v for k, v in entries.items() if k != "score"} for scope, entries in scopes.items()}
    for name, scopes in SOFTMAX_RECIPES.items()
}


class OpenMaxFitFailed(ValueError):
    """The training logits do not allow an OpenMax fit (a class without a correct image, a degenerate tail)."""


def model_state(model: OpenMaxModel) -> dict[str, Any]:
    """The model as plain tensors, numbers and str (``torch.load(weights_only=True)`` refuses dataclasses)."""
    return {"means": model.means, "shape": model.shape, "scale": model.scale, "small_score": model.small_score,
            "translate_amount": float(model.translate_amount), "distance": str(model.distance),
            "eu_weight": float(model.eu_weight)}


def model_from_state(state: dict[str, Any]) -> OpenMaxModel:
    as64 = (lambda t: torch.as_tensor(t, dtype=torch.float64, device="cpu"))
    return OpenMaxModel(as64(state["means"]), as64(state["shape"]), as64(state["scale"]), as64(state["small_score"]),
                        float(state["translate_amount"]), str(state["distance"]), float(state["eu_weight"]))


def unfitted_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, K+1) OpenMax probabilities with every W-score 0: ``softmax([z, 0])``, the unknown's last."""
    z = logits.double()
    exps = torch.cat([z, z.new_zeros(len(z), 1)], 1)
    e = torch.exp(exps - exps.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def known_if_accepted(probs: torch.Tensor) -> torch.Tensor:
    """(N,) the largest known-class probability where the argmax of the K+1 is a known class, else 0.

    ``np.argmax`` (OpenOOD) takes the first of equal maxima, and the unknown's is last: a known
    class equal to the unknown's probability wins.
    """
    known = probs[:, :-1].max(1).values
    return torch.where(known >= probs[:, -1], known, torch.zeros_like(known))


class OpenMax(Softmax):
    """The softmax baseline's training (inherited), then OpenMax fitted on the training logits."""

    def setup(self, ctx: Context) -> None:
        self.model: OpenMaxModel | None = None  # set by fit or load_state_dict
        super().setup(ctx)

    def check_config(self, ctx: Context) -> None:
        cfg = self.cfg
        if cfg["distance"] not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {cfg['distance']!r}")
        if cfg["alpha"] > ctx.num_classes:
            raise ValueError(f"alpha={cfg['alpha']} exceeds the {ctx.num_classes} known classes: OpenMax recalibrates "
                             f"the top-alpha logits (set --set alpha=N with N <= {ctx.num_classes})")

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.net.eval()
        logits, labels = [], []
        for x, y in batches:
            logits.append(self.net(x).double().cpu())
            labels.append(y.cpu())
        try:
            self.model = fit_openmax(torch.cat(logits), torch.cat(labels), self.num_classes, self.cfg["tail_size"],
                                     self.cfg["distance"], self.cfg["eu_weight"])
        except NotApplicable as exc:  # a failure of this run's fit stage, not a usage error
            raise OpenMaxFitFailed(f"{exc}; OpenMax needs at least two distinct tail distances of correctly "
                                   "classified training images per class (train longer)") from None

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, K+1) OpenMax probabilities of logits, float64 on the CPU (where the model lives)."""
        z = logits.detach().double().cpu()
        return unfitted_probs(z) if self.model is None else openmax_probs(z, self.model, self.cfg["alpha"])

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        self.net.eval()
        logits = self.net(images)
        p = self.probs(logits)
        score = -p[:, -1]
        scores = {"openmax": score, **logit_scores(logits, dtype=self.cfg["score_dtype"]),
                  "openmax_known": known_if_accepted(p)}
        return Prediction(logits=logits, score=score, scores=scores)

    def f1_rule(self) -> tuple[str, float]:
        # OpenMax's own rule (OpenOOD: argmax of the K+1 is known and >= weibull_threshold); f1 rules are strict (>)
        return "openmax_known", float(self.cfg["weibull_threshold"])

    def adaptations(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **super().adaptations(),  # the backbone's
            "openmax": OPENOOD_OPENMAX["adaptation"],
            "openmax_f1_rule": "macro-F1 accepts an image iff its largest known OpenMax probability is the largest of "
                               "the K+1 and > weibull_threshold (strict; OpenOOD: >=); the accepted image's class is "
                               "the argmax of the logits (the host's closed-set prediction), which OpenMax's "
                               "recalibration may reorder; OpenOOD labels a rejected image nc - 1 (its last known "
                               "class), read here as unknown",
        }
        if self.model is None:
            out["openmax_fitted"] = False  # predict ran before the fit stage: W-scores 0, softmax([z, 0])
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.model is not None:
            state["openmax"] = model_state(self.model)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.model = model_from_state(state["openmax"]) if "openmax" in state else None


OPENMAX_SPEC = MethodSpec(
    name="openmax",
    factory=OpenMax,
    defaults=DEFAULTS,
    recipes=RECIPES,
    default_recipe="arpl-release",
    description="Softmax cross-entropy training, then OpenMax (Weibull fits on the training logits); score -P(unknown)",
    citation="Bendale & Boult, Towards Open Set Deep Networks, CVPR 2016; as in OpenOOD v1.5 "
             "(openood/postprocessors/openmax_postprocessor.py)",
    options=OPTIONS,
)
