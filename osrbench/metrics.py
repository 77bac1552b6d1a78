"""Open-set recognition metrics (METHODS.md §8), as pure functions over numpy arrays.

Conventions (METHODS.md §1, §8):

- Scores are open-set scores, **higher = more likely known**; they are converted to float64.
- Knowns are the positive class unless a metric's name says otherwise (``aupr_out``, ``fpr95_ood``).
- Every metric returns a Python float, a fraction in [0, 1].
- Ties between a known and an unknown score count ½ (Mann–Whitney), except in ``auroc_arpl``,
  which reproduces the ARPL release's 0.
- Invalid input (empty known or unknown set, mismatched lengths, non-1-D arrays, NaN/inf scores)
  raises :class:`ValueError`.

Everything is O(n log n): scores are sorted once and counted with :func:`numpy.searchsorted`.

:data:`METRICS` is the one catalogue of every metric osrbench knows (name, labels, direction, the
function and what it is computed from); :func:`evaluate`, ``compare``, ``report`` and the CLI read
it. This module imports numpy only (no torch): it must stay importable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

__all__ = [
    "INPUTS",
    "METRICS",
    "Metric",
    "SCORE_BASED",
    "accuracy",
    "aupr_in",
    "aupr_out",
    "auroc",
    "auroc_arpl",
    "dias_f1_threshold",
    "dtacc",
    "evaluate",
    "fpr95_known",
    "fpr95_ood",
    "macro_f1",
    "oscr",
]


# --------------------------------------------------------------------------------------------
# validation helpers


def _as_1d(x, name: str, dtype=None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one sample")
    return arr


def _scores(x, name: str) -> np.ndarray:
    arr = _as_1d(x, name, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def _labels(x, name: str) -> np.ndarray:
    arr = _as_1d(x, name)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)  # e.g. labels that went through a float tensor
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")


def _pair_wins(known: np.ndarray, unknown: np.ndarray, tie: float) -> np.ndarray:
    """Per known sample i: #{j : s_i > u_j} + tie * #{j : s_i = u_j}."""
    u = np.sort(unknown)
    below = np.searchsorted(u, known, side="left")  # unknowns strictly below s_i
    below_or_equal = np.searchsorted(u, known, side="right")
    return below + tie * (below_or_equal - below)


def _n_at_95(n: int) -> int:
    """⌈0.95·n⌉ in integer arithmetic (0.95·n in floating point can land just above an integer)."""
    return -(-95 * n // 100)


# --------------------------------------------------------------------------------------------
# closed set


def accuracy(labels, preds) -> float:
    """Closed-set accuracy ACC = (1/N_k) Σ_i [ŷ_i = y_i] over known test samples (§8.1).

    Unknown samples must not be passed. ``labels`` and ``preds`` are integer arrays of equal,
    non-zero length; otherwise ValueError.
    """
    y = _labels(labels, "labels")
    p = _labels(preds, "preds")
    _same_length(labels=y, preds=p)
    return float(np.mean(y == p))


# --------------------------------------------------------------------------------------------
# threshold-free detection metrics


def auroc(known_scores, unknown_scores) -> float:
    """AUROC with knowns positive, Mann–Whitney form (§8.2).

    AUROC = (1/(N_k N_u)) Σ_i Σ_j ([s_i > u_j] + ½·[s_i = u_j]); equals scikit-learn's
    ``roc_auc_score(known_indicator, scores)``. Ties count ½, so constant scores give 0.5.
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    return float(_pair_wins(s, u, tie=0.5).sum() / (s.size * u.size))


def auroc_arpl(known_scores, unknown_scores) -> float:
    """AUROC as computed by the ARPL release: tied known/unknown pairs count 0 (§8.2).

    AUROC_ARPL = (1/(N_k N_u)) Σ_i Σ_j [s_i > u_j]. Equals :func:`auroc` when no known score
    equals an unknown score, and is lower otherwise (e.g. saturated float32 MSP at 1.0).
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    return float(_pair_wins(s, u, tie=0.0).sum() / (s.size * u.size))


def oscr(known_scores, known_correct, unknown_scores) -> float:
    """Open-set classification rate, pairwise definition with ties ½ (§8.3).

    OSCR = (1/(N_k N_u)) Σ_i c_i Σ_j ([s_i > u_j] + ½·[s_i = u_j]), with c_i = [ŷ_i = y_i]
    (``known_correct``, boolean or 0/1). This is the area under CCR vs FPR where CCR's
    denominator is *all* knowns, so OSCR ≤ ACC and OSCR ≤ AUROC. If no known is classified
    correctly the result is 0. It is *not* the ARPL release's value, which under-counts
    adjacent pairs by an off-by-one.
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    c = _as_1d(known_correct, "known_correct")
    if c.dtype != bool:
        if not np.isin(c, (0, 1)).all():
            raise ValueError("known_correct must be boolean (or 0/1)")
        c = c.astype(bool)
    _same_length(known_scores=s, known_correct=c)
    return float(_pair_wins(s[c], u, tie=0.5).sum() / (s.size * u.size))


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """AP = Σ_n (R_n − R_{n−1})·P_n over distinct thresholds, decreasing; no interpolation."""
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    # Last index of each run of equal scores: one PR point per distinct threshold.
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(is_pos)[last]
    n_selected = last + 1.0
    precision = tp / n_selected
    recall_gain = np.diff(np.r_[0.0, tp]) / pos.size
    return float(np.sum(recall_gain * precision))


def aupr_in(known_scores, unknown_scores) -> float:
    """AUPR-in: average precision with knowns positive and score s (§8.6).

    AP = Σ_n (R_n − R_{n−1})·P_n over the distinct thresholds in decreasing order, without
    interpolation; equals scikit-learn's ``average_precision_score(known_indicator, s)``.
    Tied scores form one point. Not the trapezoidal PR area.
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    return _average_precision(s, u)


def aupr_out(known_scores, unknown_scores) -> float:
    """AUPR-out: average precision with unknowns positive and score −s (§8.6).

    Same definition as :func:`aupr_in` with the roles of the two sets swapped.
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    return _average_precision(-u, -s)


def fpr95_known(known_scores, unknown_scores) -> float:
    """FPR at 95 % TPR with knowns positive, the usual OSR meaning (§8.5).

    τ = the ⌈0.95·N_k⌉-th largest known score; result = #{j : u_j ≥ τ} / N_u, the fraction of
    unknowns accepted when (at least) 95 % of knowns are accepted. Unknowns tied with τ count as
    accepted. Equals the fpr at the first point with tpr ≥ 0.95 of scikit-learn's ``roc_curve``
    with ``drop_intermediate=False`` (the default dropping can skip that point when ties occur).
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    tau = np.sort(s)[::-1][_n_at_95(s.size) - 1]
    return float(np.count_nonzero(u >= tau) / u.size)


def fpr95_ood(known_scores, unknown_scores) -> float:
    """FPR at 95 % TPR with unknowns positive, the OpenOOD / pytorch-ood convention (§8.5).

    τ' = the ⌈0.95·N_u⌉-th smallest unknown score; result = #{i : s_i ≤ τ'} / N_k, the fraction
    of knowns rejected when (at least) 95 % of unknowns are rejected. Knowns tied with τ' count
    as rejected. Differs from :func:`fpr95_known` in general.
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    tau = np.sort(u)[_n_at_95(u.size) - 1]
    return float(np.count_nonzero(s <= tau) / s.size)


def dtacc(known_scores, unknown_scores) -> float:
    """Best balanced detection accuracy (§8.6).

    DTACC = max over δ ∈ {−∞} ∪ {all scores} of ½·(TPR(δ) + TNR(δ)), with
    TPR(δ) = #{i : s_i > δ}/N_k and TNR(δ) = #{j : u_j ≤ δ}/N_u. Always ≥ 0.5 (δ = −∞).
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    deltas = np.r_[-np.inf, np.unique(np.concatenate([s, u]))]
    tpr = 1.0 - np.searchsorted(np.sort(s), deltas, side="right") / s.size
    tnr = np.searchsorted(np.sort(u), deltas, side="right") / u.size
    return float(np.max(0.5 * (tpr + tnr)))


# --------------------------------------------------------------------------------------------
# thresholded open-set classification


def dias_f1_threshold(num_classes: int, alpha: float = 0.5) -> float:
    """The DIAS release's fixed F1 threshold θ = α/K + (1 − α) − 0.05 (§6.5).

    α/K + (1 − α) is the peak of the label-smoothed SCE_α target; θ sits 0.05 below it.
    K = 4 → 0.575, K = 6 → 0.5333…, K = 20 → 0.475. ``num_classes`` must be ≥ 1.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return float(alpha / num_classes + (1.0 - alpha) - 0.05)


def macro_f1(known_labels, known_preds, known_scores, unknown_preds, unknown_scores,
             threshold) -> float:
    """Macro-F1 over K+1 classes with the DIAS rule (§8.4).

    y_true = class label for knowns, −1 for unknowns; y_pred = ŷ if score > ``threshold``
    (strict) else −1. Macro-F1 = unweighted mean over L = labels(y_true) ∪ labels(y_pred) of
    F1_ℓ = 2TP_ℓ / (2TP_ℓ + FP_ℓ + FN_ℓ), which is 0 when TP_ℓ = 0 (the denominator is never 0
    for ℓ ∈ L). Equals scikit-learn's ``f1_score(y_true, y_pred, average='macro')``.
    Predicted labels are not checked against the known label range: a stray prediction only
    adds a label with F1 = 0, exactly as in scikit-learn.
    """
    y_k = _labels(known_labels, "known_labels")
    p_k = _labels(known_preds, "known_preds")
    s_k = _scores(known_scores, "known_scores")
    p_u = _labels(unknown_preds, "unknown_preds")
    s_u = _scores(unknown_scores, "unknown_scores")
    _same_length(known_labels=y_k, known_preds=p_k, known_scores=s_k)
    _same_length(unknown_preds=p_u, unknown_scores=s_u)
    threshold = float(threshold)
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")

    y_true = np.r_[y_k, np.full(s_u.size, -1)]
    y_pred = np.where(np.r_[s_k, s_u] > threshold, np.r_[p_k, p_u], -1)
    classes = np.union1d(y_true, y_pred)
    idx_true = np.searchsorted(classes, y_true)
    idx_pred = np.searchsorted(classes, y_pred)
    tp = np.bincount(idx_true[y_true == y_pred], minlength=classes.size)
    # 2TP + FP + FN = (#true as ℓ) + (#predicted as ℓ), which is > 0 for every ℓ in L.
    denom = np.bincount(idx_true, minlength=classes.size) + np.bincount(idx_pred, minlength=classes.size)
    return float(np.mean(2.0 * tp / denom))


# --------------------------------------------------------------------------------------------
# the catalogue

#: What a metric may be computed from: the argument names of :func:`evaluate`, plus
#: ``known_correct`` (c_i = [known_preds_i = known_labels_i]).
INPUTS = frozenset({"known_scores", "known_preds", "known_labels", "known_correct", "unknown_scores",
                    "unknown_preds", "f1_threshold"})


@dataclass(frozen=True)
class Metric:
    """One metric of the catalogue.

    :param name: the key in result records, ``--metrics`` lists and :func:`evaluate`'s dict.
    :param label: the long label (table captions, legends).
    :param short: the short label (column headers).
    :param higher_is_better: False for error rates (a paired "win" then means lower).
    :param fn: the pure function computing it.
    :param inputs: what ``fn`` takes, positionally, named from :data:`INPUTS`.
    :param headline: one of the columns ``compare`` shows by default.
    """

    name: str
    label: str
    short: str
    higher_is_better: bool
    fn: Callable[..., float]
    inputs: tuple[str, ...]
    headline: bool = False

    def __post_init__(self) -> None:
        unknown = [k for k in self.inputs if k not in INPUTS]
        if unknown or not self.inputs:
            raise ValueError(f"metric {self.name!r}: inputs {self.inputs} must be drawn from {sorted(INPUTS)}")

    @property
    def thresholded(self) -> bool:
        """Needs an operating threshold (macro-F1): computed by :func:`evaluate` only when given one."""
        return "f1_threshold" in self.inputs


_PAIR = ("known_scores", "unknown_scores")

#: Every metric osrbench knows, by name, in display order.
METRICS: Mapping[str, Metric] = MappingProxyType({m.name: m for m in (
    Metric("auroc", "AUROC", "AUROC", True, auroc, _PAIR, headline=True),
    Metric("oscr", "OSCR", "OSCR", True, oscr, ("known_scores", "known_correct", "unknown_scores"),
           headline=True),
    Metric("acc", "closed-set accuracy", "Acc.", True, accuracy, ("known_labels", "known_preds"),
           headline=True),
    Metric("macro_f1", "macro-F1 (K+1)", "macro-F1", True, macro_f1,
           ("known_labels", "known_preds", "known_scores", "unknown_preds", "unknown_scores", "f1_threshold"),
           headline=True),
    Metric("fpr95_known", "FPR at 95% TPR (known positive; lower is better)", "FPR95", False, fpr95_known,
           _PAIR, headline=True),
    Metric("aupr_in", "AUPR-in", "AUPR-in", True, aupr_in, _PAIR, headline=True),
    Metric("aupr_out", "AUPR-out", "AUPR-out", True, aupr_out, _PAIR, headline=True),
    Metric("auroc_arpl", "AUROC (ARPL tie rule)", "AUROC-ARPL", True, auroc_arpl, _PAIR),
    Metric("dtacc", "DTACC", "DTACC", True, dtacc, _PAIR),
    Metric("fpr95_ood", "FPR at 95% TPR (unknown positive; lower is better)", "FPR95-OOD", False, fpr95_ood,
           _PAIR),
)})

#: The metrics computed from scores and predictions alone (everything but the thresholded ones).
SCORE_BASED: tuple[str, ...] = tuple(name for name, m in METRICS.items() if not m.thresholded)


# --------------------------------------------------------------------------------------------
# everything at once


def evaluate(known_scores, known_preds, known_labels, unknown_scores, unknown_preds=None,
             f1_threshold=None) -> dict[str, float]:
    """Every catalogue metric for one run, as a dict of Python floats in :data:`METRICS` order.

    Keys: the :data:`SCORE_BASED` ones (``auroc``, ``oscr``, ``acc``, ``fpr95_known``, ``aupr_in``,
    ``aupr_out``, ``auroc_arpl``, ``dtacc``, ``fpr95_ood``); plus ``macro_f1`` when
    ``f1_threshold`` is given, which then also requires ``unknown_preds`` (ValueError otherwise).
    Correctness for OSCR is c_i = [known_preds_i = known_labels_i].
    """
    s = _scores(known_scores, "known_scores")
    u = _scores(unknown_scores, "unknown_scores")
    y = _labels(known_labels, "known_labels")
    p = _labels(known_preds, "known_preds")
    _same_length(known_scores=s, known_preds=p, known_labels=y)

    given = {"known_scores": s, "unknown_scores": u, "known_labels": y, "known_preds": p, "known_correct": p == y}
    if f1_threshold is not None:
        if unknown_preds is None:
            raise ValueError("macro_f1 needs unknown_preds when f1_threshold is given")
        given["unknown_preds"] = unknown_preds
        given["f1_threshold"] = f1_threshold
    return {name: m.fn(*(given[k] for k in m.inputs))
            for name, m in METRICS.items() if all(k in given for k in m.inputs)}
