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
from osrbench_softmax.softmax import DEFAULTS, Softmax

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
    plugins.reset()  # the process-wide plugins must not keep this test's


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


TYPO_HOOK = """
import osrbench

@osrbench.hookimpl
def osrbench_register_method(register):
    raise AssertionError("never called: no such hook")
"""
UNMARKED_HOOK = """
import osrbench_softmax.plugin  # a module attribute named osrbench_*: no hook, not reported

def osrbench_register_methods(register):
    raise AssertionError("never called: not a hookimpl")

def osrbench_helper():
    pass
"""
NO_HOOK = "import osrbench\n"


def test_hook_names_pluggy_would_never_call_are_reported(site, capsys):
    """A hook-name typo, a hook without @hookimpl and a module with no hook are not shown as ok."""
    import pluggy

    _dist(site, "typoplug", "typo", "typo_mod", TYPO_HOOK)
    _dist(site, "unmarkedplug", "unmarked", "unmarked_mod", UNMARKED_HOOK)
    _dist(site, "nohookplug", "nohook", "nohook_mod", NO_HOOK)
    _dist(site, "goodplug", "goodplug", "goodplug_mod", "import osrbench_softmax\n" + GOOD.format(method="toy-msp"))
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert reg.infos["typo"].error == ("implements osrbench_register_method, which is not a hook "
                                       "(did you mean osrbench_register_methods?)")
    assert reg.infos["unmarked"].error == (
        "defines osrbench_helper, which is not a hook (the hooks are osrbench_register_datasets, "
        "osrbench_register_loggers, osrbench_register_methods, osrbench_register_scores); rename it with a leading underscore if it is a helper; "
        "defines osrbench_register_methods without @osrbench.hookimpl, so it is never called")
    assert reg.infos["nohook"].error.startswith("implements no osrbench hook (one of osrbench_register_datasets, ")
    assert reg.infos["goodplug"].error is None and reg.infos["goodplug"].methods == ["toy-msp"]
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'osrbench_register_method'"):
        reg.pm.check_pending()  # what pluggy rejects is what the typo's status names
    plugins.reset()
    from osrbench import cli

    assert cli.main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "implements osrbench_register_method, which is not a hook (did you mean osrbench_register_methods?)" in table


def test_the_shipped_plugins_pass_pluggys_check_and_name_every_hook_right(monkeypatch):
    monkeypatch.setenv("OSRBENCH_PLUGINS", "softmax,arpl,dias")  # whatever else is installed aside
    reg = plugins.Plugins()
    reg.pm.check_pending()
    assert set(reg.infos) == {"osrbench", "softmax", "arpl", "dias"}
    assert not reg.broken and all(i.error is None for i in reg.infos.values())


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


@pytest.mark.parametrize("command", ["run", "compare", "evaluate", "list"])
def test_an_unknown_method_says_which_plugins_failed_to_register(site, capsys, tmp_path, command):
    """The method asked for may be one a broken plugin meant to register: the one error line says why."""
    from osrbench import cli

    _dist(site, "osrbench-mine", "mine", "mine_mod", "import torchx\n")
    _dist(site, "typoplug", "typo", "typo_mod", TYPO_HOOK)
    _dist(site, "brokenhook", "brokenhook", "brokenhook_mod", BAD_HOOK)
    importlib.invalidate_caches()
    plugins.reset()
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    argv = {"run": ["run", "--method", "openmax2", "--dataset", "digits", "--out", str(tmp_path)],
            "compare": ["compare", "softmax", "openmax2", "--dataset", "digits", "--out", str(tmp_path)],
            "evaluate": ["evaluate", "--method", "openmax2", "--dataset", "digits", "--weights", str(weights),
                         "--layout", "osrbench", "--out", str(tmp_path)],
            "list": ["list", "--options", "openmax2"]}[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("osrbench: error: unknown method 'openmax2' (valid: ")
    assert err[0].endswith(
        "; did you mean 'openmax'?"
        "; plugin 'mine' (osrbench-mine) failed to load: ModuleNotFoundError: No module named 'torchx'"
        "; plugin 'typo' (typoplug) implements osrbench_register_method, which is not a hook "
        "(did you mean osrbench_register_methods?)"
        "; plugin 'brokenhook' failed in osrbench_register_methods: RuntimeError: registration exploded")


def test_an_unknown_name_is_not_blamed_on_a_hook_of_another_kind(site):
    """A plugin whose methods hook raised cannot have hidden a dataset; one that failed to load could."""
    _dist(site, "brokenhook", "brokenhook", "brokenhook_mod", BAD_HOOK)
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    with pytest.raises(plugins.UnknownName) as caught:
        reg.dataset("digitz")
    assert str(caught.value).endswith("; did you mean 'digits'?")
    with pytest.raises(plugins.UnknownName, match="; plugin 'brokenhook' failed in osrbench_register_methods"):
        reg.method("toy-msp")
