"""The built-in post-hoc scorers, registered through ``osrbench_register_scores``.

Each follows its OpenOOD v1.5 postprocessor (defaults and tuning grid in :data:`posthoc.OPENOOD`;
OpenMax in :mod:`.openmax`); the math lives in :mod:`.posthoc` and :mod:`.openmax` as plain
functions of float64 tensors, and here each becomes a :class:`~osrbench.scoring.ScoreSpec`.
"""

from __future__ import annotations

from typing import Any, Mapping

from osrbench.scorers import openmax, posthoc
from osrbench.scoring import ScoreSpec, View


def _logits_fn(view: View):
    net = view.network
    assert net is not None
    return net.logits


def _vim_fit(train: View, p: Mapping[str, Any]):
    assert train.penultimate is not None
    dim = int(round(p["dim_fraction"] * train.penultimate.shape[1]))
    w, b = posthoc.affine_head(train.network.head64, train.penultimate.shape[1])
    return posthoc.vim_fit(train.penultimate, w, b, dim)


def _spec(name: str, score, needs=("logits",), fit=None, conf: Mapping[str, Any] | None = None) -> ScoreSpec:
    conf = posthoc.OPENOOD.get(name, {}) if conf is None else conf
    return ScoreSpec(name=name, score=score, needs=frozenset(needs), fit=fit, params=dict(conf.get("params", {})),
                     grid=dict(conf.get("grid", {})), description=conf.get("description", ""),
                     citation=conf.get("citation", ""), adaptation=conf.get("adaptation", ""),
                     options=dict(conf.get("options", {})))


BUILTIN_SCORERS: tuple[ScoreSpec, ...] = (
    _spec("msp", lambda v, f, p: posthoc.msp(v.logits)),
    _spec("mls", lambda v, f, p: posthoc.mls(v.logits)),
    _spec("energy", lambda v, f, p: posthoc.energy(v.logits, p["temperature"])),
    _spec("gen", lambda v, f, p: posthoc.gen(v.logits, p["gamma"], p["m"])),
    _spec("odin", lambda v, f, p: posthoc.odin(_logits_fn(v), v.images, p["temperature"], p["noise"],
                                               v.network.input_std),
          needs=("logits", "input_grad")),
    _spec("mahalanobis", lambda v, f, p: posthoc.mahalanobis(v.penultimate, *f), needs=("features",),
          fit=lambda t, p: posthoc.mahalanobis_fit(t.penultimate, t.labels, t.num_classes)),
    _spec("knn", lambda v, f, p: posthoc.knn(v.penultimate, f, p["k"]), needs=("features",),
          fit=lambda t, p: posthoc.knn_fit(t.penultimate)),
    _spec("vim", lambda v, f, p: posthoc.vim(v.penultimate, v.logits, *f), needs=("features", "head"), fit=_vim_fit),
    _spec("react", lambda v, f, p: posthoc.react(v.penultimate, v.network.head64, f), needs=("features", "head"),
          fit=lambda t, p: posthoc.react_fit(t.penultimate, p["percentile"])),
    _spec("openmax", lambda v, f, p: openmax.openmax_score(v.logits, f, p["alpha"]),
          fit=lambda t, p: openmax.fit_openmax(t.logits, t.labels, t.num_classes, p["tail_size"],
                                               p["distance"], p["eu_weight"]),
          conf=openmax.OPENOOD_OPENMAX),
)
