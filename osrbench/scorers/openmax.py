"""OpenMax (Bendale & Boult, CVPR 2016) as OpenOOD v1.5 computes it, on osrbench's float64 logits.

The reference is OpenOOD's ``openood/postprocessors/openmax_postprocessor.py``, which fits each
class's Weibull with libMR's ``MR.fit_high`` (``Vastlab/libMR``: ``libMR/MetaRecognition.cpp``,
``libMR/weibull.c``, ``python/libmr.pyx``). What libMR does, and this module does with scipy:

- ``FitHigh`` sets ``sign = +1`` (larger distances are the extremes), sorts the data in decreasing
  order, keeps the ``fitting_size`` largest (OpenOOD passes its whole tail, so all of it), records
  ``small_score`` = the smallest of them, and fits the Weibull to ``x + translate_amount -
  small_score``, so that the tail starts at ``translate_amount``, which is 1 for ``libmr.MR()``;
- ``weibull_fit`` is the two-parameter maximum-likelihood fit (location 0), done here by
  ``scipy.stats.weibull_min.fit(..., floc=0)``; it refuses a tail of fewer than two points or of
  equal points, and so does :func:`fit_openmax`;
- ``W_score(x)`` = ``CDF(x)`` = ``weibull_cdf(x * sign + translate_amount - small_score)``, i.e.
  ``1 - exp(-(t / scale) ** shape)`` for ``t >= 0`` and 0 below (the default fitting type,
  ``complement_reject``, does not complement it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize
from scipy.stats import weibull_min

from osrbench.method import Option
from osrbench.scoring import NotApplicable

#: The distances OpenOOD's ``calc_distance`` knows.
DISTANCES = ("euclidean", "eucos", "cosine")
#: ``libmr.MR()``'s default ``translate_amount`` (``python/libmr.pyx``), which OpenOOD keeps.
TRANSLATE_AMOUNT = 1.0

# OpenOOD v1.5: openood/postprocessors/openmax_postprocessor.py sets weibull_tail = 20 and
# weibull_alpha = 3 in OpenMax.__init__, fits with distance_type 'euclidean' in setup() and passes
# eu_weight 0.5 (unused by 'euclidean') to openmax() in postprocess(), which returns as its
# confidence conf = -1 * score_openmax[:, -1], -P(unknown): the score here. Its config,
# configs/postprocessors/openmax.yml, has no postprocessor_sweep, so nothing is tuned.
OPENOOD_OPENMAX = {
    "params": {"tail_size": 20, "alpha": 3, "distance": "euclidean", "eu_weight": 0.5},
    "grid": {},
    "options": {"tail_size": Option(minimum=1), "alpha": Option(minimum=1), "distance": Option(choices=DISTANCES),
                "eu_weight": Option(minimum=0)},
    "description": "OpenMax: logits recalibrated by per-class Weibull fits of distances to the class means; "
                   "score -P(unknown)",
    "citation": "Bendale & Boult, Towards Open Set Deep Networks, CVPR 2016; as in OpenOOD v1.5 "
                "(openood/postprocessors/openmax_postprocessor.py), with libMR's FitHigh Weibull fit "
                "(Scheirer et al., Meta-Recognition, T-PAMI 2011)",
    "adaptation": "the Weibull is fitted by scipy's weibull_min maximum-likelihood fit (location 0) on "
                  "libMR's translated tail instead of by libMR; the training logits are those of "
                  "osrbench's unaugmented pass over the training set, in float64; the probabilities are "
                  "computed with the row maximum subtracted from every exponent (the same values, without "
                  "overflow)",
}


@dataclass(frozen=True, eq=False)
class OpenMaxModel:
    """Per class k: its mean activation vector ``means[k]`` and the libMR Weibull of its distances.

    ``W_score`` of a distance d to class k is the Weibull CDF (``shape[k]``, ``scale[k]``) at
    ``d + translate_amount - small_score[k]``.
    """

    means: torch.Tensor  # (K, K) float64
    shape: torch.Tensor  # (K,)
    scale: torch.Tensor  # (K,)
    small_score: torch.Tensor  # (K,) the smallest distance of each class's tail
    translate_amount: float
    distance: str
    eu_weight: float


def distances(logits: torch.Tensor, mean: torch.Tensor, distance: str, eu_weight: float) -> torch.Tensor:
    """(N,) distances of logit rows to one mean, as scipy.spatial.distance in OpenOOD's calc_distance."""
    if distance not in DISTANCES:
        raise ValueError(f"openmax: unknown distance {distance!r} (valid: {', '.join(DISTANCES)})")
    diff = logits - mean
    euclidean = torch.sqrt((diff * diff).sum(1))
    if distance == "euclidean":
        return euclidean
    # scipy's cosine distance, clipped to [0, 2] against rounding as scipy does
    cos = (1.0 - (logits * mean).sum(1) / torch.sqrt((logits * logits).sum(1) * (mean * mean).sum())).clamp(0.0, 2.0)
    return cos if distance == "cosine" else euclidean * eu_weight + cos


def _fmin(func, x0, args=(), disp=0):
    """scipy's default Nelder-Mead, run to 1e-10 instead of 1e-4, so the MLE is met to ~1e-8."""
    return optimize.fmin(func, x0, args=args, disp=disp, xtol=1e-10, ftol=1e-12, maxiter=100_000, maxfun=200_000)


def fit_openmax(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, tail_size: int,
                distance: str, eu_weight: float) -> OpenMaxModel:
    """Class means of the correctly classified training logits and a libMR FitHigh Weibull per class."""
    if tail_size < 1:
        raise ValueError(f"openmax: tail_size must be at least 1, got {tail_size}")
    logits = logits.double()
    labels = labels.long()
    correct = logits.argmax(1) == labels
    means, shapes, scales, smalls = [], [], [], []
    for k in range(num_classes):
        rows = logits[correct & (labels == k)]
        if len(rows) == 0:
            raise NotApplicable(f"openmax: class {k} has no correctly classified training image, so no mean")
        mean = rows.mean(0)
        tail = np.sort(distances(rows, mean, distance, eu_weight).numpy())[-tail_size:]
        if len(tail) < 2:
            raise NotApplicable(f"openmax: class {k} has {len(tail)} tail distance(s); a Weibull fit needs 2")
        if tail[0] == tail[-1]:
            raise NotApplicable(f"openmax: class {k}'s {len(tail)} tail distances are all equal; "
                                "libMR cannot fit a Weibull to them")
        small = float(tail[0])
        shape, _, scale = weibull_min.fit(tail + TRANSLATE_AMOUNT - small, floc=0, optimizer=_fmin)
        means.append(mean)
        shapes.append(shape)
        scales.append(scale)
        smalls.append(small)
    as64 = (lambda v: torch.tensor(v, dtype=torch.float64))
    return OpenMaxModel(torch.stack(means), as64(shapes), as64(scales), as64(smalls), TRANSLATE_AMOUNT,
                        distance, float(eu_weight))


def w_score(model: OpenMaxModel, k: int | torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """libMR's W_score of distances to class k (``k`` may be a tensor of classes broadcast with ``dist``)."""
    t = dist + model.translate_amount - model.small_score[k]
    cdf = -torch.expm1(-(t.clamp(min=0.0) / model.scale[k]) ** model.shape[k])
    return torch.where(t < 0, torch.zeros_like(cdf), cdf)


def openmax_probs(logits: torch.Tensor, model: OpenMaxModel, alpha: int) -> torch.Tensor:
    """(N, K+1) OpenMax probabilities, the unknown's last: OpenOOD's ``openmax`` for every row at once."""
    z = logits.double()
    n, k = z.shape
    if alpha < 1:
        raise ValueError(f"openmax: alpha must be at least 1, got {alpha}")
    if alpha > k:
        raise NotApplicable(f"openmax: alpha={alpha} exceeds the {k} classes")
    dist = torch.stack([distances(z, model.means[c], model.distance, model.eu_weight) for c in range(k)], 1)
    w = w_score(model, torch.arange(k), dist)
    # OpenOOD ranks by argsort()[::-1]: descending, equal logits in decreasing class order
    ranked = torch.argsort(z, dim=1, stable=True).flip(1)[:, :alpha]
    weights = (alpha + 1 - torch.arange(1, alpha + 1, dtype=torch.float64)) / alpha
    omega = torch.zeros_like(z).scatter_(1, ranked, weights.expand(n, alpha))
    modified = z * (1 - w * omega)
    unknown = (z - modified).sum(1, keepdim=True)
    exps = torch.cat([modified, unknown], 1)
    e = torch.exp(exps - exps.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def openmax_score(logits: torch.Tensor, model: OpenMaxModel, alpha: int) -> torch.Tensor:
    """-P(unknown): higher = more likely known."""
    return -openmax_probs(logits, model, alpha)[:, -1]
