"""Fixtures shared by every test directory (tests/, plugins/*/tests, examples/*/tests): a fresh
plugin registry per test. At the repository root so pytest loads it for all of them."""

from __future__ import annotations

import pytest

from osrbench import plugins


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    """Every test sees the installed plugins as the environment says, loaded anew."""
    monkeypatch.delenv("OSRBENCH_PLUGINS", raising=False)
    monkeypatch.delenv("OSRBENCH_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()
