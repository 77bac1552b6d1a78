"""Plugin loading: isolation of broken plugins, allow/block lists, duplicate names."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from osrbench import plugins

GOOD = """
import osrbench
from osrbench_softmax.plugin import DEFAULTS, Softmax

@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="{method}", factory=Softmax, defaults=DEFAULTS))
"""
BAD_IMPORT = "raise ImportError('needs a package that is not installed')\n"
BAD_HOOK = """
import osrbench

@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="half-registered", factory=object))
    raise RuntimeError("registration exploded")
"""


def _dist(site, dist, ep_name, module, source):
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[osrbench]\n{ep_name} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    yield path
    importlib.invalidate_caches()


def test_broken_plugins_are_reported_and_the_good_ones_load(site):
    _dist(site, "goodplug", "goodplug", "goodplug_mod", GOOD.format(method="toy-msp"))
    _dist(site, "brokenimport", "brokenimport", "brokenimport_mod", BAD_IMPORT)
    _dist(site, "brokenhook", "brokenhook", "brokenhook_mod", BAD_HOOK)
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert "needs a package that is not installed" in reg.infos["brokenimport"].error
    assert "registration exploded" in reg.infos["brokenhook"].error
    assert "half-registered" not in reg.methods  # a failing hook registers nothing
    assert reg.infos["goodplug"].error is None and reg.infos["goodplug"].methods == ["toy-msp"]
    assert reg.infos["goodplug"].distribution == "goodplug" and reg.infos["goodplug"].version == "1.0"
    assert {"softmax", "toy-msp"} <= set(reg.methods)


def test_allow_and_block_lists(site, monkeypatch):
    _dist(site, "goodplug", "goodplug", "goodplug_mod", GOOD.format(method="toy-msp"))
    importlib.invalidate_caches()
    monkeypatch.setenv("OSRBENCH_PLUGINS", "goodplug")
    reg = plugins.Plugins()
    assert "toy-msp" in reg.methods and "softmax" not in reg.methods
    monkeypatch.setenv("OSRBENCH_PLUGINS", "")
    assert set(plugins.Plugins().infos) == {"osrbench"}  # empty allow list = no external plugin
    monkeypatch.delenv("OSRBENCH_PLUGINS")
    monkeypatch.setenv("OSRBENCH_DISABLE_PLUGINS", "goodplug")
    reg = plugins.Plugins()
    assert "toy-msp" not in reg.methods and "softmax" in reg.methods


def test_duplicate_method_names_name_both_plugins(site):
    _dist(site, "copycatplug", "zz-copy", "copycat_mod", GOOD.format(method="softmax"))
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert "also registered by plugin 'softmax'" in reg.infos["zz-copy"].error
    with pytest.raises(plugins.UnknownName, match=r"registered by two plugins, 'softmax' and 'zz-copy'"):
        reg.method("softmax")


def test_cli_lists_a_broken_plugin_and_still_runs_the_good_one(site, tmp_path):
    _dist(site, "brokenimport", "brokenimport", "brokenimport_mod", BAD_IMPORT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "osrbench.cli", "plugins", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    infos = {i["name"]: i for i in json.loads(out)}
    assert infos["brokenimport"]["error"].startswith("failed to load: ImportError")
    run = subprocess.run([sys.executable, "-m", "osrbench.cli", "run", "--method", "softmax", "--dataset", "digits",
                          "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "runs")],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "auroc" in run.stdout
