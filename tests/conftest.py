"""Shared fixtures: a fresh plugin registry per test and small engine requests on digits."""

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
