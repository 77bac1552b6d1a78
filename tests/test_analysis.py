"""osrbench.analysis on records with hand-made score files: each statistic against an independent
computation (exact enumeration, brute-force AUROC, the ANOVA written out, Holm by hand)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from osrbench import analysis, compare, metrics, records, report, results, stats
from osrbench.config import config_hash
from osrbench.errors import UserError
from osrbench.records import Record, Scores

KNOWN_CLASSES = (1, 3, 5, 7)  # original ids of labels 0..3
UNKNOWN_IDS = np.array([0, 0, 2, 2, 2, 4, 6, 8, 8, 9])


def _scores(rng, shift, n_known=24, unknown_ids=UNKNOWN_IDS):
    labels = np.arange(n_known) % len(KNOWN_CLASSES)
    logits_k = rng.normal(0, 1, (n_known, len(KNOWN_CLASSES)))
    logits_k[np.arange(n_known), labels] += 1.5
    logits_u = rng.normal(0, 1, (len(unknown_ids), len(KNOWN_CLASSES)))
    ks = logits_k.max(1) + shift
    us = np.round(logits_u.max(1) + 0.3 * unknown_ids / 9, 1)  # ties and a class-dependent difficulty
    return Scores.from_arrays({"known_logits": logits_k, "unknown_logits": logits_u, "known_labels": labels,
                               "unknown_ids": np.asarray(unknown_ids), "known_score": ks, "unknown_score": us,
                               "known_score_mls": ks, "unknown_score_mls": us})


def write_run(root, method, split, seed, scores: Scores, rule=("mls", 1.0), protocol="auroc", dataset="digits"):
    cfg = {"epochs": 1}
    rec = Record(method=method, dataset=dataset, protocol=protocol, split=split, seed=seed, recipe="r", config=cfg,
                 config_hash=config_hash(method, cfg), split_hash=f"s{split}", metrics={},
                 plugin={"name": method, "distribution": "d", "version": "1"}, f1_rule=rule,
                 known_classes=KNOWN_CLASSES, unknown_classes=tuple(sorted(set(UNKNOWN_IDS.tolist()))),
                 scores=("score", "mls"), created="2026-01-01T00:00:00",
                 counts={"train": 100, "known": len(scores.known_labels), "unknown": len(scores.unknown_ids)},
                 wall_time_s={"train": 1.0, "eval": 0.1})
    folder = results.run_dir(root, method, dataset, protocol, split, seed, rec.config_hash)
    digest = records.write_scores(folder, scores, rec.identity)
    return records.write_record(folder, rec.replace(metrics=scores.metrics("score", rule), scores_sha256=digest))


@pytest.fixture
def runs(tmp_path):
    """a (better), b and c on 3 splits x 2 seeds; a's seed effect small, b's large."""
    recs = []
    for k in range(3):
        for s in range(2):
            for i, (m, shift) in enumerate((("a", 0.8 + 0.02 * s), ("b", 0.3 + 0.3 * s), ("c", 0.0))):
                recs.append(write_run(tmp_path, m, k, s, _scores(np.random.default_rng([k, s, i]), shift + 0.1 * k)))
    return recs


def _cmp(recs, **kw):
    return compare.build(recs, ["a", "b", "c"], ["auroc", "oscr", "macro_f1", "fpr95_known"], **kw)


def test_sample_metrics_on_every_image_are_the_records_metrics(runs):
    for rec in runs:
        got = analysis.samples(rec).metrics(list(metrics.METRICS))
        assert got.keys() == rec.metrics.keys()
        for name, v in rec.metrics.items():
            assert got[name] == pytest.approx(v, abs=1e-15), name


def test_known_classes_are_the_original_ids(runs):
    s = analysis.samples(runs[0])
    assert s.known_classes.tolist() == [KNOWN_CLASSES[i] for i in s.known_labels]
    assert s.unknown_classes.tolist() == UNKNOWN_IDS.tolist()


def _brute_auroc(pos, neg):
    return float(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]))


def test_class_breakdown_against_brute_force_pairs(runs):
    b = analysis.class_breakdown(_cmp(runs))
    for m in "abc":
        mine = [r for r in runs if r.method == m]
        for u in sorted(set(UNKNOWN_IDS.tolist())):
            per_split = []
            for k in range(3):
                vals = []
                for r in (r for r in mine if r.split == k):
                    sc = records.read_scores(r.dir, r)
                    vals.append(_brute_auroc(sc.known["score"], sc.unknown["score"][sc.unknown_ids == u]))
                per_split.append(np.mean(vals))
            assert b.unknown[m][u] == (pytest.approx(np.mean(per_split), abs=1e-12), 3)
        for label, cls in enumerate(KNOWN_CLASSES):
            vals = {k: [] for k in range(3)}
            for r in mine:
                sc = records.read_scores(r.dir, r)
                vals[r.split].append(_brute_auroc(sc.known["score"][sc.known_labels == label], sc.unknown["score"]))
            assert b.known[m][cls][0] == pytest.approx(np.mean([np.mean(v) for v in vals.values()]), abs=1e-12)


def test_holm_columns_are_holm_over_the_tables_pairs(runs):
    c = _cmp(runs)
    for metric, pairs in c.pairs.items():
        p = [x.p_t for x in pairs]
        order = np.argsort(p)
        m = len(p)
        expect = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):  # step-down by hand
            running = max(running, min(1.0, (m - rank) * p[i]))
            expect[i] = running
        assert [x.p_t_holm for x in pairs] == pytest.approx(expect.tolist())
        assert all(x.p_wilcoxon_holm >= x.p_wilcoxon for x in pairs)


def test_ddof0_is_the_population_std_and_is_labelled(runs):
    c1, c0 = _cmp(runs), _cmp(runs, ddof=0)
    for metric in c1.metrics:
        for m, s in c1.summaries[metric].items():
            vals = list(s.per_split.values())
            assert c0.summaries[metric][m].std == pytest.approx(float(np.std(vals, ddof=0)))
            assert s.std == pytest.approx(float(np.std(vals, ddof=1)))
    assert "population std (ddof 0" in compare.render_comparison(c0)
    assert "sample std (ddof 1)" in compare.render_comparison(c1)
    cells = report.build_report(runs, ["auroc"], ddof=0)
    assert "ddof 0" in report.render_report(cells, ["auroc"], "md")
    assert report.report_doc(cells, ["auroc"])["std_ddof"] == 0


def test_variance_decomposition_from_records_is_the_anova(runs):
    c = _cmp(runs)
    v = analysis.variance(c, "auroc")
    for m in "abc":
        table = np.array([[r.metrics["auroc"] for r in sorted(runs, key=lambda r: r.seed)
                           if r.method == m and r.split == k] for k in range(3)])  # splits x seeds
        seed_var = table.var(axis=1, ddof=1).mean()
        split_var = max(0.0, table.mean(axis=1).var(ddof=1) - seed_var / 2)
        assert v[m].seed_var == pytest.approx(seed_var)
        assert v[m].split_var == pytest.approx(split_var, abs=1e-15)
    pv = analysis.pair_variance(c, "auroc", "a", "b")
    d = np.array([[ra.metrics["auroc"] - rb.metrics["auroc"] for ra in runs for rb in runs
                   if ra.method == "a" and rb.method == "b" and ra.split == rb.split == k and ra.seed == rb.seed]
                  for k in range(3)])
    assert pv.seed_var == pytest.approx(d.var(axis=1, ddof=1).mean())


def test_planner_seeds_give_the_power_and_one_fewer_does_not(runs):
    for plan in analysis.planner(_cmp(runs), "auroc"):
        v = plan.var
        assert plan.n_splits == 3 and plan.seeds_now == 2
        if plan.seeds is not None:
            assert stats.power_paired_t(plan.delta, v.split_var, v.seed_var, 3, plan.seeds) >= stats.POWER
            if plan.seeds > 1:
                assert stats.power_paired_t(plan.delta, v.split_var, v.seed_var, 3, plan.seeds - 1) < stats.POWER
        else:
            assert stats.power_paired_t(plan.delta, v.split_var, v.seed_var, 3, stats.MAX_SEEDS) < stats.POWER
    text = analysis.render_variance(_cmp(runs), "simple", resolve=0.05)
    assert "difference to resolve: 5 points" in text and "+5.00" in text


def test_bootstrap_matches_the_exact_resampling_distribution(tmp_path):
    """3 knowns, 2 unknowns: all 3^3 * 2^2 = 108 equally likely stratified resamples enumerated."""
    ks, us = np.array([0.9, 0.4, 0.6]), np.array([0.5, 0.1])
    sc = Scores.from_arrays({"known_logits": np.eye(3)[:, :2] + 0.1, "unknown_logits": np.zeros((2, 2)),
                             "known_labels": np.array([0, 1, 0]), "unknown_ids": np.array([8, 9]),
                             "known_score": ks, "unknown_score": us, "known_score_mls": ks, "unknown_score_mls": us})
    rec = write_run(tmp_path, "a", 0, 0, sc)
    c = compare.build([rec], ["a"], ["auroc"])
    boot = analysis.bootstrap(c, resamples=20000, seed=3)
    exact = [metrics.auroc(ks[list(ki)], us[list(ui)])
             for ki in itertools.product(range(3), repeat=3) for ui in itertools.product(range(2), repeat=2)]
    drawn = boot.values[0]["a"]["auroc"]
    assert drawn.mean() == pytest.approx(np.mean(exact), abs=0.005)
    assert drawn.std() == pytest.approx(np.std(exact), abs=0.005)
    for v in set(exact):  # each attainable value about as often as in the enumeration
        assert np.mean(drawn == v) == pytest.approx(np.mean(np.array(exact) == v), abs=0.012)


def test_bootstrap_is_seeded_and_paired(runs, tmp_path):
    c = _cmp(runs)
    one, two = analysis.intervals(c, 200, seed=1), analysis.intervals(c, 200, seed=1)
    assert one.as_dict() == two.as_dict()
    assert analysis.intervals(c, 200, seed=2).as_dict() != one.as_dict()
    # a twin of "a" (identical score files): every paired resample difference is exactly 0
    twins = []
    for r in (r for r in runs if r.method == "a"):
        twins.append(write_run(tmp_path / "twin", "a2", r.split, r.seed, records.read_scores(r.dir, r)))
    c2 = compare.build([r for r in runs if r.method == "a"] + twins, ["a", "a2"], ["auroc"])
    iv = analysis.intervals(c2, 100, seed=0)
    assert all((i.low, i.high) == (0.0, 0.0) for i in iv.pair_split["auroc"]["a", "a2"].values())
    # the interval of each method brackets its per-split value
    for m, by in one.split["auroc"].items():
        for k, i in by.items():
            assert i.low <= c.summaries["auroc"][m].per_split[k] <= i.high


def test_intervals_over_splits_are_t_and_split_bootstrap(runs):
    c = _cmp(runs)
    iv = analysis.intervals(c, 500, seed=0)
    from scipy.stats import t

    for m, s in c.summaries["auroc"].items():
        vals = np.array(list(s.per_split.values()))
        lo, hi = t.interval(0.95, len(vals) - 1, loc=vals.mean(), scale=vals.std(ddof=1) / math.sqrt(len(vals)))
        ti, bi = iv.mean["auroc"][m]
        assert (ti.low, ti.high) == (pytest.approx(lo), pytest.approx(hi))
        assert vals.min() - 1e-12 <= bi.low <= bi.high <= vals.max() + 1e-12  # never leaves the observed range
    for p in c.pairs["auroc"]:
        ti, _ = iv.pair_mean["auroc"][p.a, p.b]
        d = np.array(p.diffs)
        half = t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        assert (ti.low, ti.high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))


def test_macro_f1_is_left_out_for_a_score_without_rule(runs):
    c = compare.build(runs, ["a", "b", "c"], ["auroc", "macro_f1"])
    c_no_rule = compare.build([r.replace(f1_rule=None) for r in runs], ["a", "b", "c"], ["auroc", "macro_f1"])
    assert "macro_f1" in analysis.intervals(c, 20).split
    boot = analysis.bootstrap(c_no_rule, 20)
    assert all("macro_f1" not in by for split in boot.values.values() for by in split.values())


def test_different_test_sets_in_one_split_are_refused(runs, tmp_path):
    other = _scores(np.random.default_rng(9), 0.5, unknown_ids=UNKNOWN_IDS[::-1])
    stray = write_run(tmp_path / "x", "d", 0, 0, other)
    c = compare.build(runs + [stray], ["a", "d"], ["auroc"])
    with pytest.raises(UserError, match="tested on other images"):
        analysis.bootstrap(c, 10)


def test_a_run_without_scores_file_is_one_clear_error(runs):
    (runs[0].dir / records.SCORES).unlink()
    with pytest.raises(UserError, match="has no scores.npz"):
        analysis.class_breakdown(_cmp(runs))


def test_rank_tests_over_report_blocks_against_scipy(tmp_path):
    from scipy.stats import friedmanchisquare

    recs = []
    for i, (dataset, protocol) in enumerate([("digits", "auroc"), ("digits", "f1"), ("mnist", "auroc"), ("svhn", "auroc")]):
        for m, shift in (("a", 1.0), ("b", 0.5 + 0.4 * (i % 2)), ("c", 0.2)):
            recs.append(write_run(tmp_path, m, 0, 0, _scores(np.random.default_rng([i, len(m)]), shift),
                                  protocol=protocol, dataset=dataset))
    cells = report.build_report(recs, ["auroc", "fpr95_known"])
    r = analysis.rank_tests(cells, "auroc")
    assert r is not None and r.result.n == 4 and len(r.blocks) == 4
    table = r.table
    assert r.result.chi2 == pytest.approx(friedmanchisquare(*table.T).statistic)
    low = analysis.rank_tests(cells, "fpr95_known")  # lower is better: the best has the lowest value
    best = low.result.methods[int(np.argmin(low.result.mean_ranks))]
    assert best == low.result.methods[int(np.argmin(low.table.mean(axis=0)))] or len(set(low.result.mean_ranks)) < 3
    text = analysis.render_ranks([r])
    assert "Friedman chi2" in text and "Nemenyi CD" in text
    assert analysis.rank_tests(cells[:3], "auroc") is None  # one block: no ranks
