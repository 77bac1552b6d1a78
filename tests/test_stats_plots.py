"""plots.plot_cd / plots.plot_class_heatmap: PNGs of the rank test and the per-class breakdown."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from osrbench import analysis, plots, stats

pytest.importorskip("matplotlib")


def _ranks(table, methods) -> analysis.Ranks:
    t = np.asarray(table, dtype=np.float64)
    fr = stats.friedman(t, methods)
    return analysis.Ranks("auroc", [("auroc", f"d{i}") for i in range(t.shape[0])], t, fr,
                          stats.rank_posthoc(fr), [])


def _png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 200
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 1  # not blank
    return img


# 8 blocks x 5 methods: a clearly best, e clearly worst, b/c/d in between
TABLE = [[0.95, 0.90, 0.91, 0.80, 0.70], [0.94, 0.92, 0.89, 0.85, 0.71], [0.96, 0.88, 0.90, 0.87, 0.69],
         [0.93, 0.91, 0.86, 0.88, 0.72], [0.92, 0.90, 0.91, 0.86, 0.74], [0.95, 0.87, 0.89, 0.90, 0.70],
         [0.94, 0.92, 0.90, 0.85, 0.71], [0.97, 0.89, 0.91, 0.84, 0.73]]
METHODS = ["b_mid", "a_best", "c_mid", "d_mid", "e_worst"]  # columns reordered: the best is not index 0
COLS = [1, 0, 2, 3, 4]


def test_cd_layout_best_on_the_left_and_the_cliques_of_stats():
    r = _ranks(np.asarray(TABLE)[:, COLS], METHODS)
    mr, cd = r.result.mean_ranks, r.result.cd
    assert mr[1] == 1.0 and mr[4] == 5.0 and math.isfinite(cd)
    lay = plots._cd_layout(mr, cd)
    assert lay.left[0] == 1 and lay.right[0] == 4  # best on top of the left, worst on top of the right
    assert sorted(lay.left + lay.right) == list(range(5)) and len(lay.left) == 3
    assert all(mr[i] <= mr[j] for i in lay.left for j in lay.right)
    expected = stats.cliques(mr, cd)
    assert expected and [g for g, _ in lay.bars] == expected
    for (g, row), (h, row2) in zip(lay.bars, lay.bars[1:]):  # bars sharing a row do not overlap
        if row == row2:
            assert mr[g[-1]] < mr[h[0]]
    assert plots._cd_layout(mr, math.nan).bars == []
    assert [(sorted(g), row) for g, row in plots._cd_layout(mr, 10.0).bars] == [([0, 1, 2, 3, 4], 0)]  # one bar


def test_cd_layout_packs_disjoint_cliques_in_one_row():
    lay = plots._cd_layout([1.0, 1.2, 3.0, 3.2], 0.5)
    assert lay.bars == [([0, 1], 0), ([2, 3], 0)]
    lay = plots._cd_layout([1.0, 1.5, 2.0], 0.6)
    assert [row for _, row in lay.bars] == [0, 1]


def test_plot_cd_writes_a_png(tmp_path):
    r = _ranks(np.asarray(TABLE)[:, COLS], METHODS)
    _png(plots.plot_cd(r, tmp_path / "cd.png", "AUROC ranks"))


@pytest.mark.parametrize("k", [2, 12])
def test_plot_cd_two_and_many_methods(tmp_path, k):
    rng = np.random.default_rng(k)
    r = _ranks(rng.normal(size=(6, k)) + np.linspace(1, 0, k), [f"method_{i}" for i in range(k)])
    _png(plots.plot_cd(r, tmp_path / f"cd{k}.png", f"{k} methods"))


def test_plot_cd_without_a_critical_difference(tmp_path):
    r = _ranks(TABLE[:3], METHODS)
    r = dataclasses.replace(r, result=dataclasses.replace(r.result, cd=math.nan))
    _png(plots.plot_cd(r, tmp_path / "nan.png", "no CD"))
    assert not list(tmp_path.glob(".*"))  # atomic write left no temporary file


def _breakdown(n_unknown, n_known, methods=("softmax", "openmax", "arpl")):
    rng = np.random.default_rng(n_unknown)
    unknown = {m: {c: (float(rng.uniform(0.6, 1.0)), 3) for c in range(n_unknown)} for m in methods}
    known = {m: {c: (float(rng.uniform(0.7, 1.0)), 2) for c in range(100, 100 + n_known)} for m in methods}
    return analysis.ClassBreakdown(unknown, known)


def test_class_matrix_in_percent_with_nan_for_missing_cells():
    b = _breakdown(4, 3)
    del b.unknown["openmax"][2]
    m = plots._class_matrix(b.unknown, b.classes("unknown"))
    assert m.shape == (3, 4)
    assert np.isnan(m[1, 2]) and np.isfinite(np.delete(m.ravel(), 6)).all()
    assert m[0, 0] == pytest.approx(100 * b.unknown["softmax"][0][0])
    assert plots._class_matrix({}, []).shape == (0, 0)


def test_plot_class_heatmap(tmp_path):
    b = _breakdown(10, 10, ("softmax", "openmax", "arpl", "arpl_cs", "energy", "mls", "cross_entropy_long"))
    del b.unknown["arpl"][3], b.known["mls"][104]
    img = _png(plots.plot_class_heatmap(b, tmp_path / "classes.png", "per-class AUROC"))
    assert img.shape[1] > 600


def test_plot_class_heatmap_many_classes_and_an_empty_role(tmp_path):
    _png(plots.plot_class_heatmap(_breakdown(180, 20), tmp_path / "tiny.png", "tiny"))
    b = _breakdown(5, 0)
    b.known.clear()
    _png(plots.plot_class_heatmap(b, tmp_path / "half.png", "no known"))
