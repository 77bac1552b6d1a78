"""Every hook specification is called by a test and documented in docs/PLUGINS.md.

``HOOK_TESTS`` maps each hookspec of ``osrbench.hookspecs`` to the test below that exercises it.
A new hookspec without an entry fails ``test_every_hookspec_has_a_test``; the meta-test also runs
each mapped test with a pluggy hook-call monitor on the plugin manager of every
``osrbench.plugins.Plugins`` it builds, and fails unless the host itself called the hook, once per
implementing plugin, each call holding that plugin alone, with the hookspec's arguments.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pluggy
import pytest
import torch

from osrbench import builtin, engine, hookspecs, plugins, session, testing
from osrbench.scoring import View

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "PLUGINS.md"
MARKER = f"{plugins.GROUP}_spec"  # the attribute pluggy's HookspecMarker("osrbench") sets



def _hookspecs() -> dict[str, Callable]:
    return {name: fn for name, fn in vars(hookspecs).items() if inspect.isfunction(fn) and hasattr(fn, MARKER)}


@dataclass
class HookCall:
    """One hook call as pluggy's monitor saw it on a plugin manager."""

    pm: pluggy.PluginManager
    hook: str
    plugins: list[str]  # names of the plugins whose implementations the call ran
    kwargs: dict[str, Any]


@contextmanager
def _host_hook_calls() -> Iterator[list[HookCall]]:
    """Every hook call made on the plugin managers that ``osrbench.plugins`` creates meanwhile.

    The host's own ``Plugins`` builds its manager with ``pluggy.PluginManager``; this puts a
    monitor (``add_hookcall_monitoring``) on each such manager as it is created, before any call.
    """
    calls: list[HookCall] = []

    class Monitored(pluggy.PluginManager):
        def __init__(self, project_name: str) -> None:
            super().__init__(project_name)
            self.add_hookcall_monitoring(
                lambda hook, impls, kwargs: calls.append(HookCall(self, hook, [i.plugin_name for i in impls], dict(kwargs))),
                lambda *args: None,
            )

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plugins.pluggy, "PluginManager", Monitored)
        yield calls


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
from osrbench_softmax.softmax import DEFAULTS, Softmax

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
    # Through the host's own manager, from an installed distribution.
    with _installed("hooked-methods", "hooked_methods_mod", METHODS_PLUGIN):
        reg = plugins.Plugins()
    assert reg.infos["hooked-methods"].methods == ["hooked-softmax"] and reg.infos["hooked-methods"].error is None
    assert reg.plugin_of("method", "hooked-softmax").distribution == "hooked-methods"
    assert reg.method("hooked-softmax").factory().phases == ("train",)


def test_osrbench_register_datasets():
    # Through the host's own manager, from an installed distribution; the engine can plan and load it.
    with _installed("hooked-datasets", "hooked_datasets_mod", DATASETS_PLUGIN):
        reg = plugins.Plugins()
    assert reg.infos["hooked-datasets"].datasets == ["hooked-toy"]
    assert {"digits", "hooked-toy"} <= set(reg.datasets)  # the host's own datasets come through the hook too
    with tempfile.TemporaryDirectory() as tmp:
        p = engine.plan(engine.RunRequest(method="softmax", dataset="hooked-toy", epochs=1, out=Path(tmp)), reg)
        data = session.load_data(p.dataset, p.split, p.config["image_size"])
    assert p.split.num_known == 6 and data.known_y.max() == 5 and data.train_x.shape[1:] == (3, 8, 8)


SCORES_PLUGIN = """
import torch
import osrbench

@osrbench.hookimpl
def osrbench_register_scores(register):
    register(osrbench.ScoreSpec(name="hooked-margin", score=lambda view, fitted, params:
                                view.logits.topk(2, 1).values.diff(dim=1).squeeze(1).neg()))
    register(osrbench.ScoreSpec(name="msp", score=lambda view, fitted, params: view.logits[:, 0]))
"""


def test_osrbench_register_scores():
    # Through the host's own manager, from an installed distribution: a new scorer is usable; a
    # built-in name stays the built-in scorer's; the host's scorers come through the hook too.
    with _installed("hooked-scores", "hooked_scores_mod", SCORES_PLUGIN):
        reg = plugins.Plugins()
    info = reg.infos["hooked-scores"]
    assert info.scorers == ["hooked-margin"] and "scorer 'msp' refused" in info.error
    assert reg.plugin_of("scorer", "msp").name == "osrbench"
    assert {"msp", "energy", "odin", "openmax", "hooked-margin"} <= set(reg.scorers)
    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    margin = reg.scorer("hooked-margin").score(View(logits), None, {})
    assert margin.tolist() == [2.0, 0.0]


LOGGERS_PLUGIN = """
import osrbench
from osrbench.loggers import Logger, LoggerSpec

class Lines(Logger):
    def on_epoch_end(self, epoch, losses, lrs):
        print(epoch, losses)

@osrbench.hookimpl
def osrbench_register_loggers(register):
    register(LoggerSpec(name="hooked-lines", factory=Lines))
    register(LoggerSpec(name="mlflow", factory=Lines))
"""


def test_osrbench_register_loggers():
    # Through the host's own manager, from an installed distribution: a new logger is usable with
    # --log; a built-in name stays the built-in logger's; the host's loggers come through the hook too.
    from osrbench import loggers

    with _installed("hooked-loggers", "hooked_loggers_mod", LOGGERS_PLUGIN):
        reg = plugins.Plugins()
    info = reg.infos["hooked-loggers"]
    assert info.loggers == ["hooked-lines"] and "logger 'mlflow' refused" in info.error
    assert reg.plugin_of("logger", "mlflow").name == "osrbench"
    assert {"tensorboard", "mlflow", "wandb", "hooked-lines"} <= set(reg.loggers)
    (spec,) = loggers.check(["hooked-lines"], reg)
    assert type(spec.factory()).__name__ == "Lines"


#: hookspec name -> the test that calls it.
HOOK_TESTS: dict[str, Callable[[], None]] = {
    "osrbench_register_methods": test_osrbench_register_methods,
    "osrbench_register_datasets": test_osrbench_register_datasets,
    "osrbench_register_scores": test_osrbench_register_scores,
    "osrbench_register_loggers": test_osrbench_register_loggers,
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
    with _host_hook_calls() as calls:
        HOOK_TESTS[hook]()
    test = HOOK_TESTS[hook].__name__
    stray = sorted({c.hook for c in calls if c.pm.get_plugin("osrbench") is not builtin})
    assert not stray, f"{test} calls {stray} on a manager other than osrbench.plugins.Plugins' own"
    seen = [c for c in calls if c.hook == hook]
    assert seen, f"{test}: the host never called {hook} through its plugin manager"
    params = list(inspect.signature(_hookspecs()[hook]).parameters)
    for pm in {id(c.pm): c.pm for c in seen}.values():
        mine = [c for c in seen if c.pm is pm]
        # Once per implementing plugin, each call running that plugin's implementation alone.
        implementers = [impl.plugin_name for impl in getattr(pm.hook, hook).get_hookimpls()]
        assert [c.plugins for c in mine] == [[name] for name in implementers], f"{hook}: {[c.plugins for c in mine]}"
        for c in mine:
            assert list(c.kwargs) == params, f"{hook} called with {sorted(c.kwargs)}, its hookspec takes {params}"
            assert callable(c.kwargs["register"])
        assert len({id(c.kwargs["register"]) for c in mine}) == len(mine), "one register() per plugin"
    # The installed distribution of the hook test was among the plugins called.
    assert any(name.startswith("hooked-") for c in seen for name in c.plugins), [c.plugins for c in seen]


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
