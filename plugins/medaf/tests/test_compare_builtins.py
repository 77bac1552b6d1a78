"""All nine built-in methods compared on digits through the command line (1 epoch, split 0)."""

from __future__ import annotations

import math
import re

import pytest

from osrbench import cli, plugins, records

NINE = ("softmax", "openmax", "gcpl", "rpl", "arpl", "arpl-cs", "dias", "cac", "medaf")


def test_compare_of_the_nine_builtin_methods_on_digits(tmp_path, capsys):
    missing = [m for m in NINE if m not in plugins.get().methods]
    if missing:
        pytest.skip(f"plugins not installed: {', '.join(missing)}")
    argv = ["compare", *NINE, "--dataset", "digits", "--epochs", "1", "--splits", "0", "--out", str(tmp_path),
            "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    recs = {r.method: r for r in records.iter_records(tmp_path)}
    assert sorted(recs) == sorted(NINE)
    auroc = out[out.index("AUROC, higher is better"):]
    for name in NINE:
        rec = recs[name]
        assert rec.epochs == 1 and rec.split == 0 and math.isfinite(rec.metrics["auroc"]), name
        assert rec.recipe == plugins.get().method(name).default_recipe
        # the table's row shows the record's AUROC in %
        row = re.search(rf"^{re.escape(name)}\s+([0-9.]+) \+- -\s+([0-9.]+)\s*$", auroc, re.MULTILINE)
        assert row and float(row[2]) == pytest.approx(100 * rec.metrics["auroc"], abs=0.006), name
    # one call of compare again trains nothing: every record is reused
    assert cli.main([*argv, "--no-run"]) == 0
