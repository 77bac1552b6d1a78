"""The statistics on real digits runs, through the CLI: compare --ci / --by-class / --std / --plot,
report --ranks / --plot, and their exports and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from osrbench import cli, export, records

METHODS = ("softmax", "arpl-cs", "dias")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """softmax, arpl-cs and dias at 1 epoch: digits/auroc splits 0-1 x seeds 0-1, digits/f1 split 0."""
    out = tmp_path_factory.mktemp("runs")
    common = ["--dataset", "digits", "--epochs", "1", "--out", str(out), "--quiet", "--jobs", "2"]
    assert cli.main(["compare", *METHODS, *common, "--splits", "0-1", "--seeds", "0-1"]) == 0
    assert cli.main(["compare", *METHODS, *common, "--protocol", "f1", "--splits", "0"]) == 0
    return out


def _compare(runs, *flags):
    return ["compare", *METHODS, "--dataset", "digits", "--splits", "0-1", "--seeds", "0-1", "--epochs", "1",
            "--out", str(runs), "--no-run", "--quiet", *flags]


def test_compare_statistics_sections_plots_and_export(runs, tmp_path, capsys):
    argv = _compare(runs, "--metrics", "auroc,macro_f1", "--ci", "--resamples", "50", "--by-class",
                    "--plot", str(tmp_path / "img"), "--export", str(tmp_path / "b.json"))
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for section in ("p Wilcoxon (Holm)", "split vs seed variance", "seeds needed (2 splits)",
                    "AUROC: 95% intervals", "split 1 (paired bootstrap)", "AUROC per unknown class",
                    "AUROC per known class"):
        assert section in out, section
    assert (tmp_path / "img" / "classes_auroc.png").stat().st_size > 10_000
    doc = json.loads((tmp_path / "b.json").read_text())
    export.validate_export(doc)
    assert doc["intervals"]["resamples"] == 50 and set(doc["intervals"]["split_bootstrap"]) == {"auroc", "macro_f1"}
    # every unknown class of the two splits appears, with the split count it was unknown in
    recs = [r for r in records.iter_records(runs) if r.protocol == "auroc" and r.method == "dias"]
    expect = {}
    for k in (0, 1):
        for u in next(r for r in recs if r.split == k).unknown_classes:
            expect[str(u)] = expect.get(str(u), 0) + 1
    assert {u: v["splits"] for u, v in doc["classes"]["unknown"]["dias"].items()} == expect
    pair = doc["variance"]["auroc"]["pairs"]["softmax - arpl-cs"]
    assert pair["seed_var"] >= 0 and pair["seeds_now"] == 2


def test_the_same_ci_seed_gives_the_same_intervals(runs, capsys):
    texts = []
    for seed in ("4", "4", "5"):
        assert cli.main(_compare(runs, "--metrics", "auroc", "--ci", "--resamples", "40", "--ci-seed", seed)) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] != texts[2]


def test_std_ddof0_is_labelled_and_smaller(runs, capsys):
    assert cli.main(_compare(runs, "--metrics", "auroc", "--std", "ddof0", "--splits", "0-1")) == 0
    out0 = capsys.readouterr().out
    assert cli.main(_compare(runs, "--metrics", "auroc")) == 0
    out1 = capsys.readouterr().out
    assert "population std (ddof 0, as OpenOOD and the MLS code report it" in out0
    assert "sample std (ddof 1)" in out1

    def stds(text):
        table = text.split("AUROC, higher is better")[1].split("\n\n")[0].splitlines()[3:]
        return [float(line.split("+-")[1].split()[0]) for line in table]

    for s0, s1 in zip(stds(out0), stds(out1)):  # 2 splits: ddof 0 is ddof 1 / sqrt(2)
        assert s0 == pytest.approx(s1 / math.sqrt(2), abs=0.006)


def test_report_ranks_and_cd_diagram(runs, tmp_path, capsys):
    argv = ["report", "--runs", str(runs), "--metrics", "auroc,macro_f1", "--ranks", "--plot", str(tmp_path / "cd")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Ranks over datasets and protocols" in out and "over 2 blocks (digits/auroc, digits/f1)" in out
    assert "Friedman chi2" in out and "Nemenyi CD = " in out
    assert {p.name for p in (tmp_path / "cd").iterdir()} == {"cd_auroc.png", "cd_macro_f1.png"}
    assert cli.main(["report", "--runs", str(runs), "--metrics", "auroc", "--ranks", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ranks = doc["ranks"][0]
    assert ranks["metric"] == "auroc" and ranks["blocks"] == ["digits/auroc", "digits/f1"]
    assert sum(ranks["mean_ranks"].values()) == pytest.approx(6.0)  # ranks 1..3 in each block
    # the ranks follow the report's means: in each block the best mean gets rank 1
    means = {(g["dataset"], g["protocol"], f"{g['method']} ({g['recipe']})"): g["metrics"]["auroc"]["mean"]
             for g in doc["groups"]}
    for block in (("digits", "auroc"), ("digits", "f1")):
        row = {m: v for (d, p, m), v in means.items() if (d, p) == block}
        assert len(row) == 3
    best_everywhere = [m for m in ranks["methods"]
                       if all(means[(*b, m)] == max(v for (d, p, _), v in means.items() if (d, p) == b)
                              for b in (("digits", "auroc"), ("digits", "f1")))]
    for m in best_everywhere:
        assert ranks["mean_ranks"][m] == 1.0


@pytest.mark.parametrize("flags, message", [
    (["--ci", "--resamples", "0"], "--resamples 0 is too few for --level 0.95"),
    (["--ci", "--level", "1.5"], "--level must be a confidence level in (0, 1)"),
    (["--resolve", "0"], "--resolve must be a difference in % points in (0, 100]"),
])
def test_bad_statistics_flags_are_one_line(runs, capsys, flags, message):
    assert cli.main(_compare(runs, *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_report_ranks_refuses_csv_and_a_run_without_scores_file_is_not_compared(runs, tmp_path, capsys):
    assert cli.main(["report", "--runs", str(runs), "--ranks", "--format", "csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ranks goes with --format md or json" in err[0]
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs, copy)
    victim = next(r for r in records.iter_records(copy) if r.method == "dias" and r.protocol == "auroc")
    (victim.dir / records.SCORES).unlink()
    argv = _compare(copy, "--metrics", "auroc", "--by-class")
    assert cli.main(argv) == 1  # its metrics cannot be verified: a missing run (--no-run), said why
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{victim.dir / records.RESULT}: its metrics cannot be verified" in err
    assert "no scores file" in err


def test_per_split_intervals_bracket_the_table_values(runs, tmp_path):
    from osrbench import analysis, compare

    recs = [r for r in records.iter_records(runs) if r.protocol == "auroc"]
    c = compare.build(recs, list(METHODS), ["auroc", "oscr", "macro_f1"])
    iv = analysis.intervals(c, 100, seed=0)
    for metric in c.metrics:
        for m, by in iv.split[metric].items():
            for k, i in by.items():
                assert i.low - 1e-12 <= c.summaries[metric][m].per_split[k] <= i.high + 1e-12, (metric, m, k)
                assert np.isfinite([i.low, i.high]).all()
