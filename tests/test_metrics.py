"""Tests for osrbench.metrics against METHODS.md §8 (worked examples), scikit-learn and brute force."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

from osrbench import metrics
from osrbench.metrics import (
    accuracy,
    aupr_in,
    aupr_out,
    auroc,
    auroc_arpl,
    dias_f1_threshold,
    dtacc,
    evaluate,
    fpr95_known,
    fpr95_ood,
    macro_f1,
    oscr,
)

TOL = 1e-6

# ------------------------------------------------------------------------------------------------
# §8.7 worked examples: known (s, y, ŷ), unknown (s, ŷ), K and the exact expected values.

EXAMPLES = {
    "E1": dict(
        known=[(0.90, 0, 0), (0.80, 1, 1), (0.60, 2, 0), (0.30, 3, 3)],
        unknown=[(0.70, 1), (0.50, 2), (0.27, 3)],
        K=4,
        expected=dict(
            acc=3 / 4,
            auroc=9 / 12,
            auroc_arpl=9 / 12,
            oscr=7 / 12,
            fpr95_known=2 / 3,
            fpr95_ood=2 / 4,
            aupr_in=(1 + 1 + 3 / 4 + 4 / 6) / 4,  # = 41/48
            aupr_out=(1 + 2 / 3 + 3 / 5) / 3,  # unknowns positive, score -s; = 34/45
            dtacc=0.75,
            macro_f1=(2 / 3 + 2 / 3 + 2 / 3 + 0 + 0) / 5,  # = 0.4
        ),
    ),
    "E2": dict(
        known=[(1.0, 0, 0), (1.0, 1, 2), (0.9, 2, 2), (0.5, 3, 3)],
        unknown=[(1.0, 0), (0.5, 1), (0.4, 2)],
        K=4,
        expected=dict(
            acc=0.75,
            auroc=17 / 24,
            auroc_arpl=7 / 12,
            oscr=6 / 12,
            fpr95_known=2 / 3,
            fpr95_ood=4 / 4,
            aupr_in=(2 / 4) * (2 / 3) + (1 / 4) * (3 / 4) + (1 / 4) * (4 / 6),  # = 11/16
            aupr_out=(1 + 2 / 3 + 3 / 7) / 3,  # = 44/63
            dtacc=17 / 24,
            macro_f1=0.4,
        ),
    ),
    "E3": dict(
        known=[(0.99, 0, 0), (0.90, 1, 1), (0.52, 2, 2), (0.70, 3, 3), (0.55, 4, 4), (0.80, 5, 0)],
        unknown=[(0.60, 1), (0.50, 2), (0.40, 3), (0.95, 4)],
        K=6,
        expected=dict(
            acc=5 / 6,
            auroc=17 / 24,
            auroc_arpl=17 / 24,  # no ties
            oscr=14 / 24,
            fpr95_known=2 / 4,
            fpr95_ood=5 / 6,
            aupr_in=(1 + 2 / 3 + 3 / 4 + 4 / 5 + 5 / 7 + 6 / 8) / 6,  # = 983/1260
            aupr_out=(1 + 1 + 3 / 5 + 4 / 9) / 4,  # = 137/180
            dtacc=0.75,
            macro_f1=25 / 49,  # (4/7 + 2/3 + 2/3 + 0 + 1 + 2/3 + 0) / 7
        ),
    ),
}


def _arrays(ex):
    s, y, p = (np.array(col) for col in zip(*ex["known"]))
    u, q = (np.array(col) for col in zip(*ex["unknown"]))
    return s, y.astype(int), p.astype(int), u, q.astype(int)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_worked_example_each_metric(name):
    ex = EXAMPLES[name]
    s, y, p, u, q = _arrays(ex)
    exp = ex["expected"]
    assert accuracy(y, p) == pytest.approx(exp["acc"], abs=TOL)
    assert auroc(s, u) == pytest.approx(exp["auroc"], abs=TOL)
    assert auroc_arpl(s, u) == pytest.approx(exp["auroc_arpl"], abs=TOL)
    assert oscr(s, p == y, u) == pytest.approx(exp["oscr"], abs=TOL)
    assert fpr95_known(s, u) == pytest.approx(exp["fpr95_known"], abs=TOL)
    assert fpr95_ood(s, u) == pytest.approx(exp["fpr95_ood"], abs=TOL)
    assert aupr_in(s, u) == pytest.approx(exp["aupr_in"], abs=TOL)
    assert aupr_out(s, u) == pytest.approx(exp["aupr_out"], abs=TOL)
    assert dtacc(s, u) == pytest.approx(exp["dtacc"], abs=TOL)
    theta = dias_f1_threshold(ex["K"])
    assert macro_f1(y, p, s, q, u, theta) == pytest.approx(exp["macro_f1"], abs=TOL)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_worked_example_evaluate(name):
    ex = EXAMPLES[name]
    s, y, p, u, q = _arrays(ex)
    res = evaluate(s, p, y, u, unknown_preds=q, f1_threshold=dias_f1_threshold(ex["K"]))
    assert set(res) == set(ex["expected"])
    for key, value in ex["expected"].items():
        assert type(res[key]) is float, key
        assert res[key] == pytest.approx(value, abs=TOL), key


def test_worked_example_values_match_document_decimals():
    # The code, run on each example, must reproduce the 6-decimal values printed in §8.7 (and so must
    # the fractions above).
    printed = {
        "E1": dict(aupr_in=0.854167, aupr_out=0.755556, oscr=0.583333),
        "E2": dict(auroc=0.708333, auroc_arpl=0.583333, aupr_in=0.6875, aupr_out=0.698413),
        "E3": dict(oscr=0.583333, aupr_in=0.780159, aupr_out=0.761111, macro_f1=0.510204),
    }
    for name, values in printed.items():
        ex = EXAMPLES[name]
        s, y, p, u, q = _arrays(ex)
        got = evaluate(s, p, y, u, unknown_preds=q, f1_threshold=dias_f1_threshold(ex["K"]))
        for key, value in values.items():
            assert got[key] == pytest.approx(value, abs=1e-6), (name, key)
            assert ex["expected"][key] == pytest.approx(value, abs=1e-6), (name, key)


def test_evaluate_keys_without_f1():
    s, y, p, u, _ = _arrays(EXAMPLES["E1"])
    res = evaluate(s, p, y, u)
    assert set(res) == {"acc", "auroc", "auroc_arpl", "oscr", "fpr95_known", "fpr95_ood",
                        "aupr_in", "aupr_out", "dtacc"}
    assert all(type(v) is float for v in res.values())


# ------------------------------------------------------------------------------------------------
# the catalogue: no metric missing anywhere (torch-free import: tests/test_torch_free.py)

ALL_METRICS = {"auroc", "oscr", "acc", "macro_f1", "fpr95_known", "aupr_in", "aupr_out", "auroc_arpl", "dtacc",
               "fpr95_ood"}


def test_catalogue_covers_every_metric_function_once():
    assert set(metrics.METRICS) == ALL_METRICS
    assert list(metrics.METRICS)[:7] == ["auroc", "oscr", "acc", "macro_f1", "fpr95_known", "aupr_in", "aupr_out"]
    functions = {getattr(metrics, n) for n in metrics.__all__ if n not in ("evaluate", "dias_f1_threshold")
                 and callable(getattr(metrics, n)) and not isinstance(getattr(metrics, n), type)}
    assert {m.fn for m in metrics.METRICS.values()} == functions  # every pure function, each once
    assert len(metrics.METRICS) == len(functions)
    for name, m in metrics.METRICS.items():
        assert isinstance(m, metrics.Metric) and m.name == name
        assert m.label.strip() and m.short.strip(), name
        assert set(m.inputs) <= metrics.INPUTS, name
        assert m.higher_is_better == (name not in ("fpr95_known", "fpr95_ood")), name
    with pytest.raises(TypeError):
        metrics.METRICS["new"] = metrics.METRICS["auroc"]  # read-only
    with pytest.raises(ValueError, match="inputs"):
        metrics.Metric("bad", "Bad", "Bad", True, auroc, ("scores",))


def test_evaluate_returns_exactly_the_score_based_metrics_in_catalogue_order():
    s, y, p, u, q = _arrays(EXAMPLES["E3"])
    plain = evaluate(s, p, y, u, unknown_preds=q)  # no threshold: no macro-F1
    assert list(plain) == list(metrics.SCORE_BASED) == [n for n, m in metrics.METRICS.items() if not m.thresholded]
    assert [n for n, m in metrics.METRICS.items() if m.thresholded] == ["macro_f1"]
    full = evaluate(s, p, y, u, unknown_preds=q, f1_threshold=dias_f1_threshold(EXAMPLES["E3"]["K"]))
    assert list(full) == list(metrics.METRICS)
    for name, m in metrics.METRICS.items():  # each value is the catalogue function's own
        given = {"known_scores": s, "unknown_scores": u, "known_labels": y, "known_preds": p,
                 "known_correct": p == y, "unknown_preds": q, "f1_threshold": dias_f1_threshold(EXAMPLES["E3"]["K"])}
        assert full[name] == m.fn(*(given[k] for k in m.inputs)), name


def test_every_metric_list_elsewhere_names_catalogue_metrics():
    from osrbench import compare, report, rescore
    from osrbench.commands import run

    catalogue = set(metrics.METRICS)
    assert set(compare.LABELS) == set(compare.SHORT) == catalogue
    assert compare.LOWER_IS_BETTER == {"fpr95_known", "fpr95_ood"}
    assert compare.METRICS == ("auroc", "oscr", "acc", "macro_f1", "fpr95_known", "aupr_in", "aupr_out")
    for where, names in {"compare.METRICS": compare.METRICS, "report.REPORT_METRICS": report.REPORT_METRICS,
                         "rescore.RESCORE_METRICS": rescore.RESCORE_METRICS,
                         "commands.run.METRIC_ORDER": run.METRIC_ORDER}.items():
        assert set(names) <= catalogue, (where, set(names) - catalogue)
        assert list(names) == list(dict.fromkeys(names)), where
    # ``osrbench run`` prints the headline metrics and DTACC, in catalogue order.
    assert run.METRIC_ORDER == (*compare.METRICS, "dtacc")


# ------------------------------------------------------------------------------------------------
# random problems (seeded), with and without ties


def _problem(seed, ties):
    rng = np.random.default_rng(seed)
    n_k, n_u, K = rng.integers(20, 300), rng.integers(20, 300), 6
    s = rng.beta(5, 2, n_k)
    u = rng.beta(2, 2, n_u)
    if ties:
        # Coarse scores plus MSP-like saturation at 1.0 make many known/unknown ties.
        s, u = np.round(s, 1), np.round(u, 1)
        s[rng.random(n_k) < 0.2] = 1.0
        u[rng.random(n_u) < 0.1] = 1.0
        assert np.intersect1d(s, u).size > 0
    y = rng.integers(0, K, n_k)
    p = np.where(rng.random(n_k) < 0.8, y, rng.integers(0, K, n_k))
    q = rng.integers(0, K, n_u)
    return s, y, p, u, q


PROBLEMS = [(seed, ties) for seed in range(6) for ties in (False, True)]


def _indicator(s, u):
    return np.r_[np.ones(len(s), dtype=int), np.zeros(len(u), dtype=int)], np.r_[s, u]


@pytest.mark.parametrize("seed,ties", PROBLEMS)
def test_auroc_matches_sklearn(seed, ties):
    s, _, _, u, _ = _problem(seed, ties)
    y_true, score = _indicator(s, u)
    assert auroc(s, u) == pytest.approx(roc_auc_score(y_true, score), abs=1e-12)


@pytest.mark.parametrize("seed,ties", PROBLEMS)
def test_auroc_arpl_counts_ties_as_zero(seed, ties):
    s, _, _, u, _ = _problem(seed, ties)
    brute = np.mean(s[:, None] > u[None, :])
    assert auroc_arpl(s, u) == pytest.approx(brute, abs=1e-12)
    if ties:
        assert auroc_arpl(s, u) < auroc(s, u)


@pytest.mark.parametrize("seed,ties", PROBLEMS)
def test_aupr_matches_sklearn(seed, ties):
    s, _, _, u, _ = _problem(seed, ties)
    y_true, score = _indicator(s, u)
    assert aupr_in(s, u) == pytest.approx(average_precision_score(y_true, score), abs=1e-12)
    assert aupr_out(s, u) == pytest.approx(average_precision_score(1 - y_true, -score), abs=1e-12)


def _oscr_brute(s, correct, u):
    pair = (s[:, None] > u[None, :]) + 0.5 * (s[:, None] == u[None, :])
    return float(np.sum(pair[correct]) / (len(s) * len(u)))


@pytest.mark.parametrize("seed,ties", PROBLEMS)
def test_oscr_matches_pairwise_brute_force(seed, ties):
    s, y, p, u, _ = _problem(seed, ties)
    assert oscr(s, p == y, u) == pytest.approx(_oscr_brute(s, p == y, u), abs=1e-12)


@pytest.mark.parametrize("seed,ties", PROBLEMS)
def test_oscr_bounded_by_acc_and_auroc(seed, ties):
    s, y, p, u, _ = _problem(seed, ties)
    value = oscr(s, p == y, u)
    assert 0.0 < value <= accuracy(y, p)
    assert value <= auroc(s, u)


def test_oscr_extremes():
    s, u = np.array([0.9, 0.8]), np.array([0.1, 0.2])
    assert oscr(s, np.array([True, True]), u) == 1.0
    assert oscr(s, np.array([False, False]), u) == 0.0
    assert oscr(s, np.array([1, 0]), u) == 0.5  # 0/1 ints accepted as correctness


@pytest.mark.parametrize("seed,ties", PROBLEMS)
def test_macro_f1_matches_sklearn(seed, ties):
    s, y, p, u, q = _problem(seed, ties)
    for theta in (0.3, 0.55, 0.75):
        y_true = np.r_[y, -np.ones(len(u), dtype=int)]
        y_pred = np.where(np.r_[s, u] > theta, np.r_[p, q], -1)
        expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
        assert macro_f1(y, p, s, q, u, theta) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_threshold_is_strict():
    # Every score equals the (exactly representable) threshold → everything is rejected as −1.
    y = np.array([0, 1])
    s = np.array([0.5, 0.5])
    u, q = np.array([0.5]), np.array([0])
    # y_true = [0, 1, -1], y_pred = [-1, -1, -1]: F1 = 0, 0, 2/4 for labels 0, 1, -1.
    assert macro_f1(y, y, s, q, u, 0.5) == pytest.approx(0.5 / 3, abs=1e-12)
    # Just below the scores everything is accepted: y_pred = [0, 1, 0] → F1 = 2/3, 1, 0.
    assert macro_f1(y, y, s, q, u, 0.49) == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-12)


def test_macro_f1_label_set_includes_predicted_only_labels():
    # Label 7 is predicted but never true: it joins L with F1 = 0 (as in scikit-learn).
    y, p, s = np.array([0, 1]), np.array([0, 7]), np.array([0.9, 0.9])
    u, q = np.array([0.1]), np.array([0])
    # L = {-1, 0, 1, 7}: F1 = 1, 1, 0, 0.
    assert macro_f1(y, p, s, q, u, 0.5) == pytest.approx(0.5, abs=1e-12)


def _first_fpr_at_tpr95(y_true, score, drop_intermediate=False):
    fpr, tpr, _ = roc_curve(y_true, score, drop_intermediate=drop_intermediate)
    return float(fpr[np.argmax(tpr >= 0.95)])


@pytest.mark.parametrize("seed,ties", PROBLEMS)
def test_fpr95_match_sklearn_roc_curve(seed, ties):
    s, _, _, u, _ = _problem(seed, ties)
    y_true, score = _indicator(s, u)
    assert fpr95_known(s, u) == pytest.approx(_first_fpr_at_tpr95(y_true, score), abs=1e-12)
    assert fpr95_ood(s, u) == pytest.approx(_first_fpr_at_tpr95(1 - y_true, -score), abs=1e-12)


@pytest.mark.parametrize("n_known", range(1, 121))
def test_fpr95_known_every_set_size(n_known):
    # Checks the ⌈0.95·N⌉ rank for every N up to 120 (N = 20, 40, … hit 0.95·N exactly).
    rng = np.random.default_rng(n_known)
    s = rng.permutation(np.linspace(0.01, 0.99, n_known))
    u = np.linspace(0.0, 1.0, 41)
    y_true, score = _indicator(s, u)
    assert fpr95_known(s, u) == pytest.approx(_first_fpr_at_tpr95(y_true, score), abs=1e-12)
    assert fpr95_ood(u, s) == pytest.approx(_first_fpr_at_tpr95(1 - _indicator(u, s)[0],
                                                                 -np.r_[u, s]), abs=1e-12)


def test_fpr95_known_tie_example_from_spec():
    s = np.r_[np.linspace(0.9, 0.99, 17), 0.5, 0.4, 0.3]
    u = np.array([0.5, 0.4, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert len(np.unique(s)) == 20
    assert fpr95_known(s, u) == 0.25
    y_true, score = _indicator(s, u)
    assert _first_fpr_at_tpr95(y_true, score) == 0.25
    # scikit-learn's default drop_intermediate=True skips that point and reports 3/8.
    assert _first_fpr_at_tpr95(y_true, score, drop_intermediate=True) == 0.375


def _dtacc_brute(s, u):
    best = 0.0
    for delta in np.r_[-np.inf, s, u]:
        best = max(best, 0.5 * (np.mean(s > delta) + np.mean(u <= delta)))
    return best


@pytest.mark.parametrize("seed,ties", PROBLEMS)
def test_dtacc_matches_brute_force(seed, ties):
    s, _, _, u, _ = _problem(seed, ties)
    assert dtacc(s, u) == pytest.approx(_dtacc_brute(s, u), abs=1e-12)


def test_perfect_and_reversed_separation():
    s, u = np.array([0.8, 0.9, 1.0]), np.array([0.1, 0.2])
    assert auroc(s, u) == 1.0 and aupr_in(s, u) == 1.0 and aupr_out(s, u) == 1.0
    assert dtacc(s, u) == 1.0 and fpr95_known(s, u) == 0.0 and fpr95_ood(s, u) == 0.0
    assert auroc(u, s) == 0.0 and dtacc(u, s) == 0.5 and fpr95_known(u, s) == 1.0


def test_constant_scores_are_chance():
    s, u = np.full(5, 0.7), np.full(3, 0.7)
    assert auroc(s, u) == 0.5
    assert auroc_arpl(s, u) == 0.0
    assert aupr_in(s, u) == pytest.approx(5 / 8)
    assert aupr_out(s, u) == pytest.approx(3 / 8)
    assert dtacc(s, u) == 0.5


def test_float32_saturated_scores_are_handled_as_ties():
    s = np.array([1.0, 1.0, 0.9], dtype=np.float32)
    u = np.array([1.0, 0.2], dtype=np.float32)
    # pairs: (1,1) ½ twice, (1,.2) 1 twice, (.9,1) 0, (.9,.2) 1 → 4/6.
    assert auroc(s, u) == pytest.approx(4 / 6, abs=1e-12)
    assert auroc_arpl(s, u) == pytest.approx(3 / 6, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# thresholds and validation


@pytest.mark.parametrize("K,theta", [(4, 0.575), (6, 0.5 / 6 + 0.5 - 0.05), (20, 0.475)])
def test_dias_f1_threshold(K, theta):
    assert dias_f1_threshold(K) == pytest.approx(theta, abs=1e-12)


def test_dias_f1_threshold_k6_decimal_and_alpha():
    assert dias_f1_threshold(6) == pytest.approx(0.53333, abs=1e-5)
    assert dias_f1_threshold(4, alpha=1.0) == pytest.approx(0.25 - 0.05, abs=1e-12)
    with pytest.raises(ValueError):
        dias_f1_threshold(0)


PAIR_METRICS = [auroc, auroc_arpl, aupr_in, aupr_out, fpr95_known, fpr95_ood, dtacc,
                lambda s, u: oscr(s, np.ones(len(s), dtype=bool), u)]


@pytest.mark.parametrize("fn", PAIR_METRICS)
@pytest.mark.parametrize("known,unknown", [
    ([], [0.1, 0.2]),
    ([0.5, 0.6], []),
    ([0.5, np.nan], [0.1]),
    ([0.5, 0.6], [np.inf]),
    ([0.5, 0.6], [-np.inf, 0.2]),
    ([[0.5, 0.6]], [0.1]),
])
def test_pair_metrics_reject_bad_scores(fn, known, unknown):
    with pytest.raises(ValueError):
        fn(known, unknown)


def test_length_mismatches_raise():
    s, u = np.array([0.5, 0.6]), np.array([0.1])
    with pytest.raises(ValueError, match="length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="length"):
        oscr(s, np.array([True]), u)
    with pytest.raises(ValueError, match="length"):
        macro_f1([0, 1], [0, 1], s, [0, 1], u, 0.5)
    with pytest.raises(ValueError, match="length"):
        macro_f1([0], [0, 1], s, [0], u, 0.5)
    with pytest.raises(ValueError, match="length"):
        evaluate(s, [0, 1, 1], [0, 1, 1], u)


def test_other_invalid_inputs_raise():
    s, u = np.array([0.5, 0.6]), np.array([0.1])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="boolean"):
        oscr(s, np.array([0, 2]), u)
    with pytest.raises(ValueError, match="integer"):
        accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="non-finite"):
        macro_f1([0, 1], [0, 1], [0.5, np.nan], [0], u, 0.5)
    with pytest.raises(ValueError, match="unknown_preds"):
        evaluate(s, [0, 1], [0, 1], u, f1_threshold=0.5)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(s, [0, 1], [0, 1], [np.nan])
