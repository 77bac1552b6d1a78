"""The public names: ``osrbench.__all__`` is what the README lists, and each one resolves."""

from __future__ import annotations

import re
from pathlib import Path

import osrbench

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_lists_exactly_osrbench_all():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| `osrbench/__init__.py` |"))
    listed = set(re.findall(r"`([A-Za-z_]+)`", row.split("|")[2]))
    assert listed == set(osrbench.__all__), f"README lists {sorted(listed)}, __all__ is {sorted(osrbench.__all__)}"


def test_every_public_name_resolves():
    for name in osrbench.__all__:
        assert getattr(osrbench, name) is not None, name
    assert issubclass(osrbench.NotApplicable, Exception)  # what a scorer raises for "not for this method"
