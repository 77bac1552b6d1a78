"""The baselines of an OSR paper's table, every built-in method over the five digits splits, at smoke scale."""

from __future__ import annotations

import math

from osrbench import cli, records

#: The table of DIAS's paper: Softmax, OpenMax, GCPL, RPL, ARPL, ARPL+CS, DIAS.
METHODS = ("softmax", "openmax", "gcpl", "rpl", "arpl", "arpl-cs", "dias")


def test_compare_runs_every_builtin_baseline_on_five_digits_splits(tmp_path, capsys):
    argv = ["compare", *METHODS, "--dataset", "digits", "--splits", "0-4", "--epochs", "1", "--out", str(tmp_path),
            "--jobs", "2", "--metrics", "auroc,oscr,macro_f1", "--quiet"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    auroc = text.split("AUROC, higher is better")[1].split("\n\n")[0]
    assert [line.split()[0] for line in auroc.splitlines()[3:]] == list(METHODS)
    recs = list(records.iter_records(tmp_path))
    assert sorted((r.method, r.split) for r in recs) == sorted((m, k) for m in METHODS for k in range(5))
    assert all(math.isfinite(r.metrics["auroc"]) and math.isfinite(r.metrics["macro_f1"]) for r in recs)
    # openmax trains softmax's network: on every split the two runs' logits are the same
    by = {(r.method, r.split): r for r in recs}
    for k in range(5):
        a, b = by["softmax", k], by["openmax", k]
        assert (records.read_scores(a.dir, a).known_logits == records.read_scores(b.dir, b).known_logits).all()
