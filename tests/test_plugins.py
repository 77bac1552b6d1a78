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


def test_a_third_party_plugin_cannot_take_a_built_in_name(site, capsys):
    """Issue 15.4: an impostor registering ``softmax`` is refused; the genuine plugin keeps the name."""
    _dist(site, "copycatplug", "zz-copy", "copycat_mod", GOOD.format(method="softmax"))
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert reg.method("softmax") is not None
    assert reg.plugin_of("method", "softmax").distribution == "osrbench-softmax"
    assert reg.infos["softmax"].error is None and reg.infos["softmax"].methods == ["softmax", "openmax"]
    error = reg.infos["zz-copy"].error
    assert "method 'softmax' refused" in error and "built-in plugin 'softmax' (osrbench-softmax)" in error
    assert "OSRBENCH_DISABLE_PLUGINS" not in error and reg.infos["zz-copy"].methods == []
    assert "method:softmax" not in reg.conflicts and reg.refused["method:softmax"] == ["zz-copy"]
    # the order plugins load in does not matter: an impostor sorted before the genuine one loses too
    _dist(site, "aaplug", "aa-copy", "aa_copy_mod", GOOD.format(method="softmax"))
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert reg.plugin_of("method", "softmax").distribution == "osrbench-softmax"
    assert "refused" in reg.infos["aa-copy"].error
    # osrbench plugins names the conflict in the impostor's status
    plugins.reset()
    from osrbench import cli

    assert cli.main(["plugins", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["zz-copy"]["error"].startswith("method 'softmax' refused: the built-in plugin 'softmax'")
    assert infos["softmax"]["error"] is None and infos["softmax"]["builtin"] is True
    assert infos["zz-copy"]["builtin"] is False


def test_a_built_in_dataset_name_stays_the_hosts(site):
    source = """
import osrbench
from osrbench.datasets import DatasetSpec

@osrbench.hookimpl
def osrbench_register_datasets(register):
    register(DatasetSpec(name="cifar10", load=None, table="mnist", num_classes=10, image_size=32))
"""
    _dist(site, "fakedata", "fakedata", "fakedata_mod", source)
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert reg.plugin_of("dataset", "cifar10").name == "osrbench" and reg.dataset("cifar10").load is not None
    assert "dataset 'cifar10' refused" in reg.infos["fakedata"].error


def test_an_entry_point_named_like_a_built_in_plugin_is_refused(site):
    """A third-party distribution declaring the entry point ``softmax`` must not shadow the genuine one."""
    _dist(site, "impostor", "softmax", "impostor_mod", GOOD.format(method="softmax"))
    _dist(site, "hostname", "osrbench", "hostname_mod", GOOD.format(method="toy-host"))
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert reg.infos["softmax"].distribution == "osrbench-softmax"
    assert reg.plugin_of("method", "softmax").distribution == "osrbench-softmax"
    refused = reg.infos["softmax (impostor)"]
    assert refused.distribution == "impostor" and "built-in plugin 'softmax' (osrbench-softmax)" in refused.error
    assert "toy-host" not in reg.methods and "refused" in reg.infos["osrbench (hostname)"].error


def test_a_name_two_third_party_plugins_register_names_both(site):
    _dist(site, "copya", "copy-a", "copy_a_mod", GOOD.format(method="toy-msp"))
    _dist(site, "copyb", "copy-b", "copy_b_mod", GOOD.format(method="toy-msp"))
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert "also registered by plugin 'copy-a'" in reg.infos["copy-b"].error
    with pytest.raises(plugins.UnknownName, match=r"registered by 2 plugins, 'copy-a' and 'copy-b'"):
        reg.method("toy-msp")


def test_builtin_distributions_are_the_ones_this_repository_ships():
    import pathlib
    import tomllib

    root = pathlib.Path(plugins.__file__).resolve().parents[1]
    shipped = {tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]}
    shipped |= {tomllib.loads(p.read_text())["project"]["name"] for p in root.glob("plugins/*/pyproject.toml")}
    assert {plugins.normalise_distribution(n) for n in shipped} == plugins.BUILTIN_DISTRIBUTIONS


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
