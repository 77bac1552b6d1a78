"""OpenMax (osrbench.scorers.openmax) against an independent computation of OpenOOD's formula.

The reference here recomputes everything on its own: class means with explicit loops, distances
with scipy.spatial.distance, libMR's translated tail, the two-parameter Weibull MLE by bisection on
its shape equation (no scipy.stats), and the recalibrated probabilities one sample at a time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance as spd
import torch

from osrbench.metrics import auroc
from osrbench.scorers import openmax
from osrbench.scoring import NotApplicable, ScoreSpec

# K = 3: thirteen training logit vectors; rows 3, 7 and 11 are misclassified and must be ignored.
TRAIN = np.array([
    [4.1, 0.3, -1.2], [3.2, 1.1, 0.4], [5.0, -0.6, 0.9], [0.8, 2.5, 0.1],
    [2.7, 0.2, 0.3], [0.2, 3.9, 1.0], [-0.4, 2.8, 0.6], [2.2, 1.0, 1.9],
    [1.1, 4.6, -0.8], [0.5, -0.2, 3.3], [1.2, 0.7, 4.4], [0.3, 2.0, 1.5], [0.9, 1.4, 2.6],
])
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
TEST = np.array([[3.9, 0.4, 0.2], [0.1, 3.1, 0.9], [0.6, 0.9, 3.8], [1.0, 1.1, 0.9],
                 [9.0, -2.0, 1.5], [-0.5, 0.4, 0.2]])
EU_WEIGHT = 0.5


def _distance(u: np.ndarray, v: np.ndarray, kind: str) -> float:
    if kind == "euclidean":
        return spd.euclidean(u, v)
    if kind == "cosine":
        return spd.cosine(u, v)
    return spd.euclidean(u, v) * EU_WEIGHT + spd.cosine(u, v)


def _weibull_mle(x: np.ndarray) -> tuple[float, float]:
    """(shape, scale) solving 1/k + mean(log x) = sum(x^k log x) / sum(x^k), by bisection on log k."""
    lx = np.log(x)

    def g(k: float) -> float:
        xk = x ** k
        return (xk * lx).sum() / xk.sum() - 1.0 / k - lx.mean()

    lo, hi = math.log(1e-3), math.log(1e3)
    assert g(math.exp(lo)) < 0 < g(math.exp(hi))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(math.exp(mid)) < 0 else (lo, mid)
    k = math.exp(0.5 * (lo + hi))
    return k, float(np.mean(x ** k) ** (1.0 / k))


def _reference_fit(kind: str, tail_size: int):
    means, params = [], []
    for c in range(3):
        rows = [TRAIN[i] for i in range(len(TRAIN)) if LABELS[i] == c and int(np.argmax(TRAIN[i])) == c]
        mean = np.zeros(3)
        for r in rows:
            mean += r
        mean /= len(rows)
        dists = sorted(_distance(mean, r, kind) for r in rows)
        tail = np.array(dists[-tail_size:])
        small = tail.min()
        shape, scale = _weibull_mle(tail + 1.0 - small)
        means.append(mean)
        params.append((shape, scale, small))
    return np.array(means), params


def _reference_probs(logits: np.ndarray, model: openmax.OpenMaxModel, alpha: int) -> np.ndarray:
    """OpenOOD's openmax() and compute_openmax_prob(), one sample at a time, with the model's Weibulls."""
    out = []
    means = model.means.numpy()
    for x in logits:
        ranked = x.argsort()[::-1][:alpha]
        omega = np.zeros(3)
        omega[ranked] = [((alpha + 1) - i) / alpha for i in range(1, alpha + 1)]
        modified, unknown = [], []
        for c in range(3):
            d = _distance(means[c], x, model.distance)
            t = d + 1.0 - float(model.small_score[c])
            with np.errstate(over="ignore"):  # far points: (t / scale) ** shape = inf, w = 1
                w = 0.0 if t < 0 else 1 - np.exp(-((t / model.scale[c].item()) ** model.shape[c].item()))
            m = x[c] * (1 - w * omega[c])
            modified.append(m)
            unknown.append(x[c] - m)
        e = np.exp(modified)
        eu = np.exp(np.sum(unknown))
        out.append(list(e / (e.sum() + eu)) + [eu / (e.sum() + eu)])
    return np.array(out)


def _fit(kind: str, tail_size: int = 3) -> openmax.OpenMaxModel:
    return openmax.fit_openmax(torch.tensor(TRAIN), torch.tensor(LABELS), 3, tail_size, kind, EU_WEIGHT)


@pytest.mark.parametrize("kind", openmax.DISTANCES)
@pytest.mark.parametrize("tail_size", [3, 5])
def test_fit_matches_an_independent_mle(kind, tail_size):
    model = _fit(kind, tail_size)
    means, params = _reference_fit(kind, tail_size)
    np.testing.assert_allclose(model.means.numpy(), means, rtol=1e-12)
    assert model.translate_amount == 1.0 and model.distance == kind and model.eu_weight == EU_WEIGHT
    for c, (shape, scale, small) in enumerate(params):
        assert float(model.shape[c]) == pytest.approx(shape, rel=1e-6)
        assert float(model.scale[c]) == pytest.approx(scale, rel=1e-6)
        assert float(model.small_score[c]) == pytest.approx(small, rel=1e-12)


@pytest.mark.parametrize("kind", openmax.DISTANCES)
@pytest.mark.parametrize("alpha", [1, 2, 3])
def test_probabilities_match_the_per_sample_formula(kind, alpha):
    model = _fit(kind)
    got = openmax.openmax_probs(torch.tensor(TEST), model, alpha)
    assert got.dtype == torch.float64 and got.shape == (len(TEST), 4)
    np.testing.assert_allclose(got.numpy(), _reference_probs(TEST, model, alpha), rtol=1e-9, atol=1e-12)
    score = openmax.openmax_score(torch.tensor(TEST), model, alpha)
    assert score.shape == (len(TEST),)
    assert torch.equal(score, -got[:, -1])


def test_w_score_is_libmr_cdf_of_the_translated_distance():
    model = _fit("euclidean")
    small, shape, scale = (float(v[1]) for v in (model.small_score, model.shape, model.scale))
    d = torch.tensor([small - 2.0, small - 1.0, small - 0.5, small, small + 3.0], dtype=torch.float64)
    t = d.numpy() + 1.0 - small
    expected = [0.0 if v < 0 else 1 - math.exp(-((v / scale) ** shape)) for v in t]
    np.testing.assert_allclose(openmax.w_score(model, 1, d).numpy(), expected, rtol=1e-12, atol=0)
    assert float(openmax.w_score(model, 1, d)[0]) == 0.0


def test_probabilities_are_a_distribution_even_for_huge_logits():
    rng = np.random.default_rng(0)
    model = _fit("eucos")
    logits = torch.tensor(np.concatenate([rng.normal(0, 3, (50, 3)), rng.normal(0, 800, (50, 3))]))
    p = openmax.openmax_probs(logits, model, 3)
    assert torch.isfinite(p).all()
    assert (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, rtol=0, atol=1e-12)


def test_logits_near_a_class_mean_score_above_far_and_flat_ones():
    rng = np.random.default_rng(1)
    centres = 8.0 * np.eye(3)
    train = np.concatenate([c + rng.normal(0, 0.5, (40, 3)) for c in centres])
    labels = np.repeat(np.arange(3), 40)
    model = openmax.fit_openmax(torch.tensor(train), torch.tensor(labels), 3, 20, "euclidean", 0.5)
    known = np.concatenate([c + rng.normal(0, 0.3, (10, 3)) for c in centres])
    far = np.concatenate([5 * c + rng.normal(0, 0.3, (5, 3)) for c in centres])
    flat = rng.normal(2.0, 0.3, (15, 3))
    s = (lambda x: openmax.openmax_score(torch.tensor(x), model, 3).numpy())
    assert auroc(s(known), np.concatenate([s(far), s(flat)])) == 1.0


def test_misclassified_images_do_not_count():
    model = _fit("euclidean")
    extra = torch.tensor([[0.0, 9.0, 0.0], [9.0, 0.0, 0.0]])  # labelled 0 and 1: both misclassified
    more = openmax.fit_openmax(torch.cat([torch.tensor(TRAIN), extra]), torch.tensor([*LABELS, 0, 1]),
                               3, 3, "euclidean", EU_WEIGHT)
    assert torch.equal(more.means, model.means) and torch.equal(more.shape, model.shape)


def test_a_class_with_no_correct_image_is_not_applicable():
    labels = LABELS.copy()
    labels[9:] = 1  # class 2's images now labelled 1 (misclassified): class 2 has none
    with pytest.raises(NotApplicable, match="class 2 has no correctly classified"):
        openmax.fit_openmax(torch.tensor(TRAIN), torch.tensor(labels), 3, 3, "euclidean", EU_WEIGHT)


def test_a_tail_of_one_point_is_not_applicable():
    keep = np.array([0, 1, 2, 4, 5, 9, 10, 12])  # class 1 keeps one correct image
    with pytest.raises(NotApplicable, match="class 1 has 1 tail distance"):
        openmax.fit_openmax(torch.tensor(TRAIN[keep]), torch.tensor(LABELS[keep]), 3, 3, "euclidean", EU_WEIGHT)


def test_equal_tail_distances_are_not_applicable():
    train = np.array([[5.0, 1.0], [3.0, 1.0], [1.0, 5.0], [1.0, 3.0], [1.0, 4.0]])
    with pytest.raises(NotApplicable, match="class 0's 2 tail distances are all equal"):
        openmax.fit_openmax(torch.tensor(train), torch.tensor([0, 0, 1, 1, 1]), 2, 5, "euclidean", 0.5)


def test_alpha_beyond_the_classes_is_not_applicable():
    with pytest.raises(NotApplicable, match="alpha=4 exceeds the 3 classes"):
        openmax.openmax_probs(torch.tensor(TEST), _fit("euclidean"), 4)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown distance"):
        _fit("manhattan")
    with pytest.raises(ValueError, match="tail_size must be at least 1"):
        _fit("euclidean", 0)
    with pytest.raises(ValueError, match="alpha must be at least 1"):
        openmax.openmax_probs(torch.tensor(TEST), _fit("euclidean"), 0)


def test_openood_defaults_make_a_score_spec():
    conf = openmax.OPENOOD_OPENMAX
    assert conf["params"] == {"tail_size": 20, "alpha": 3, "distance": "euclidean", "eu_weight": 0.5}
    assert conf["grid"] == {}
    assert "scipy" in conf["adaptation"] and "unaugmented" in conf["adaptation"]
    spec = ScoreSpec(name="openmax", score=lambda v, f, p: openmax.openmax_score(v.logits, f, p["alpha"]),
                     params=conf["params"], grid=conf["grid"], description=conf["description"],
                     citation=conf["citation"], adaptation=conf["adaptation"])
    assert spec.candidates() == [conf["params"]]
