"""The README's demo tables are the demo's output (issue 36, part 6).

The block between ``<!-- demo-output: ... -->`` and ``<!-- /demo-output -->`` in README.md (and its
copy in docs/REPORTING.md) is what ``osrbench compare ... --no-run`` prints over the records
``make demo`` writes. The suite checks it three ways, cheapest first:

- both copies are the same text, and its numbers follow from one another (means and stds from the
  per-split values, the paired differences from the rows);
- one of its runs (softmax, split 0: seconds on a CPU) is trained again and gives the block's
  AUROC, OSCR and run folder hash;
- ``make demo-check`` (CI) runs the whole demo and sets ``OSRBENCH_DEMO_RUNS``: the block must
  then equal the command's output character for character.

A change that moves the demo's numbers fails the second check in ``make test``; regenerate the
block with ``make demo-check`` and copy the printed table in.
"""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path

import pytest

from osrbench import cli, records
from osrbench.records import folder_hash

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- demo-output:.*?-->\n(.*?)\n<!-- /demo-output -->", re.S)
#: The demo's comparison as the README prints it (``make demo`` trains it with --metrics auroc,oscr,acc).
DEMO = ["compare", "softmax", "arpl-cs", "dias", "--dataset", "digits", "--splits", "0-4", "--epochs", "2",
        "--metrics", "auroc,oscr", "--format", "github", "--no-run"]


def _block(path: Path) -> str:
    found = BLOCK.findall(path.read_text(encoding="utf-8"))
    assert len(found) == 1, f"{path}: expected one demo-output block"
    return found[0]


def _rows(block: str, title: str) -> dict[str, list[str]]:
    """``method -> cells`` of the metric table under ``**title**`` (the first table after it)."""
    lines = block[block.index(f"**{title}"):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_the_readme_and_reporting_md_show_the_same_demo_output():
    assert _block(ROOT / "README.md") == _block(ROOT / "docs" / "REPORTING.md")


@pytest.mark.parametrize("title", ["AUROC", "OSCR"])
def test_the_demo_tables_follow_from_their_per_split_values(title):
    rows = _rows(_block(ROOT / "README.md"), title)
    assert set(rows) == {"softmax", "arpl-cs", "dias"}
    per = {m: [float(x) for x in cells[1:]] for m, cells in rows.items()}
    for m, cells in rows.items():
        mean, std = (float(x) for x in cells[0].split("+-"))
        assert mean == pytest.approx(statistics.mean(per[m]), abs=0.006), m  # per-split values are rounded
        assert std == pytest.approx(statistics.stdev(per[m]), abs=0.02), m


def test_a_demo_run_trained_again_gives_the_readme_s_numbers(tmp_path):
    out = tmp_path / "runs"
    assert cli.main(["run", "--method", "softmax", "--dataset", "digits", "--split", "0", "--epochs", "2",
                     "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    rec = records.read_record(next(out.rglob(records.RESULT)))
    block = _block(ROOT / "README.md")
    for title, metric in (("AUROC", "auroc"), ("OSCR", "oscr")):
        assert _rows(block, title)["softmax"][1] == f"{100 * rec.metrics[metric]:.2f}", title  # split 0
    config_row = next(line for line in block.splitlines() if line.startswith("| softmax  | arpl-release"))
    assert f"| {folder_hash(rec)} " in config_row


@pytest.mark.skipif(not os.environ.get("OSRBENCH_DEMO_RUNS"),
                    reason="the whole demo (15 runs): make demo-check sets OSRBENCH_DEMO_RUNS")
def test_the_readme_block_is_the_demo_s_output(capsys):
    capsys.readouterr()
    assert cli.main([*DEMO, "--out", os.environ["OSRBENCH_DEMO_RUNS"]]) == 0
    out = capsys.readouterr().out
    print(out)  # the table to copy into the README when it moved
    assert out.rstrip("\n") == _block(ROOT / "README.md")
