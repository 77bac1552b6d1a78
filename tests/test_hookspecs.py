"""Every hook specification is called by a test and documented in docs/PLUGINS.md.

``HOOK_TESTS`` maps each hookspec of ``osrbench.hookspecs`` to the test below that exercises it.
A new hookspec without an entry fails ``test_every_hookspec_has_a_test``; the meta-test also runs
each mapped test under a hook-call monitor and fails if the test never calls its hook.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pluggy
import pytest

import osrbench
from osrbench import engine, hookspecs, plugins, testing
from osrbench.datasets import DatasetSpec
from osrbench.method import MethodSpec

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "PLUGINS.md"
MARKER = f"{plugins.GROUP}_spec"  # the attribute pluggy's HookspecMarker("osrbench") sets

#: Hook calls seen by the monitored plugin managers of the hook tests (hook names).
CALLED: list[str] = []


def _hookspecs() -> dict[str, Callable]:
    return {name: fn for name, fn in vars(hookspecs).items() if inspect.isfunction(fn) and hasattr(fn, MARKER)}


def _monitored_manager() -> pluggy.PluginManager:
    """A plugin manager with osrbench's hookspecs that records every hook call in CALLED."""
    pm = pluggy.PluginManager(plugins.GROUP)
    pm.add_hookspecs(hookspecs)
    pm.add_hookcall_monitoring(lambda name, impls, kwargs: CALLED.append(name), lambda *args: None)
    return pm


@contextmanager
def _installed(dist: str, module: str, source: str) -> Iterator[None]:
    """A fake installed distribution whose ``osrbench`` entry point is ``module`` (no pip)."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[osrbench]\n{dist} = {module}\n")
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
        try:
            yield
        finally:
            sys.path.remove(str(site))
            sys.modules.pop(module, None)
            importlib.invalidate_caches()


METHODS_PLUGIN = """
import osrbench
from osrbench_softmax.plugin import DEFAULTS, Softmax

@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="hooked-softmax", factory=Softmax, defaults=DEFAULTS))
"""

DATASETS_PLUGIN = """
import dataclasses
import osrbench
from osrbench.testing import toy_dataset_spec

@osrbench.hookimpl
def osrbench_register_datasets(register):
    register(dataclasses.replace(toy_dataset_spec(), name="hooked-toy"))
"""


def test_osrbench_register_methods():
    class Plugin:
        @osrbench.hookimpl
        def osrbench_register_methods(self, register):
            register(MethodSpec(name="via-pluggy", factory=object))

    pm = _monitored_manager()
    pm.register(Plugin(), name="p")
    got: list[MethodSpec] = []
    pm.hook.osrbench_register_methods(register=got.append)
    assert [s.name for s in got] == ["via-pluggy"]

    # Through the host's own manager, from an installed distribution.
    with _installed("hooked-methods", "hooked_methods_mod", METHODS_PLUGIN):
        reg = plugins.Plugins()
    assert reg.infos["hooked-methods"].methods == ["hooked-softmax"] and reg.infos["hooked-methods"].error is None
    assert reg.plugin_of("method", "hooked-softmax").distribution == "hooked-methods"
    assert reg.method("hooked-softmax").factory().phases == ("train",)


def test_osrbench_register_datasets():
    class Plugin:
        @osrbench.hookimpl
        def osrbench_register_datasets(self, register):
            register(testing.toy_dataset_spec("via-pluggy"))

    pm = _monitored_manager()
    pm.register(Plugin(), name="p")
    got: list[DatasetSpec] = []
    pm.hook.osrbench_register_datasets(register=got.append)
    assert [s.name for s in got] == ["via-pluggy"]

    # Through the host's own manager, from an installed distribution; the engine can plan and load it.
    with _installed("hooked-datasets", "hooked_datasets_mod", DATASETS_PLUGIN):
        reg = plugins.Plugins()
    assert reg.infos["hooked-datasets"].datasets == ["hooked-toy"]
    assert {"digits", "hooked-toy"} <= set(reg.datasets)  # the host's own datasets come through the hook too
    with tempfile.TemporaryDirectory() as tmp:
        p = engine.plan(engine.RunRequest(method="softmax", dataset="hooked-toy", epochs=1, out=Path(tmp)), reg)
        data = engine.load_data(p)
    assert p.split.num_known == 6 and data.known_y.max() == 5 and data.train_x.shape[1:] == (3, 8, 8)


#: hookspec name -> the test that calls it.
HOOK_TESTS: dict[str, Callable[[], None]] = {
    "osrbench_register_methods": test_osrbench_register_methods,
    "osrbench_register_datasets": test_osrbench_register_datasets,
}


def test_every_hookspec_has_a_test():
    specs = _hookspecs()
    assert specs, "no hookspecs found in osrbench.hookspecs"
    missing = sorted(set(specs) - set(HOOK_TESTS))
    assert not missing, f"hookspecs without a test (add one to HOOK_TESTS in {Path(__file__).name}): {missing}"
    stale = sorted(set(HOOK_TESTS) - set(specs))
    assert not stale, f"HOOK_TESTS names hooks that are not hookspecs: {stale}"
    assert [n for n, _ in testing.hook_specs()] == list(specs)


@pytest.mark.parametrize("hook", sorted(HOOK_TESTS))
def test_each_hook_test_calls_its_hook(hook):
    CALLED.clear()
    HOOK_TESTS[hook]()
    assert hook in CALLED, f"{HOOK_TESTS[hook].__name__} never calls {hook} through a plugin manager"


@pytest.mark.parametrize("hook", sorted(_hookspecs()))
def test_every_hookspec_is_documented_from_its_docstring(hook):
    guide = GUIDE.read_text()
    doc = inspect.getdoc(_hookspecs()[hook])
    assert doc, f"hookspec {hook} has no docstring"
    assert f"### `{hook}`" in guide, f"docs/PLUGINS.md has no section for hook {hook}"
    assert doc.splitlines()[0] in guide, f"docs/PLUGINS.md does not quote the first line of {hook}'s docstring"
    assert doc in guide, f"docs/PLUGINS.md quotes an outdated docstring of {hook}"


def test_the_guide_hook_reference_is_generated_from_the_hookspecs():
    guide = GUIDE.read_text()
    match = re.search(r"<!-- hook-reference:[^\n]*-->\n(.*?)<!-- end hook-reference -->", guide, re.S)
    assert match, "docs/PLUGINS.md lost its hook-reference markers"
    assert match.group(1) == testing.hook_reference(), (
        "docs/PLUGINS.md hook reference is out of date: replace it with the output of "
        "python -m osrbench.testing --hook-reference"
    )
