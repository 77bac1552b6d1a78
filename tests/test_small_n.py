"""Statistics honest at small n (issue 36, part 5), with hand-computed cases.

Two splits give a paired t-test one degree of freedom (p 0.000255 beside a Wilcoxon p that cannot
go below 0.5): the table says ``n/a (df 1)`` and why. Two blocks that rank two methods alike put
Friedman's chi2 at its maximum, where Iman-Davenport's F divides by zero: ``n/a``, never ``inf`` and
``p < 0.0001``. The hash a compare table shows is the one in the run folder's name.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from osrbench import analysis, compare, results, stats
from osrbench.config import config_hash, resume_key
from osrbench.records import folder_hash
from osrbench.records import Record


def make_record(method: str, split: int, seed: int, values: dict, dir: Path | None = None) -> Record:
    cfg = {"epochs": 2, "batch_size": 64, "lr": 0.1}
    return Record(method=method, dataset="digits", protocol="auroc", split=split, seed=seed, recipe="r",
                  config=cfg, config_hash=config_hash(method, cfg), split_hash=f"split-{split}", metrics=values,
                  plugin={"name": "p", "distribution": "d", "version": "1"},
                  counts={"train": 6, "known": 6, "unknown": 4}, wall_time_s={"train": 1.0, "eval": 0.1}, dir=dir)


def test_two_blocks_of_two_methods_give_chi2_2_and_no_infinite_f():
    # ranks (higher is better): a = 1, b = 2 in both blocks; rank sums 2 and 4
    # chi2 = 12 / (n k (k + 1)) * (2^2 + 4^2) - 3 n (k + 1) = 12 / 12 * 20 - 18 = 2, df 1: p = erfc(1)
    fr = stats.friedman(np.array([[0.9, 0.8], [0.7, 0.6]]), ["a", "b"])
    assert fr.chi2 == pytest.approx(2.0) and fr.p_chi2 == pytest.approx(math.erfc(1.0))
    # Iman-Davenport: F = (n - 1) chi2 / (n (k - 1) - chi2) = 1 * 2 / (2 - 2): undefined
    assert math.isnan(fr.f) and math.isnan(fr.p_f)
    ranks = analysis.Ranks("auroc", [("auroc", "digits"), ("auroc", "mnist")], np.zeros((2, 2)), fr,
                           stats.rank_posthoc(fr), [])
    text = analysis.render_ranks([ranks])
    assert "Friedman chi2 = 2.000 (df 1), p = 0.157" in text
    assert "Iman-Davenport F = n/a (undefined" in text
    assert "inf" not in text and "0.0001" not in text


def test_iman_davenport_where_it_is_defined_is_unchanged():
    # three blocks, two methods, ranks (1, 2), (1, 2), (2, 1): sums 4, 5
    # chi2 = 12 / (3 * 2 * 3) * (16 + 25) - 3 * 3 * 3 = 41 * 2 / 3 - 27 = 1/3; F = 2 * (1/3) / (3 - 1/3) = 0.25
    fr = stats.friedman(np.array([[0.9, 0.8], [0.7, 0.6], [0.5, 0.55]]), ["a", "b"])
    assert fr.chi2 == pytest.approx(1 / 3) and fr.f == pytest.approx(0.25)
    assert "Iman-Davenport F = 0.250, p = " in analysis.render_ranks(
        [analysis.Ranks("auroc", [("p", "d1"), ("p", "d2"), ("p", "d3")], np.zeros((3, 2)), fr,
                        stats.rank_posthoc(fr), [])])


def test_a_paired_t_test_on_two_splits_is_not_shown_and_the_table_says_why():
    # differences +0.100 and +0.101: t = 0.1005 / (0.000707 / sqrt 2) = 201, df 1: p = 0.00317
    a = [make_record("softmax", k, 0, {"auroc": v}) for k, v in enumerate([0.9, 0.801])]
    b = [make_record("arpl", k, 0, {"auroc": v}) for k, v in enumerate([0.8, 0.7])]
    t, p = compare.paired_t([0.1, 0.101])
    assert t == pytest.approx(0.1005 / (math.sqrt(0.0000005) / math.sqrt(2)))
    assert p == pytest.approx(2 * (0.5 - math.atan(t) / math.pi))  # Student t with 1 df is Cauchy
    text = compare.render(a + b, ["softmax", "arpl"], metrics=["auroc"])
    row = next(line for line in text.splitlines() if line.startswith("softmax - arpl"))
    assert "n/a (df 1)" in row and f"{p:.3g}" not in row
    assert "not shown with 2 splits: one degree of freedom" in text
    assert stats.p_t_text(p, 3) == f"{p:.3g}" and stats.p_t_text(math.nan, 3) == "n/a"


def test_the_hash_a_compare_table_shows_is_the_run_folder_s(tmp_path):
    rec = make_record("softmax", 0, 0, {"auroc": 0.8})
    folder = results.run_dir(tmp_path, "softmax", "digits", "auroc", 0, 0, resume_key("softmax", rec.config))
    rec = rec.replace(dir=folder)  # where the engine puts it (engine.plan: the resume key)
    assert folder_hash(rec) == Path(rec.dir).name.rsplit("-", 1)[-1]
    assert folder_hash(rec.replace(dir=None)) == resume_key("softmax", rec.config)[:10]
    assert folder_hash(rec) != rec.config_hash[:10]  # the config hash covers the epochs too
    text = compare.render([rec], ["softmax"], metrics=["auroc"])
    assert "run folder hash" in text and folder_hash(rec) in text and rec.config_hash[:10] not in text
