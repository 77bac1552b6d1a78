"""compare / report / rescore / export / plots: aggregation and statistics on synthetic records."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from osrbench import cli, compare, export, metrics, plots, records, report, results
from osrbench.config import config_hash
from osrbench.records import Record, Scores


@pytest.fixture(autouse=True)
def _hand_made_records_are_allowed(monkeypatch):
    """``make_record`` without ``scores_rng`` writes a record with no scores file and so no scores hash:
    unverified (tests/test_verify.py checks that readers refuse those); these tests read them as
    ``--allow-unverified`` does."""
    from osrbench import verify

    monkeypatch.setenv(verify.ALLOW_ENV, "1")

VERSIONS = {"osrbench": "0.1.0", "torch": "x", "numpy": "y", "python": "z",
            "plugin": {"name": "p", "distribution": "d", "version": "1"}}


def make_record(method, split, seed, values, *, dataset="digits", protocol="auroc", epochs=2,
                recipe="arpl-release", root: Path | None = None, scores_rng=None, plugin=None):
    """A result record as the engine writes it; on disk (with scores.npz) when ``root`` is given.

    ``plugin``: the ``{"name", "distribution", "version"}`` that made it (default ``VERSIONS``')."""
    cfg = {"epochs": epochs, "batch_size": 64, "lr": 0.1}
    plugin = dict(plugin or VERSIONS["plugin"])
    versions = VERSIONS if plugin == VERSIONS["plugin"] else {**VERSIONS, "plugin": plugin}
    rec = Record(method=method, dataset=dataset, protocol=protocol, split=split, seed=seed, recipe=recipe,
                 config=cfg, config_hash=config_hash(method, cfg), split_hash=f"hash-of-split-{split}",
                 metrics=dict(values), versions=versions, plugin=plugin, f1_rule=("msp", 0.5),
                 scores=("score", "msp", "mls"), created="2026-01-01T00:00:00",
                 counts={"train": 600, "known": 60, "unknown": 40}, wall_time_s={"train": 1.0, "eval": 0.1})
    if root is None:
        return rec
    folder = results.run_dir(root, method, dataset, protocol, split, seed, rec.config_hash)
    if scores_rng is not None:
        rng = scores_rng
        k, u, K = 60, 40, 6
        logits_k = rng.normal(0, 1, (k, K))
        labels = rng.integers(0, K, k)
        logits_k[np.arange(k), labels] += 2.5
        logits_u = rng.normal(0, 1, (u, K))

        def msp(z):
            e = np.exp(z - z.max(1, keepdims=True))
            return (e / e.sum(1, keepdims=True)).max(1)

        arrays = {"known_logits": logits_k, "unknown_logits": logits_u, "known_labels": labels,
                  "unknown_ids": np.full(u, 7), "known_score": msp(logits_k), "unknown_score": msp(logits_u),
                  "known_score_msp": msp(logits_k), "unknown_score_msp": msp(logits_u),
                  "known_score_mls": logits_k.max(1), "unknown_score_mls": logits_u.max(1)}
        scores = Scores.from_arrays(arrays)
        digest = records.write_scores(folder, scores, rec.identity)
        rec = rec.replace(metrics=scores.metrics("score", rec.f1_rule), scores_sha256=digest)
    return records.write_record(folder, rec)


AUROC = [0.80, 0.82, 0.84, 0.86, 0.88]  # mean 0.84, sample std sqrt(0.001)


def two_seed_records(method="softmax", values=AUROC, offset=0.01, **kw):
    """Two seeds per split at value -/+ offset: seed-averaged per-split values are ``values``."""
    return [make_record(method, k, s, {"auroc": v + (2 * s - 1) * offset, "fpr95_known": 1 - v}, **kw)
            for k, v in enumerate(values) for s in (0, 1)]


# ---------------------------------------------------------------------------------- aggregation


def test_mean_std_over_seed_averaged_splits():
    recs = two_seed_records()
    s = compare.summarize(recs, "auroc")["softmax"]
    assert s.per_split == pytest.approx(dict(enumerate(AUROC)))
    assert s.mean == pytest.approx(0.84)
    assert s.std == pytest.approx(math.sqrt(0.001))  # ddof 1, not 0 (that would be sqrt(0.0008))
    assert compare.seed_std(recs, "auroc")["softmax"] == pytest.approx(math.sqrt(2) * 0.01)
    c = compare.build(recs, ["softmax"], ["auroc"])
    assert c.splits == [0, 1, 2, 3, 4] and c.seeds == [0, 1]
    text = compare.render_comparison(c)
    assert "84.00 +- 3.16" in text and "seed std" in text and "1.41" in text


def test_records_of_different_configs_are_never_averaged():
    recs = two_seed_records() + two_seed_records(values=[0.5] * 5, epochs=5)
    with pytest.raises(compare.MixedConfigs, match="2 different configs"):
        compare.build(recs, ["softmax"], ["auroc"])
    cells = report.build_report(recs, ["auroc"])
    assert len(cells) == 2
    assert sorted(c.variant for c in cells) == ["epochs=2", "epochs=5"]
    assert sorted(round(c.metrics["auroc"].mean, 10) for c in cells) == [0.5, 0.84]
    md = report.format_md(cells, ["auroc"])
    assert "| softmax (arpl-release; epochs=2) | 84.00 ± 3.16" in md
    assert "| softmax (arpl-release; epochs=5) | 50.00 ± 0.00" in md


# ----------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("trial", range(12))
def test_paired_statistics_match_scipy(trial):
    from scipy import stats

    rng = np.random.default_rng(trial)
    n = int(rng.integers(3, 12))
    a = rng.uniform(0.6, 0.9, n)
    b = a - rng.normal(0.01, 0.03, n)
    if trial % 3 == 0:  # tied |differences| and exact zeros
        b = a - np.round(rng.normal(0.0, 0.02, n), 2)
        b[0] = a[0]
    if np.all(a == b):
        b[1] -= 0.01
    # A has one split B lacks and vice versa: pairing is by split index, not by position.
    av = {k + 1: float(v) for k, v in enumerate(a)} | {0: 0.99}
    bv = {k + 1: float(v) for k, v in enumerate(b)} | {n + 1: 0.1}
    p = compare.paired(av, bv, "auroc", a="A", b="B")
    d = a - b
    assert p.splits == list(range(1, n + 1))
    assert p.diffs == pytest.approx(list(d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = stats.wilcoxon(a, b)
        ref_t = stats.ttest_rel(a, b)
    assert p.wilcoxon_stat == pytest.approx(ref.statistic)
    assert p.p_wilcoxon == pytest.approx(ref.pvalue, rel=1e-9)
    assert p.t == pytest.approx(ref_t.statistic)
    assert p.p_t == pytest.approx(ref_t.pvalue, rel=1e-9)
    assert p.wins == int(np.sum(d > 1e-12)) and p.losses == int(np.sum(d < -1e-12))
    assert p.wins + p.ties + p.losses == n


def test_wilcoxon_large_sample_uses_normal_approximation_like_scipy():
    from scipy import stats

    d = np.random.default_rng(5).normal(0.01, 0.02, 70)
    assert compare.wilcoxon_signed_rank(d)[1] == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-9)


def test_wins_ties_losses_direction_and_tolerance():
    a = {0: 0.90, 1: 0.80, 2: 0.70, 3: 0.60}
    b = {0: 0.85, 1: 0.80, 2: 0.7004, 3: 0.65}
    p = compare.paired(a, b, "auroc")
    assert (p.wins, p.ties, p.losses) == (1, 1, 2)
    p = compare.paired(a, b, "auroc", tie_tol=0.001)  # 0.1 points
    assert (p.wins, p.ties, p.losses) == (1, 2, 1)
    p = compare.paired(a, b, "fpr95_known")  # lower is better: A's higher values are losses
    assert (p.wins, p.ties, p.losses) == (2, 1, 1)
    assert p.mean_diff == pytest.approx((0.05 + 0 - 0.0004 - 0.05) / 4)


def test_five_splits_cannot_reach_p_below_0_05_and_the_output_says_so():
    assert compare.min_wilcoxon_p(5) == 0.0625
    assert compare.wilcoxon_signed_rank([0.01, 0.02, 0.03, 0.04, 0.05])[1] == pytest.approx(0.0625)
    assert compare.wilcoxon_signed_rank([0.0, 0.0])[1] == 1.0
    assert math.isnan(compare.paired_t([0.01])[1])
    recs = two_seed_records() + two_seed_records("arpl", values=[v - 0.02 for v in AUROC])
    text = compare.render(recs, ["softmax", "arpl"], metrics=["auroc", "fpr95_known"])
    assert "p Wilcoxon" in text and "p paired-t" in text
    assert "smallest attainable p is 0.0625" in text and "no comparison can reach p < 0.05" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("softmax - arpl")]
    assert len(lines) == 2
    assert "+2.00 +- 0.00" in lines[0] and "5/0/0" in lines[0] and "0.0625" in lines[0]
    assert "-2.00" in lines[1] and "5/0/0" in lines[1]  # lower fpr95 is better: softmax wins
    assert "<0.0001" in lines[0]  # constant differences: paired t gives p = 0



def _one_split_four_seeds():
    """Split 0 only, seeds 0-3: softmax above arpl by 1, 2, 3, 4 points seed by seed."""
    soft = [0.90, 0.92, 0.94, 0.96]
    return ([make_record("softmax", 0, s, {"auroc": v}) for s, v in enumerate(soft)]
            + [make_record("arpl", 0, s, {"auroc": v - 0.01 * (s + 1)}) for s, v in enumerate(soft)])


def test_one_split_several_seeds_pairs_by_seed_and_the_std_over_one_split_is_undefined():
    from scipy import stats as sps

    recs = _one_split_four_seeds()
    c = compare.build(recs, ["softmax", "arpl"], ["auroc"])
    assert c.unit == "seed" and compare.pair_unit(two_seed_records()) == "split"  # 5 splits: by split
    (p,) = c.pairs["auroc"]
    # By split there would be one pair (W/T/L 1/0/0, Wilcoxon p 1); by seed there are four.
    assert p.unit == "seed" and p.splits == [0, 1, 2, 3]
    assert p.diffs == pytest.approx([0.01, 0.02, 0.03, 0.04]) and (p.wins, p.ties, p.losses) == (4, 0, 0)
    assert p.p_wilcoxon == pytest.approx(0.125)  # 2 / 2^4, all signs positive
    soft = [r.metrics["auroc"] for r in recs[:4]]
    arpl = [r.metrics["auroc"] for r in recs[4:]]
    assert p.p_t == pytest.approx(sps.ttest_rel(soft, arpl).pvalue)
    s = c.summaries["auroc"]["softmax"]
    assert s.mean == pytest.approx(0.93) and math.isnan(s.std)  # a sample std of one split value
    assert results.mean_std([0.5], ddof=0) == (0.5, 0.0)  # the population std of one value is 0
    text = compare.render_comparison(c)
    assert "93.00 +- -" in text and "+- 0.00" not in text
    assert "seed 3" in text and "4/0/0" in text and "0.125" in text
    assert "Paired by seed: one split (0)" in text and "W/T/L: seeds where A" in text
    assert "with 4 seeds the smallest attainable p is 0.125" in text and "df = seeds - 1" in text


def test_an_undefined_std_in_report_and_export(tmp_path):
    recs = _one_split_four_seeds()
    cells = report.build_report(recs, ["auroc"])
    assert "93.00 ± -" in report.format_md(cells, ["auroc"])
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(report.format_csv(cells, ["auroc"])))}
    assert rows["softmax"]["std"] == "" and float(rows["softmax"]["mean"]) == pytest.approx(0.93)
    doc = report.report_doc(cells, ["auroc"])
    assert {g["method"]: g["metrics"]["auroc"]["std"] for g in doc["groups"]} == {"softmax": None, "arpl": None}
    json.dumps(doc, allow_nan=False)  # no NaN, which is not JSON

    c = compare.build(recs, ["softmax", "arpl"], ["auroc"])
    out = tmp_path / "bundle.json"
    bundle = export.write_export(out, export.export_doc(c))
    json.loads(out.read_text(), parse_constant=lambda x: pytest.fail(f"{x} in the bundle"))
    export.validate_export(bundle)
    m = bundle["methods"]["softmax"]["metrics"]["auroc"]
    assert m["std"] is None and m["per_seed"] == pytest.approx({"0": 0.90, "1": 0.92, "2": 0.94, "3": 0.96})
    (pair,) = bundle["paired"]
    assert pair["unit"] == "seed" == bundle["paired_tests"]["unit"] and "per_seed_diff" in pair
    bundle["methods"]["arpl"]["metrics"]["auroc"]["per_seed"]["2"] += 0.01
    bundle["sha256"] = results.canonical_hash({k: v for k, v in bundle.items() if k != "sha256"}, 64)
    with pytest.raises(export.ExportInvalid, match="seed 2 difference does not match"):
        export.validate_export(bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN error bar or label position
        png = plots.plot_bars(c.summaries["auroc"], c.splits, tmp_path / "bars.png", "AUROC")
    assert png.read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------- splits


def test_duplicate_splits_are_detected_and_can_be_dropped(capsys):
    from osrbench import plugins

    cifar = plugins.get().dataset("cifar10")
    keep, dropped = compare.unique_splits(cifar, "osrci", [0, 1, 2, 3, 4])
    assert keep == [0, 2, 3, 4] and dropped == {1: 0}
    lines = compare.duplicate_split_warnings(cifar, "osrci", [0, 1, 2])
    assert len(lines) == 1 and "split 1 has the same class sets as split 0" in lines[0]
    assert compare.duplicate_split_warnings(plugins.get().dataset("digits"), "auroc", range(5)) == []
    splits, _, dropped = report.resolve_splits("cifar10", "osrci", "0-4", "0", True)
    assert splits == [0, 2, 3, 4] and dropped == {1: 0}
    assert compare.split_list([0, 1, 2, 4, 6, 7]) == "0-2,4,6,7"


def test_report_marks_and_drops_duplicate_splits():
    recs = [make_record("softmax", k, 0, {"auroc": v}, dataset="cifar10", protocol="osrci")
            for k, v in enumerate([0.9, 0.5, 0.8, 0.8, 0.8])]
    cell, = report.build_report(recs, ["auroc"])
    assert cell.duplicates == {1: 0} and "split 1 = split 0" in report.format_md([cell], ["auroc"])
    cell, = report.build_report(recs, ["auroc"], unique_splits=True)
    assert cell.splits == [0, 2, 3, 4] and cell.metrics["auroc"].mean == pytest.approx(0.825)
    assert report._cell_note(cell) == "dropped duplicate split 1 (= 0)"  # 4 of 4 distinct splits: complete


# ------------------------------------------------------------------------------------- report


def _write_runs(root: Path) -> list[Record]:
    recs = []
    for k, v in enumerate(AUROC):
        for s in (0, 1):
            recs.append(make_record("softmax", k, s, {"auroc": v + (2 * s - 1) * 0.01, "oscr": v - 0.1, "acc": 0.9},
                                    root=root))
            recs.append(make_record("dias", k, s, {"auroc": v + 0.05, "oscr": v - 0.05, "acc": 0.95},
                                    root=root, recipe="dias-release"))
        recs.append(make_record("softmax", k, 0, {"auroc": 0.7, "oscr": 0.6, "acc": 0.8}, root=root,
                                dataset="fashion-mnist"))
    return recs


def test_report_formats_parse_back(tmp_path, capsys):
    _write_runs(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{not json")
    assert cli.main(["report", "--runs", str(tmp_path), "--format", "csv"]) == 0
    cap = capsys.readouterr()
    assert "skipped" in cap.err and "broken" in cap.err  # a corrupt record is reported, not used
    rows = list(csv.DictReader(io.StringIO(cap.out)))
    by = {(r["dataset"], r["method"], r["metric"]): r for r in rows}
    assert len(rows) == 3 * 3
    m, s = results.mean_std(AUROC)
    assert float(by["digits", "softmax", "auroc"]["mean"]) == m
    assert float(by["digits", "softmax", "auroc"]["std"]) == s
    assert float(by["digits", "dias", "oscr"]["mean"]) == results.mean_std([v - 0.05 for v in AUROC])[0]
    assert by["digits", "dias", "auroc"]["recipe"] == "dias-release"
    assert by["digits", "softmax", "auroc"]["seeds"] == "0 1"
    per = dict(kv.split(":") for kv in by["digits", "softmax", "oscr"]["per_split"].split())
    assert {int(k): float(v) for k, v in per.items()} == pytest.approx({k: v - 0.1 for k, v in enumerate(AUROC)})

    assert cli.main(["report", "--runs", str(tmp_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    g = {(x["dataset"], x["method"]): x for x in doc["groups"]}
    assert g["digits", "softmax"]["metrics"]["auroc"]["mean"] == m
    assert g["digits", "softmax"]["metrics"]["auroc"]["per_split"]["3"] == pytest.approx(0.86)
    assert g["fashion-mnist", "softmax"]["splits"] == [0, 1, 2, 3, 4] and g["digits", "dias"]["n_runs"] == 10

    assert cli.main(["report", "--runs", str(tmp_path), "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "| method (recipe) | digits | fashion-mnist |" in md
    assert "| softmax (arpl-release) | 84.00 ± 3.16 | 70.00 ± 0.00 |" in md
    assert "| dias (dias-release) | 89.00 ± 3.16 | – |" in md

    assert cli.main(["report", "--runs", str(tmp_path), "--format", "latex", "--layout", "wide",
                     "--metrics", "auroc,oscr"]) == 0
    tex = capsys.readouterr().out
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\multicolumn{2}{c}{fashion-mnist}" in tex and "84.00 $\\pm$ 3.16" in tex
    body = [ln for ln in tex.splitlines() if ln.startswith("softmax")]
    assert body and all(ln.count("&") == 4 and ln.endswith("\\\\") for ln in body)

    assert cli.main(["report", "--runs", str(tmp_path / "nope")]) == 2
    assert "no results folder" in capsys.readouterr().err
    assert cli.main(["report", "--runs", str(tmp_path), "--metrics", "auroc,accuracy"]) == 2
    assert "unknown metric 'accuracy'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- export


def _comparison(tmp_path):
    rng = np.random.default_rng(0)
    recs = [make_record(m, k, 0, {}, root=tmp_path, scores_rng=rng) for m in ("softmax", "arpl") for k in range(3)]
    return compare.build(recs, ["softmax", "arpl"], ["auroc", "oscr", "macro_f1"])


def test_export_round_trips_and_tampering_is_detected(tmp_path, capsys):
    c = _comparison(tmp_path)
    out = tmp_path / "bundle.json"
    doc = export.write_export(out, export.export_doc(c))
    again = json.loads(out.read_text())
    assert again == doc
    export.validate_export(again)
    assert doc["osrbench_export"] == export.EXPORT_VERSION == 2 and doc["splits"] == [0, 1, 2]
    sm = doc["methods"]["softmax"]
    assert sm["config_hash"] == c.groups["softmax"].config_hash and sm["split_hashes"]["2"] == "hash-of-split-2"
    assert sm["metrics"]["auroc"]["mean"] == pytest.approx(c.summaries["auroc"]["softmax"].mean)
    assert sm["versions"] == VERSIONS and len(doc["paired"]) == 3
    assert cli.main(["export", "--validate", str(out)]) == 0
    assert "valid osrbench export" in capsys.readouterr().out

    bad = json.loads(out.read_text())
    bad["methods"]["softmax"]["metrics"]["auroc"]["per_split"]["0"] += 0.01
    with pytest.raises(export.ExportInvalid, match="content hash"):
        export.validate_export(bad)
    # Re-hashing an edited bundle does not help: the mean no longer follows from the values.
    bad["sha256"] = results.canonical_hash({k: v for k, v in bad.items() if k != "sha256"}, 64)
    with pytest.raises(export.ExportInvalid, match="mean/std do not follow") as exc:
        export.validate_export(bad)
    assert "content hash" not in str(exc.value) and "difference does not match" in str(exc.value)
    bad = json.loads(out.read_text())
    bad["methods"]["arpl"]["split_hashes"]["1"] = "other"
    bad["sha256"] = results.canonical_hash({k: v for k, v in bad.items() if k != "sha256"}, 64)
    with pytest.raises(export.ExportInvalid, match="split 1: method '(arpl|softmax)' ran on split hash .*'(arpl|softmax)' on"):
        export.validate_export(bad)
    out.write_text(json.dumps(bad))
    assert cli.main(["export", "--validate", str(out)]) == 2
    assert "invalid export" in capsys.readouterr().err
    with pytest.raises(export.ExportInvalid, match="missing"):
        export.validate_export({"osrbench_export": 1})


# -------------------------------------------------------------------------------------- plots


def test_roc_curve_area_equals_auroc():
    rng = np.random.default_rng(1)
    k, u = np.round(rng.normal(1, 1, 200), 1), np.round(rng.normal(0, 1, 150), 1)  # with ties
    fpr, tpr = plots.roc_curve(k, u)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.auroc(k, u), abs=1e-12)


def test_plots_are_written_and_are_png(tmp_path):
    c = _comparison(tmp_path / "runs")
    written = plots.comparison_plots(c, tmp_path / "img")
    names = sorted(p.name for p in written)
    expected = sorted([f"roc_split{k}.png" for k in range(3)]
                      + [f"hist_{m}_split{k}.png" for m in ("softmax", "arpl") for k in range(3)]
                      + [f"bars_{m}.png" for m in ("auroc", "oscr", "macro_f1")])
    assert names == expected
    for p in written:
        blob = p.read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000, p
        assert len(blob) < 150_000
    assert not list((tmp_path / "img").glob(".*"))  # no temporary files left


# ------------------------------------------------------------------------------------ rescore


def test_rescore_with_a_stored_score(tmp_path, capsys):
    rng = np.random.default_rng(2)
    recs = [make_record("softmax", k, 0, {}, root=tmp_path, scores_rng=rng) for k in range(3)]
    assert cli.main(["rescore", "--runs", str(tmp_path), "--score", "mls", "--write"]) == 0
    out = capsys.readouterr().out
    assert "AUROC main -> mls" in out and "msp" in out
    for rec in recs:
        with np.load(rec.dir / "scores.npz") as z:
            expect = metrics.auroc(z["known_score_mls"], z["unknown_score_mls"])
        doc = results.read_json(rec.dir / "metrics_mls.json")
        assert doc["metrics"]["auroc"] == pytest.approx(expect) and doc["main_score"] == "msp"
        assert doc["metrics"]["macro_f1"] == pytest.approx(rec.metrics["macro_f1"])  # rule unchanged
        assert doc["record"]["sha256"] == results.read_json(rec.dir / "result.json")["sha256"] == rec.sha256
    assert cli.main(["rescore", "--runs", str(tmp_path), "--score", "energy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no selected run stored a score 'energy' (available: mls, msp, score)" in err[0]


# ---------------------------------------------------------------------------- one real compare


def test_compare_end_to_end_plots_export_and_rescore_from_checkpoint(tmp_path, capsys):
    argv = ["compare", "softmax", "--dataset", "digits", "--splits", "0-1", "--epochs", "1", "--device", "cpu",
            "--quiet", "--out", str(tmp_path / "runs")]
    assert cli.main([*argv, "--plot", str(tmp_path / "img"), "--export", str(tmp_path / "b.json"),
                     "--metrics", "auroc,oscr"]) == 0
    out = capsys.readouterr().out
    assert "digits, protocol auroc, splits 0,1 (2)" in out and "AUROC, higher is better" in out
    assert {p.name for p in (tmp_path / "img").iterdir()} == {
        "roc_split0.png", "roc_split1.png", "hist_softmax_split0.png", "hist_softmax_split1.png",
        "bars_auroc.png", "bars_oscr.png", "classes_auroc.png",
        "roc_split0.csv", "roc_split1.csv", "hist_softmax_split0.csv", "hist_softmax_split1.csv"}  # the curves' data
    export.validate_export(json.loads((tmp_path / "b.json").read_text()))
    assert cli.main([*argv, "--no-run", "--metrics", "auroc"]) == 0  # reads, trains nothing
    assert capsys.readouterr().out.startswith("digits, protocol auroc")
    assert cli.main(["export", "softmax", "--dataset", "digits", "--splits", "0-1", "--epochs", "1",
                     "--out", str(tmp_path / "runs"), "-o", str(tmp_path / "c.json")]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    export.validate_export(c)
    stored = next(iter(records.iter_records(tmp_path / "runs")))
    next(stored.dir.glob("scores.npz")).unlink()
    assert cli.main(["rescore", "--runs", str(tmp_path / "runs"), "--score", "msp", "--write",
                     "--metrics", "auroc"]) == 0
    assert "checkpoint.pt" in capsys.readouterr().out
    doc = results.read_json(stored.dir / "metrics_msp.json")
    assert doc["source"] == "checkpoint.pt"
    for m in ("auroc", "oscr", "acc", "macro_f1"):
        assert doc["metrics"][m] == pytest.approx(stored.metrics[m], abs=1e-9)


def test_compare_with_jobs_trains_splits_at_once_and_reports_aggregate_throughput(tmp_path, capsys):
    argv = ["compare", "softmax", "--dataset", "digits", "--splits", "0-1", "--epochs", "1", "--device", "cpu",
            "--quiet", "--metrics", "auroc"]
    assert cli.main([*argv, "--jobs", "2", "--out", str(tmp_path / "pool")]) == 0
    cap = capsys.readouterr()
    line = next(l for l in cap.err.splitlines() if "aggregate" in l)
    images = sum(r.counts["train"] for r in records.iter_records(tmp_path / "pool"))
    assert "2 run(s) trained in 2 processes at once" in line and f"({images:,} images in" in line
    assert cli.main([*argv, "--jobs", "2", "--out", str(tmp_path / "pool")]) == 0
    assert "aggregate" not in capsys.readouterr().err  # nothing left to train


def _fake_run(out: Path, method: str, split: int, value: float, plugin=None) -> None:
    """A record where ``compare --no-run`` looks for it (no training, no data needed), made by the
    installed plugin of ``method`` unless ``plugin`` names another."""
    from osrbench import engine, plugins

    if plugin is None:
        info = plugins.get().plugin_of("method", method)
        plugin = {"name": info.name, "distribution": info.distribution, "version": info.version}
    p = engine.plan(engine.RunRequest(method, "cifar10", "osrci", split, 0, epochs=1, out=out))
    rec = make_record(method, split, 0, {"auroc": value}, dataset="cifar10", protocol="osrci", epochs=1,
                      plugin=plugin)
    rec = rec.replace(config=p.config, config_hash=p.config_hash, split_hash=p.split.hash)
    assert records.write_record(p.dir, rec).dir / records.RESULT == p.result_path


def test_compare_no_run_warns_about_and_drops_duplicate_splits(tmp_path, capsys):
    for k in range(5):
        _fake_run(tmp_path, "softmax", k, 0.80 + 0.01 * k)
        _fake_run(tmp_path, "arpl", k, 0.85 + 0.01 * k)
    argv = ["compare", "softmax", "arpl", "--dataset", "cifar10", "--protocol", "osrci", "--epochs", "1",
            "--no-run", "--out", str(tmp_path), "--metrics", "auroc"]
    assert cli.main(argv) == 0
    cap = capsys.readouterr()
    assert "split 1 has the same class sets as split 0" in cap.err and "note:" in cap.out
    assert "80.00" in cap.out and "81.00" in cap.out and "0/0/5" in cap.out
    assert cli.main([*argv, "--unique-splits", "--export", str(tmp_path / "u.json")]) == 0
    cap = capsys.readouterr()
    assert "warning" not in cap.err and "dropped split 1 (same class sets as split 0)" in cap.out
    assert "splits 0,2-4 (4)" in cap.out and "81.00" not in cap.out and "0/0/4" in cap.out
    assert "smallest attainable p is 0.125" in cap.out
    doc = json.loads((tmp_path / "u.json").read_text())
    export.validate_export(doc)
    assert doc["splits"] == [0, 2, 3, 4] and doc["dropped_duplicate_splits"] == {"1": 0} and doc["unique_splits"]
    assert doc["methods"]["arpl"]["metrics"]["auroc"]["mean"] == pytest.approx((0.85 + 0.87 + 0.88 + 0.89) / 4)


# --------------------------------------------------------------------- plugin identity in groups

V1 = {"name": "softmax", "distribution": "osrbench-softmax", "version": "0.1.0"}
V2 = {"name": "softmax", "distribution": "osrbench-softmax", "version": "0.2.0"}
IMPOSTOR = {"name": "evil", "distribution": "evil-softmax", "version": "0.1.0"}


def test_two_plugin_versions_get_two_report_rows_and_compare_refuses_to_average_them():
    old = [make_record("softmax", k, 0, {"auroc": v}, plugin=V1) for k, v in enumerate(AUROC)]
    new = [make_record("softmax", k, 0, {"auroc": 0.5}, plugin=V2) for k in range(5)]
    assert old[0].config_hash == new[0].config_hash  # same config: only the plugin version differs
    assert len(compare.group_records(old + new)) == 2
    cells = report.build_report(old + new, ["auroc"])
    assert len(cells) == 2
    assert [c.row for c in cells] == ["softmax (arpl-release; osrbench-softmax 0.1.0)",
                                      "softmax (arpl-release; osrbench-softmax 0.2.0)"]
    assert [round(c.metrics["auroc"].mean, 10) for c in cells] == [0.84, 0.5]
    md = report.format_md(cells, ["auroc"])
    assert "| softmax (arpl-release; osrbench-softmax 0.1.0) | 84.00 ± 3.16 |" in md
    assert "| softmax (arpl-release; osrbench-softmax 0.2.0) | 50.00 ± 0.00 |" in md
    assert {g["plugin"]["version"] for g in report.report_doc(cells, ["auroc"])["groups"]} == {"0.1.0", "0.2.0"}
    assert report.plugin_warnings(cells) == [
        "records of 'softmax' (protocol auroc) come from 2 different plugins (osrbench-softmax 0.1.0, "
        "osrbench-softmax 0.2.0); each has its own rows, never averaged together"]
    # A config difference and a plugin difference are both named.
    longer = [make_record("softmax", k, 0, {"auroc": 0.6}, plugin=V2, epochs=5) for k in range(5)]
    rows = sorted(c.row for c in report.build_report(old + longer, ["auroc"]))
    assert rows == ["softmax (arpl-release; epochs=2; osrbench-softmax 0.1.0)",
                    "softmax (arpl-release; epochs=5; osrbench-softmax 0.2.0)"]

    # compare: splits 0-2 of the old version, 3-4 of the new one.
    mixed = old[:3] + new[3:]
    with pytest.raises(compare.MixedPlugins) as exc:
        compare.build(mixed, ["softmax"], ["auroc"], installed={"softmax": ("osrbench-softmax", "0.2.0")})
    assert str(exc.value) == (
        "records of 'softmax' come from 2 versions of plugin osrbench-softmax (0.1.0: splits 0-2, seed 0; "
        "0.2.0: splits 3,4, seed 0); they are never averaged together: the installed plugin is "
        "osrbench-softmax 0.2.0: re-run the others with it (remove their run folders or "
        "`osrbench run ... --force`), or point --out at a folder holding one plugin's runs")
    assert isinstance(exc.value, compare.MixedConfigs)  # handled wherever a config mix is
    with pytest.raises(compare.MixedPlugins, match="re-run them all with the installed plugin"):
        compare.build(mixed, ["softmax"], ["auroc"])


def test_an_impostor_plugin_under_the_same_method_name_is_never_averaged_with_the_genuine_one(tmp_path, capsys):
    genuine = [make_record("softmax", k, 0, {"auroc": v}, plugin=V1, root=tmp_path / "a")
               for k, v in enumerate(AUROC)]
    impostor = [make_record("softmax", 0, 0, {"auroc": 0.99}, plugin=IMPOSTOR, root=tmp_path / "b")]
    assert genuine[0].config_hash == impostor[0].config_hash
    keys = list(compare.group_records(genuine + impostor))
    assert [k.plugin for k in keys] == [("osrbench-softmax", "0.1.0"), ("evil-softmax", "0.1.0")]
    with pytest.raises(compare.MixedPlugins, match=r"come from 2 different plugins \(evil-softmax 0.1.0: "
                                                   r"split 0, seed 0; osrbench-softmax 0.1.0: splits 0-4, seed 0\)"):
        compare.build(genuine + impostor, ["softmax"], ["auroc"])
    assert cli.main(["report", "--runs", str(tmp_path), "--metrics", "auroc"]) == 0
    cap = capsys.readouterr()
    assert "| softmax (arpl-release; osrbench-softmax 0.1.0) | 84.00 ± 3.16 |" in cap.out  # unchanged
    assert "| softmax (arpl-release; evil-softmax 0.1.0) | 99.00 ± - * |" in cap.out  # one split: no std
    assert "warning: records of 'softmax' (protocol auroc) come from 2 different plugins" in cap.err
    assert cli.main(["report", "--runs", str(tmp_path), "--format", "csv", "--metrics", "auroc"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted((r["plugin"], float(r["mean"])) for r in rows) == [
        ("evil-softmax 0.1.0", 0.99), ("osrbench-softmax 0.1.0", results.mean_std(AUROC)[0])]


def test_compare_cli_refuses_records_of_two_plugin_versions_in_one_line(monkeypatch, capsys):
    from osrbench import plugins

    info = plugins.get().plugin_of("method", "softmax")
    here = {"name": info.name, "distribution": info.distribution, "version": info.version}
    other = {**here, "version": here["version"] + ".post1"}
    found: list[Record] = []
    # Whatever the engine reads or trains: here splits 0-3 of the installed plugin, split 4 of another version.
    monkeypatch.setattr(report, "collect", lambda *a, **kw: (list(found), []))
    found[:] = [make_record("softmax", k, 0, {"auroc": 0.8 + 0.01 * k}, plugin=other if k == 4 else here)
                for k in range(5)]
    argv = ["compare", "softmax", "--dataset", "digits", "--no-run", "--metrics", "auroc"]
    assert cli.main(argv) == 2
    cap = capsys.readouterr()
    v, dist = here["version"], here["distribution"]
    assert cap.err.splitlines() == [
        f"osrbench: error: records of 'softmax' come from 2 versions of plugin {dist} ({v}: splits 0-3, seed 0; "
        f"{v}.post1: split 4, seed 0); they are never averaged together: the installed plugin is {dist} {v}: "
        "re-run the others with it (remove their run folders or `osrbench run ... --force`), or point --out at "
        "a folder holding one plugin's runs"]
    assert cap.out == ""  # no table of averaged numbers
    # An impostor distribution under the same method name: refused the same way.
    found[0] = found[0].replace(plugin={"name": "evil", "distribution": "evil-softmax", "version": v})
    found[4] = found[4].replace(plugin=here)
    assert cli.main(argv) == 2
    assert f"come from 2 different plugins (evil-softmax {v}: split 0, seed 0; {dist} {v}: splits 1-4, seed 0)" \
        in capsys.readouterr().err
    # All of one other version: compared (nothing is mixed), saying it is not the installed plugin's.
    found[:] = [r.replace(plugin=other) for r in found]
    assert cli.main(argv) == 0
    cap = capsys.readouterr()
    line = f"records of 'softmax' were made by plugin {dist} {v}.post1, the installed one is {dist} {v}"
    assert f"note: {line}" in cap.out and f"warning: {line}" in cap.err


def test_export_records_the_plugin_and_validate_checks_it_across_runs(tmp_path):
    c = _comparison(tmp_path)
    doc = export.write_export(tmp_path / "bundle.json", export.export_doc(c))
    export.validate_export(doc)
    sm = doc["methods"]["softmax"]
    assert sm["plugin"] == {"distribution": "d", "version": "1"}
    assert [r["plugin"] for r in sm["runs"]] == [{"distribution": "d", "version": "1"}] * 3

    def rehash(d):
        d["sha256"] = results.canonical_hash({k: v for k, v in d.items() if k != "sha256"}, 64)
        return d

    bad = json.loads((tmp_path / "bundle.json").read_text())
    bad["methods"]["softmax"]["runs"][1]["plugin"]["version"] = "2"
    with pytest.raises(export.ExportInvalid, match=r"method 'softmax': made by plugin d 1, but not every run was "
                                                   r"\(split 1 seed 0: d 2\)"):
        export.validate_export(rehash(bad))
    bad = json.loads((tmp_path / "bundle.json").read_text())
    bad["methods"]["arpl"]["plugin"] = {"distribution": "evil", "version": "1"}
    with pytest.raises(export.ExportInvalid, match=r"method 'arpl': made by plugin evil 1, but not every run was "
                                                   r"\(split 0 seed 0: d 1; split 1 seed 0: d 1; split 2 seed 0: d 1; "
                                                   r"versions: d 1\)"):
        export.validate_export(rehash(bad))
    bad = json.loads((tmp_path / "bundle.json").read_text())
    del bad["methods"]["arpl"]["plugin"]
    with pytest.raises(export.ExportInvalid, match="method 'arpl': field 'plugin' missing"):
        export.validate_export(rehash(bad))
    # A version-1 bundle (written before bundles named plugins) still validates, without them.
    old = json.loads((tmp_path / "bundle.json").read_text())
    old["osrbench_export"] = 1
    for m in old["methods"].values():
        del m["plugin"]
        for r in m["runs"]:
            del r["plugin"]
    export.validate_export(rehash(old))
    old["osrbench_export"] = 3
    with pytest.raises(export.ExportInvalid, match="osrbench_export must be 1 or 2, got 3"):
        export.validate_export(rehash(old))
