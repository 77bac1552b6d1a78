"""Conformance suite for method plugins: does a method keep the contracts the engine relies on?

A plugin author runs it against an installed method, either in one call::

    from osrbench.testing import check_method

    report = check_method("mine")          # raises ConformanceError naming the broken contract
    print(report)

or as one pytest test per check (the file ``osrbench new-plugin`` writes)::

    import pytest
    from osrbench.testing import CHECKS, run_check

    @pytest.mark.parametrize("check", CHECKS)
    def test_conformance(check):
        run_check("mine", check)

The checks (:data:`CHECKS`, contracts in :data:`CHECK_DOCS`) train the method for two short epochs
on a separable synthetic open-set problem held in memory (:func:`toy_data`: bright coloured
patterns as known classes, dim noise as unknowns, 8×8 px), driving it exactly as the engine does
(seeded global RNG and ``ctx.generator``, the engine's training stream, ``setup`` →
``train_step`` per phase and batch → ``end_epoch`` → ``predict``). The ``engine`` check then runs it
once through :func:`osrbench.engine.run` on the same toy problem registered as a dataset. Trained
methods are cached per (method, registry, device, overrides) so the checks share the training.

Every failure is a :class:`ConformanceError` (an ``AssertionError``) whose message starts with the
check's name and says which contract was broken, for example ``predict: score has shape (10, 1),
expected (10,)`` or ``determinism: two runs with seed 0 gave different logits``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import json
import math
import random
import re
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import yaml

from osrbench import checkpoints, evaluation, metrics, plugins, session
from osrbench import config as configmod
from osrbench.datasets import DatasetSpec, OpenSetData
from osrbench.errors import MethodFailed, UserError
from osrbench.evaluation import BadPrediction, Outputs
from osrbench.data.stream import to_input
from osrbench.method import Features, Method, MethodSpec, implements

__all__ = [
    "CHECKS",
    "CHECK_DOCS",
    "CheckResult",
    "ConformanceError",
    "ConformanceReport",
    "HOST_OPS",
    "MASK_INDEXING_OPS",
    "MIN_AUROC",
    "TOY_DATASET",
    "check_method",
    "clear_cache",
    "hook_reference",
    "hook_specs",
    "run_check",
    "toy_data",
    "toy_dataset_spec",
    "trace_ops",
]

#: The name the toy problem is registered under for the ``engine`` check.
TOY_DATASET = "osrbench-toy"
#: Known classes of the toy problem the method-level checks train on.
TOY_CLASSES = 3
#: Side of the toy images (8 px: classifier32 and the native DCGAN both support it).
TOY_SIZE = 8
#: Training images per known class, test images per known class, unknown test images.
TOY_TRAIN_PER_CLASS = 32
TOY_TEST_PER_CLASS = 8
TOY_UNKNOWN = 24
#: Batch size of the toy runs (so one epoch is a handful of steps per phase).
TOY_BATCH = 16
#: Epochs of the toy run A (the ``state`` check resumes between them).
TOY_EPOCHS = 2
#: The AUROC (known vs unknown, main score) the ``sign`` check asks for on the separable toy.
MIN_AUROC = 0.8

#: The checks, in the order :func:`check_method` runs them.
CHECKS: tuple[str, ...] = ("register", "spec", "train", "predict", "sign", "determinism", "state", "features",
                           "fit", "graphs", "engine")

#: The contract each check verifies (one line each; shown in reports and in docs/PLUGINS.md).
CHECK_DOCS: dict[str, str] = {
    "register": "an installed plugin registers the method without errors; its factory makes fresh "
                "osrbench.Method objects with a non-empty tuple of distinct phase names",
    "spec": "defaults hold only YAML/JSON-serialisable values of stable types (bool, int, float, str, "
            "None, lists and str-keyed dicts of those), engine keys keep the engine's types, every recipe "
            "scope resolves through osrbench.config.resolve, the default recipe exists",
    "train": "setup(ctx) and two epochs of train_step over every phase's shuffled batches run; each "
             "train_step returns a non-empty dict of named terms, each a detached, finite, 0-d float tensor; "
             "diagnostic terms (an accuracy, a margin) are allowed and logged into the record's history like "
             "the losses (the engine averages every term over the pass and never sums or differentiates them)",
    "predict": "predict returns a Prediction with finite (N, K) float logits, an (N,) score and (N,) named "
               "scores, no autograd graph, results independent of the batch split; f1_rule and "
               "adaptations are well formed",
    "sign": f"on the separable toy problem the main score and every named score rank knowns above unknowns "
            f"(AUROC >= {MIN_AUROC}: higher = more likely known), except named scores the method lists in "
            "sign_check_exempt with a reason, which the report shows",
    "determinism": "two fresh runs with the same seed and batches give identical logits and scores",
    "state": f"state_dict holds only {checkpoints.STATE_TYPES} (no numpy values: the engine refuses to checkpoint "
             "them); it survives torch.save / torch.load(weights_only=True); a fresh setup + load_state_dict "
             "predicts identically, and one more epoch from it equals the uninterrupted run",
    "features": "a method with features() returns osrbench.Features: (N, D) penultimate features and the logits "
                "predict returns, differentiable with respect to the images (input-gradient scorers); with "
                "head(), head(penultimate) gives the logits back; methods without features() pass",
    "fit": "a method with a fit stage receives every training image once, in file order, unaugmented, prepared "
           "as predict's images, with its label; the fitted state_dict keeps to the state check's types, and a "
           "fresh setup + load_state_dict of it predicts exactly as the fitted method (the engine resumes and "
           "rescores from it without fitting again); methods without fit() pass",
    "graphs": "a method that declares graph_safe reads no device value on the host, makes no value-dependent "
              "shape (t[mask], nonzero, masked_select, unique) and no tensor from host data in train_step, runs "
              "the same operations in consecutive full batches and in the same full batch of the next epoch "
              "(optimiser steps aside), has all its optimiser state after the first "
              "osrbench.graphs.StepGraphs.WARMUP full batches of each phase (none created later), and trains "
              "identically through osrbench.graphs.StepGraphs (on CUDA: real graphs, close to eager); methods "
              "that do not declare it pass (the engine runs them eagerly)",
    "engine": "one osrbench.engine.run (1 epoch) on the toy dataset completes and writes a record "
              "with finite metrics",
}


class ConformanceError(AssertionError):
    """A method broke a contract of the engine; the message starts with the check's name."""


class _Skip(Exception):
    """A check could not run because one it depends on failed."""


@dataclass
class CheckResult:
    """Outcome of one check: ``status`` is ``passed``, ``failed`` or ``skipped``."""

    name: str
    status: str
    seconds: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "passed"


@dataclass
class ConformanceReport:
    """Outcome of :func:`check_method`: one :class:`CheckResult` per check run."""

    method: str
    device: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def __str__(self) -> str:
        lines = [f"osrbench conformance of method {self.method!r} on {self.device}:"]
        for r in self.results:
            lines.append(f"  {r.status.upper():7s} {r.name:12s} {r.seconds:6.2f} s  {r.message}")
        verdict = "all checks passed" if self.ok else f"{len(self.failures)} check(s) failed"
        lines.append(f"  {verdict}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- toy problem

# Bright, mutually distinct colours and spatial patterns, one of each per known class.
_PALETTE = (
    (255, 48, 48), (48, 255, 48), (48, 48, 255), (255, 255, 48), (255, 48, 255),
    (48, 255, 255), (255, 160, 48), (160, 48, 255), (255, 255, 255), (48, 160, 255),
)


def _pattern(k: int, size: int) -> torch.Tensor:
    i = torch.arange(size)[:, None].expand(size, size)
    j = torch.arange(size)[None, :].expand(size, size)
    half, q = size // 2, max(1, size // 4)
    masks = (
        i < half, j < half, i >= j, (i // q) % 2 == 0, (j // q) % 2 == 0,
        ((i // q) + (j // q)) % 2 == 0, torch.minimum(torch.minimum(i, j), torch.minimum(size - 1 - i, size - 1 - j)) < q,
        i >= half, j >= half, i + j < size,
    )
    return masks[k % len(masks)]


def toy_data(
    num_known: int = TOY_CLASSES,
    image_size: int = TOY_SIZE,
    train_per_class: int = TOY_TRAIN_PER_CLASS,
    test_per_class: int = TOY_TEST_PER_CLASS,
    num_unknown: int = TOY_UNKNOWN,
    seed: int = 0,
) -> OpenSetData:
    """A separable synthetic open-set split, built in memory (uint8, 3 channels).

    Known class k is a bright colour ``_PALETTE[k]`` on a spatial pattern of its own (halves,
    stripes, checker, border, ...) with per-image brightness and pixel jitter; unknowns are dim,
    unstructured noise (values 0..63). Any method that learns the known classes at all ranks them
    above the unknowns.
    """
    if not 1 <= num_known <= len(_PALETTE):
        raise ValueError(f"num_known must be in 1..{len(_PALETTE)}, got {num_known}")
    g = torch.Generator().manual_seed(seed)

    def known(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(num_known).repeat_interleave(per_class)
        colour = torch.tensor(_PALETTE, dtype=torch.float32)[labels % len(_PALETTE)]  # (N, 3)
        masks = torch.stack([_pattern(int(k), image_size) for k in labels]).float()  # (N, S, S)
        gain = 0.75 + 0.25 * torch.rand(len(labels), 1, 1, 1, generator=g)
        x = masks[:, None] * colour[:, :, None, None] * gain
        x = x + torch.randint(-20, 21, x.shape, generator=g).float()
        return x.clamp(0, 255).to(torch.uint8), labels

    train_x, train_y = known(train_per_class)
    known_x, known_y = known(test_per_class)
    unknown_x = torch.randint(0, 64, (num_unknown, 3, image_size, image_size), generator=g).to(torch.uint8)
    return OpenSetData(train_x, train_y, known_x, known_y, unknown_x, torch.full((num_unknown,), -1, dtype=torch.int64))


def _toy_loader(root: Path, split: Any, image_size: int) -> OpenSetData:
    return toy_data(num_known=split.num_known, image_size=image_size, train_per_class=8, test_per_class=8,
                    num_unknown=16, seed=split.index)


def toy_dataset_spec(name: str = TOY_DATASET) -> DatasetSpec:
    """The toy problem as a dataset (10 classes on the ``mnist`` split table, so 6 known)."""
    return DatasetSpec(
        name=name, load=_toy_loader, table="mnist", num_classes=10, image_size=TOY_SIZE, augment="none",
        description="osrbench.testing toy problem: coloured patterns vs dim noise (in memory)",
        source="generated", licence="none",
    )


# ------------------------------------------------------------------------------------- the session

_CACHE: dict[tuple, "_Session"] = {}


def clear_cache() -> None:
    """Forget the trained methods :func:`run_check` and :func:`check_method` keep between calls."""
    _CACHE.clear()


def _fail(check: str, message: str) -> ConformanceError:
    return ConformanceError(f"{check}: {message}")


def _exc_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


@contextmanager
def _calling(check: str, what: str) -> Iterator[None]:
    """Turn an exception raised by the method's code into a ConformanceError naming the call."""
    try:
        yield
    except (ConformanceError, _Skip, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - any exception of the plugin is a broken contract
        raise _fail(check, f"{what} raised {_exc_line(exc)}") from exc


@contextmanager
def _suite_environment(device: torch.device) -> Iterator[None]:
    """Run a check in one CPU thread (the toy tensors are tiny: more threads only contend) or with
    deterministic cuDNN kernels, and give the caller back its global RNG states (the suite seeds
    them as the engine does), thread count and cuDNN flags."""
    py, npy, threads = random.getstate(), np.random.get_state(), torch.get_num_threads()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if device.type == "cpu":
        torch.set_num_threads(1)
    elif device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)
            torch.set_num_threads(threads)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _calls(check: str) -> Callable[..., Any]:
    """A session ``call`` that turns the method's exceptions into ConformanceErrors of ``check``."""

    def call(stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        with _calling(check, stage):
            return fn(*args)

    return call


@contextmanager
def _contract(check: str) -> Iterator[None]:
    """The evaluation's findings about a Prediction, as a ConformanceError of ``check``."""
    try:
        yield
    except BadPrediction as exc:
        raise _fail(check, str(exc)) from None


class _Session:
    """One method under test: lazily trained runs shared by the checks, failures memoised."""

    def __init__(self, name: str, registry: plugins.Plugins | None, device: str | torch.device,
                 overrides: Mapping[str, Any] | None, seed: int = 0) -> None:
        self.name = name
        self._registry = registry
        self.device = torch.device(device)
        self.overrides = dict(overrides or {})
        self.seed = seed
        self._memo: dict[str, Any] = {}

    # -- memoised steps: a step that failed fails the same way for every check that needs it
    def _once(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = ("ok", fn())
            except (ConformanceError, _Skip) as exc:
                self._memo[key] = ("error", exc)
        kind, value = self._memo[key]
        if kind == "error":
            raise value
        return value

    def need(self, check: str, key: str, fn: Callable[[], Any]) -> Any:
        """A prerequisite of ``check``: its failure makes ``check`` a skip, not a second failure."""
        try:
            return self._once(key, fn)
        except (ConformanceError, _Skip) as exc:
            err = _prerequisite(check, exc)
            if err is exc:
                raise
            raise err from exc

    @property
    def reg(self) -> plugins.Plugins:
        if self._registry is None:
            self._registry = plugins.get()
        return self._registry

    # -- register / spec
    def spec(self) -> MethodSpec:
        def lookup() -> MethodSpec:
            try:
                spec = self.reg.method(self.name)
            except plugins.UnknownName as exc:
                # The lookup's message already names the plugins that failed to load or register.
                hint = "" if self.reg.broken else (
                    "; is the package installed (pip install -e '.[test]') with an [project.entry-points.osrbench] "
                    "entry whose module has an @osrbench.hookimpl osrbench_register_methods?")
                raise _fail("register", f"{str(exc).strip(chr(34) + chr(39))}{hint}") from None
            info = self.reg.plugin_of("method", self.name)
            if info.error:
                raise _fail("register", f"plugin {info.name!r} that registers {self.name!r} reports: {info.error}")
            return spec

        return self._once("spec", lookup)

    def config(self) -> dict[str, Any]:
        def resolve() -> dict[str, Any]:
            spec = self.spec()
            overrides = {"batch_size": TOY_BATCH, **self.overrides}
            try:
                _, cfg = configmod.resolve(spec, toy_dataset_spec(), None, TOY_EPOCHS, overrides)
            except configmod.ConfigError as exc:
                raise _fail("spec", f"the default configuration does not resolve: {exc}") from None
            return cfg

        return self._once("config", resolve)

    # -- driving the method exactly as the engine does: osrbench.session and osrbench.evaluation
    def data(self) -> OpenSetData:
        return self._once("data", lambda: toy_data(TOY_CLASSES, self.config()["image_size"], TOY_TRAIN_PER_CLASS,
                                                   TOY_TEST_PER_CLASS, TOY_UNKNOWN))

    def fresh(self, check: str) -> session.Session:
        """A new method set up exactly as the engine sets one up for ``self.seed``."""
        spec = self.spec()
        return session.open_session(spec, self.config(), self.data(), num_classes=TOY_CLASSES, dataset=TOY_DATASET,
                                    device=self.device, seed=self.seed, deterministic=None, call=_calls(check))

    def epoch(self, check: str, sess: session.Session, epoch: int) -> None:
        sess.call = _calls(check)
        sess.run_epoch(epoch, lambda phase, step, losses: _check_losses(check, phase, step, losses))

    def predict(self, check: str, sess: session.Session, images: torch.Tensor) -> Outputs:
        with _contract(check):
            return evaluation.predict(sess.method, images, self.device, sess.config["normalize"], TOY_CLASSES,
                                      sess.precision, call=_calls(check))

    def predict_all(self, check: str, sess: session.Session) -> tuple[Outputs, Outputs]:
        d = self.data()
        return self.predict(check, sess, d.known_x), self.predict(check, sess, d.unknown_x)

    # -- the shared runs
    def run_a(self) -> dict[str, Any]:
        """Run A: epoch 0, snapshot (state + RNG, as a checkpoint holds), predict, epoch 1, predict."""

        def go() -> dict[str, Any]:
            def attempt(fn: Callable[[], Any]) -> Any:
                try:
                    return fn()
                except ConformanceError as exc:  # kept for the checks that need this part
                    return exc

            def snapshot() -> dict[str, Any]:
                with _calling("state", "state_dict()"):
                    state = sess.method.state_dict()
                _check_state_types("state", state)
                buf = io.BytesIO()
                try:
                    torch.save(state, buf)
                except Exception as exc:  # noqa: BLE001
                    raise _fail("state", f"state_dict() cannot be saved with torch.save: {_exc_line(exc)}") from exc
                return {"state": buf.getvalue(), "rng": sess.rng_state()}

            sess = self.fresh("train")
            self.epoch("train", sess, 0)
            out = {"session": sess, "method": sess.method, "snapshot": attempt(snapshot),
                   "preds0": attempt(lambda: self.predict_all("predict", sess))}
            self.epoch("train", sess, 1)
            out["preds1"] = attempt(lambda: self.predict_all("predict", sess))
            return out

        return self._once("run_a", go)

    def part(self, check: str, key: str) -> Any:
        """One part of run A (``session``, ``method``, ``snapshot``, ``preds0``, ``preds1``) for ``check``."""
        value = self.need(check, "run_a", self.run_a)[key]
        if isinstance(value, ConformanceError):
            err = _prerequisite(check, value)
            raise err if err is value else err from value
        return value


def _prerequisite(check: str, exc: BaseException) -> BaseException:
    """``exc`` if it is ``check``'s own failure, else a skip naming the check that failed."""
    if isinstance(exc, _Skip) or not str(exc).startswith(f"{check}:"):
        failed = str(exc).split(":", 1)[0] if isinstance(exc, ConformanceError) else str(exc)
        return exc if isinstance(exc, _Skip) else _Skip(f"not run: it needs {failed!r}, which failed")
    return exc


def _check_losses(check: str, phase: str, step: int, losses: Any) -> None:
    """The engine's check of the loss terms (:func:`osrbench.session.check_losses`), then the suite's own."""
    where = f"train_step({phase!r}, ...)"
    try:
        session.check_losses(phase, losses)
    except session.BadLosses as exc:
        raise _fail(check, str(exc)) from None
    for key, value in losses.items():
        if not torch.is_tensor(value):
            raise _fail(check, f"{where} returned loss {key!r} as {type(value).__name__}; return detached 0-d "
                               "tensors (a Python number forces a host synchronisation every step)")
        if value.dim() != 0:
            raise _fail(check, f"{where} returned loss {key!r} of shape {tuple(value.shape)}, expected a 0-d tensor")
        if value.requires_grad:
            raise _fail(check, f"{where} returned loss {key!r} with its autograd graph; return loss.detach()")
        if not value.is_floating_point():
            raise _fail(check, f"{where} returned loss {key!r} of dtype {value.dtype}, expected a float tensor")
        if not torch.isfinite(value).item():
            raise _fail(check, f"{where} returned a non-finite loss {key!r} = {value.item()} at step {step}")


def _check_state_types(check: str, state: Any) -> None:
    """The engine's rule for what a checkpoint may carry (:func:`osrbench.checkpoints.state_problem`)."""
    why = checkpoints.state_problem(state)
    if why:
        raise _fail(check, f"{why}; state_dict() may hold only {checkpoints.STATE_TYPES}, which "
                           "torch.load(weights_only=True) reads back as saved (the engine refuses to checkpoint "
                           "anything else; numpy: torch.from_numpy(a), a.item())")


# ---------------------------------------------------------------------------------------- the checks

_STABLE_SCALARS = (bool, int, float, str, type(None))


def _unstable(value: Any, path: str) -> str | None:
    """Why ``value`` is not a stable config value (None when it is)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} = {value!r} is not finite (JSON records cannot hold it)"
    if isinstance(value, _STABLE_SCALARS):
        if type(value) not in _STABLE_SCALARS:  # subclasses: enums, numpy scalars registered as int ...
            base = next(t for t in type(value).__mro__ if t in _STABLE_SCALARS)
            return f"{path} has type {type(value).__name__}; use a plain {base.__name__}"
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            why = _unstable(v, f"{path}[{i}]")
            if why:
                return why
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} has a non-str key {k!r}"
            why = _unstable(v, f"{path}[{k!r}]")
            if why:
                return why
        return None
    hint = "; use a list" if isinstance(value, tuple) else ""
    return f"{path} = {value!r} has type {type(value).__name__}, which --set and the YAML/JSON records cannot round-trip{hint}"


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _check_register(s: _Session) -> str:
    spec = s.spec()
    if not callable(spec.factory):
        raise _fail("register", f"MethodSpec.factory of {s.name!r} is not callable")
    made = []
    for _ in range(2):
        with _calling("register", "factory()"):
            made.append(spec.factory())
    a, b = made
    if not isinstance(a, Method):
        raise _fail("register", f"factory() returned {type(a).__name__}, not an osrbench.Method subclass")
    if a is b:
        raise _fail("register", "factory() returned the same object twice; it must make a fresh method per call")
    phases = a.phases
    problem = session.phases_problem(phases)
    if problem:
        raise _fail("register", problem)
    info = s.reg.plugin_of("method", s.name)
    return f"plugin {info.name!r} ({info.distribution} {info.version}), phases {tuple(phases)}"


def _check_spec(s: _Session) -> str:
    spec = s.need("spec", "spec", s.spec)
    if not isinstance(spec.defaults, Mapping):
        raise _fail("spec", f"defaults is {type(spec.defaults).__name__}, expected a dict")
    for key, value in spec.defaults.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise _fail("spec", f"config key {key!r} must be an identifier-like str (usable as --set KEY=VALUE)")
        why = _unstable(value, f"defaults[{key!r}]")
        if why:
            raise _fail("spec", why)
        if yaml.safe_load(yaml.safe_dump(value)) != value:
            raise _fail("spec", f"defaults[{key!r}] = {value!r} does not survive a YAML round trip")
        if key in configmod.ENGINE_DEFAULTS:
            try:
                configmod._check_type(key, value, configmod.ENGINE_DEFAULTS[key])
            except configmod.ConfigError as exc:
                raise _fail("spec", f"engine key {key!r}: {exc}") from None
    if not isinstance(spec.options, Mapping):
        raise _fail("spec", f"options is {type(spec.options).__name__}, expected a dict of osrbench.method.Option")
    try:  # options name existing keys (not engine keys) and every default satisfies its option
        configmod.check_options(spec)
    except configmod.ConfigError as exc:
        raise _fail("spec", f"options: {exc}") from None
    if spec.default_recipe is not None and spec.default_recipe not in spec.recipes:
        raise _fail("spec", f"default_recipe {spec.default_recipe!r} is not one of the recipes {sorted(spec.recipes)}")
    toy = toy_dataset_spec()
    for recipe, scopes in spec.recipes.items():
        if not isinstance(scopes, Mapping):
            raise _fail("spec", f"recipe {recipe!r} must map '*' and dataset names to overrides")
        for scope, entries in scopes.items():
            for key, value in dict(entries).items():
                why = _unstable(value, f"recipes[{recipe!r}][{scope!r}][{key!r}]")
                if why:
                    raise _fail("spec", why)
            ds = toy if scope == "*" else dataclasses.replace(toy, name=scope)
            try:
                configmod.resolve(spec, ds, recipe, None, None)
            except configmod.ConfigError as exc:
                raise _fail("spec", f"recipe {recipe!r} for {scope!r} does not resolve: {exc}") from None
    cfg = s.need("spec", "config", s.config)
    try:
        json.dumps(cfg, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _fail("spec", f"the resolved configuration is not JSON-serialisable: {exc}") from None
    if "\n" in spec.description:
        raise _fail("spec", "description must be one line (osrbench list shows it in a table)")
    return f"{len(spec.defaults)} config keys ({len(spec.options)} with options), recipes {sorted(spec.recipes) or '-'}"


def _check_train(s: _Session) -> str:
    s.need("train", "config", s.config)
    sess = s.part("train", "session")
    return f"{TOY_EPOCHS} epochs x {len(sess.phases)} phase(s) x {len(sess.stream)} steps on {TOY_CLASSES} classes"


def _check_predict(s: _Session) -> str:
    sess: session.Session = s.part("predict", "session")
    method = sess.method
    s.part("predict", "preds0")
    whole = s.part("predict", "preds1")[0]
    known = s.data().known_x
    half = len(known) // 2
    parts = [s.predict("predict", sess, known[:half]), s.predict("predict", sess, known[half:])]
    for what, x, y in (("logits", whole.logits, np.concatenate([p.logits for p in parts])),
                       ("score", whole.score, np.concatenate([p.score for p in parts]))):
        if not np.allclose(x, y, rtol=1e-4, atol=1e-4):
            raise _fail("predict", f"{what} of an image depend on the other images of its batch (max abs difference "
                                   f"{np.abs(x - y).max():.3g}); networks must be in eval mode in predict")
    with _contract("predict"):
        rule = evaluation.check_f1_rule(_calls("predict")("f1_rule()", method.f1_rule), ["score", *whole.named])
    with _calling("predict", "adaptations()"):
        adaptations = method.adaptations()
    if not isinstance(adaptations, Mapping):
        raise _fail("predict", f"adaptations() returned {type(adaptations).__name__}, expected a dict")
    try:
        json.dumps(adaptations, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _fail("predict", f"adaptations() is not JSON-serialisable (it goes into result.json): {exc}") from None
    return f"logits {tuple(whole.logits.shape)}, scores {['score', *whole.named]}, f1_rule {rule}"


def _check_sign(s: _Session) -> str:
    known, unknown = s.part("sign", "preds1")
    acc = metrics.accuracy(s.data().known_y.numpy(), known.logits.argmax(1))
    # Every named score is stored and rescored by name, so each keeps the main score's convention.
    exempt = dict(getattr(s.spec().factory(), "sign_check_exempt", {}) or {})
    stray = sorted(set(exempt) - set(known.named))
    if stray:
        raise _fail("sign", f"sign_check_exempt names {stray}, which predict does not return as named scores "
                            f"(it returns {sorted(known.named)})")
    values = {"score": metrics.auroc(known.score, unknown.score),
              **{k: metrics.auroc(known.named[k], unknown.named[k]) for k in known.named if k not in exempt}}
    for name, value in values.items():
        if value < MIN_AUROC:
            what = "the main score" if name == "score" else f"the named score {name!r}"
            flipped = " (below 0.5: is the score's sign reversed? higher must mean more likely known)" if value < 0.5 else ""
            raise _fail("sign", f"AUROC of {what} on the separable toy problem is {value:.3f} < {MIN_AUROC}{flipped}; "
                                f"closed-set accuracy {acc:.3f}")
    named = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k != "score")
    skipped = "; ".join(f"{k}: {why}" for k, why in exempt.items())
    return (f"AUROC {values['score']:.3f}" + (f" (named: {named})" if named else "") + f", accuracy {acc:.3f}"
            + (f"; not sign-checked, as the method declares: {skipped}" if skipped else ""))


def _check_determinism(s: _Session) -> str:
    preds0 = s.part("determinism", "preds0")

    def run_b() -> tuple[Outputs, Outputs]:
        sess = s.fresh("determinism")
        s.epoch("determinism", sess, 0)
        return s.predict_all("determinism", sess)

    b = s._once("run_b", run_b)
    for part, x, y in (("known", preds0[0], b[0]), ("unknown", preds0[1], b[1])):
        diff = x.differs(y)
        if diff:
            raise _fail("determinism", f"two runs with seed {s.seed} gave different {diff} on the {part} images; draw "
                                       "randomness only from the global RNG and ctx.generator, never reseed")
    return f"seed {s.seed}: identical after one epoch"


def _check_state(s: _Session) -> str:
    snapshot = s.part("state", "snapshot")
    preds0, preds1 = s.part("state", "preds0"), s.part("state", "preds1")

    try:
        state = torch.load(io.BytesIO(snapshot["state"]), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise _fail("state", "state_dict() is refused by torch.load(weights_only=True), which the engine uses to "
                             f"resume: keep to tensors, numbers, str, lists and dicts ({_exc_line(exc)})") from exc
    sess = s.fresh("state")
    sess.restore({"state": state, "rng": snapshot["rng"]})
    restored = s.predict_all("state", sess)
    for part, x, y in (("known", preds0[0], restored[0]), ("unknown", preds0[1], restored[1])):
        diff = x.differs(y)
        if diff:
            raise _fail("state", f"a fresh setup + load_state_dict predicts different {diff} on the {part} images "
                                 "than the method whose state_dict it loaded")
    s.epoch("state", sess, 1)
    resumed = s.predict_all("state", sess)
    for part, x, y in (("known", preds1[0], resumed[0]), ("unknown", preds1[1], resumed[1])):
        diff = x.differs(y)
        if diff:
            raise _fail("state", f"resuming from state_dict and training one more epoch gave different {diff} on the "
                                 f"{part} images than the uninterrupted run: state_dict misses something training "
                                 "uses (optimiser state, schedule, epoch counter, ...)")
    return f"{len(snapshot['state']) / 1e6:.1f} MB state; exact predictions and exact resume"


def _check_features(s: _Session) -> str:
    sess: session.Session = s.part("features", "session")
    method = sess.method
    if not implements(method, "features"):
        return "no features(): post-hoc scorers needing features or input gradients do not apply"
    x = to_input(s.data().known_x.to(s.device), sess.config["normalize"])
    with torch.no_grad(), _calling("features", "features(images)"):
        out = method.features(x)
    with torch.no_grad(), _calling("features", "predict(images)"):
        logits = method.predict(x).logits
    if not isinstance(out, Features):
        raise _fail("features", f"features() returned {type(out).__name__}, expected an osrbench.Features")
    n = len(x)
    if not (torch.is_tensor(out.penultimate) and out.penultimate.dim() == 2 and len(out.penultimate) == n):
        raise _fail("features", f"penultimate features have shape {getattr(out.penultimate, 'shape', None)}, "
                                f"expected ({n}, D)")
    if not (torch.is_tensor(out.logits) and out.logits.shape == logits.shape
            and torch.allclose(out.logits.float(), logits.float(), rtol=1e-5, atol=1e-5)):
        raise _fail("features", "features().logits differ from predict().logits on the same images")
    if implements(method, "head"):
        with torch.no_grad(), _calling("features", "head(penultimate)"):
            back = method.head(out.penultimate)
        if not (torch.is_tensor(back) and back.shape == logits.shape
                and torch.allclose(back.float(), logits.float(), rtol=1e-5, atol=1e-5)):
            raise _fail("features", "head(features().penultimate) does not give the logits back")
    xg = x.clone().requires_grad_(True)
    with _calling("features", "features(images) under torch.enable_grad()"), torch.enable_grad():
        z = method.features(xg).logits
    if not z.requires_grad:
        raise _fail("features", "features() returned logits without a graph back to the images: do not decorate "
                                "it with torch.no_grad() (input-gradient scorers such as ODIN differentiate it)")
    (grad,) = torch.autograd.grad(z.max(1).values.sum(), xg, allow_unused=True)  # leaves the parameters' .grad alone
    if grad is None or not torch.isfinite(grad).all():
        raise _fail("features", "the logits of features() have no finite gradient with respect to the images")
    return (f"penultimate {tuple(out.penultimate.shape)}, logits equal predict's"
            + (", head gives them back" if implements(method, "head") else ", no head()") + ", differentiable")


def _check_fit(s: _Session) -> str:
    s.part("fit", "session")  # it needs a method that trains
    sess = s.fresh("fit")
    if not sess.fits:
        return "no fit stage"
    s.epoch("fit", sess, 0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    fit = sess.method.fit

    def spy(batches: Any) -> Any:  # what the host passes, recorded on the way to the method's own fit
        def recorded() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in batches:
                seen.append((x.detach().clone(), y.detach().clone()))
                yield x, y
        return fit(recorded())

    sess.method.fit = spy  # type: ignore[method-assign]
    sess.call = _calls("fit")
    sess.fit()
    del sess.method.fit
    d = s.data()
    want = to_input(d.train_x.to(s.device), sess.config["normalize"])
    got_x = torch.cat([x for x, _ in seen]) if seen else want[:0]
    got_y = torch.cat([y for _, y in seen]) if seen else d.train_y[:0]
    if len(got_x) != len(want) or not torch.equal(got_x.float(), want) or not torch.equal(got_y.cpu(), d.train_y):
        raise _fail("fit", f"fit received {len(got_x)} images, not the {len(want)} training images in file order, "
                           "unaugmented (the host's fit pass is broken)")
    fitted = s.predict_all("fit", sess)
    with _calling("fit", "state_dict() after fit"):
        fitted_state = sess.method.state_dict()
    _check_state_types("fit", fitted_state)
    with _calling("fit", "torch.save(state_dict()) after fit"):
        buf = io.BytesIO()
        torch.save(fitted_state, buf)
    state = torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    again = s.fresh("fit")
    again.restore({"state": state, "rng": sess.rng_state()})
    restored = s.predict_all("fit", again)
    for part, a, b in (("known", fitted[0], restored[0]), ("unknown", fitted[1], restored[1])):
        diff = a.differs(b)
        if diff:
            raise _fail("fit", f"a fresh setup + load_state_dict of the fitted state predicts different {diff} on the "
                               f"{part} images: state_dict misses what fit learned")
    return f"fit saw {len(want)} training images in file order, unaugmented; exact predictions from the fitted state"


#: Operations a CUDA graph cannot record: they wait for a device value on the host (``.item()``,
#: ``bool(t)``, shapes that depend on tensor values: ``nonzero``, ``masked_select``, ``unique``,
#: ``bincount``) or make a tensor from host data (``torch.tensor(...)``). Indexing with a boolean
#: mask (``t[mask]``, ``t[mask] = v``) is one too: see :data:`MASK_INDEXING_OPS`.
HOST_OPS = frozenset({
    "aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal", "aten::allclose", "aten::nonzero",
    "aten::argwhere", "aten::masked_select", "aten::_unique", "aten::_unique2", "aten::unique_dim",
    "aten::unique_consecutive", "aten::unique_dim_consecutive", "aten::bincount", "aten::lift_fresh",
})
#: Indexing operations whose result shape depends on the values of a boolean (or uint8) index.
MASK_INDEXING_OPS = frozenset({"aten::index.Tensor", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_"})


def _host_bound(ops: Sequence[tuple[str, Any]]) -> str | None:
    """The first operation of a trace that a CUDA graph cannot record, in words (None if none)."""
    for op, (args, _) in ops:
        if op in HOST_OPS:
            return op
        indices = args[1] if op in MASK_INDEXING_OPS and len(args) > 1 else ()
        if any(isinstance(i, tuple) and i[:1] == ("tensor",) and i[2] in ("torch.bool", "torch.uint8")
               for i in indices or ()):
            return f"{op} with a boolean mask index (t[mask], whose shape depends on the mask's values)"
    return None


def _describe(value: Any) -> Any:
    """A comparable picture of an operation's argument: tensors by shape/dtype, scalars by value."""
    if torch.is_tensor(value):
        return ("tensor", tuple(value.shape), str(value.dtype))
    if isinstance(value, (list, tuple)):
        return tuple(_describe(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _describe(v)) for k, v in value.items())
    if isinstance(value, float):
        return repr(value)  # NaN compares equal to itself
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value) if isinstance(value, (torch.dtype, torch.device, torch.memory_format)) else type(value).__name__


@contextmanager
def trace_ops() -> Iterator[list[tuple[str, Any]]]:
    """Record every operation run inside (name and arguments), optimiser steps excluded.

    Optimisers are left out: the graphs host makes them capturable and re-records on a change of
    their hyperparameters, so their host-side bookkeeping is not the method's concern.
    """
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    from torch.utils._python_dispatch import TorchDispatchMode

    ops: list[tuple[str, Any]] = []
    inside_optimizer = [0]

    class Trace(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = kwargs or {}
            if not inside_optimizer[0]:
                ops.append((func.name(), _describe((args, kwargs))))
            return func(*args, **kwargs)

    def enter(*_: Any) -> None:
        inside_optimizer[0] += 1

    def leave(*_: Any) -> None:
        inside_optimizer[0] -= 1

    handles = [register_optimizer_step_pre_hook(enter), register_optimizer_step_post_hook(leave)]
    try:
        with Trace():
            yield ops
    finally:
        for h in handles:
            h.remove()


def _optimiser_state(method: Method) -> set[tuple[str, int, str]]:
    """(optimiser, parameter index, state key) of every optimiser state entry the method has now."""
    with _calling("graphs", "optimizers()"):
        optimizers = list(method.optimizers())
    found = set()
    for i, opt in enumerate(optimizers):
        index = {id(p): j for j, p in enumerate(p for group in opt.param_groups for p in group["params"])}
        for param, state in opt.state.items():
            found.update((f"{i} ({type(opt).__name__})", index.get(id(param), -1), key) for key in state)
    return found


def _check_graphs(s: _Session) -> str:
    from osrbench import graphs

    reference = s.part("graphs", "preds1")
    sess = s.fresh("graphs")
    method = sess.method
    if not getattr(method, "graph_safe", False):
        return "not declared graph_safe: the engine runs it eagerly and refuses cuda_graphs=true"
    batch = s.config()["batch_size"]
    warmup = graphs.StepGraphs.WARMUP

    # 1 and 2: the full batches as StepGraphs meets them. It runs each phase's first ``warmup`` of the
    # run eagerly, records the next and replays that graph for every later one, in later epochs
    # too (unless the optimisers' hyperparameters changed). So the two after the warm-up and the
    # same position in epoch 1 must run the same operations, and no step after the warm-up may
    # create optimiser state (a graph re-initialises it at every replay, so it never accumulates).
    traces: dict[tuple[str, int], list[list[tuple[str, Any]]]] = {}  # (phase, epoch) -> traced steps
    in_epoch: Counter[tuple[str, int]] = Counter()
    in_run: Counter[str] = Counter()
    epoch = 0

    def traced_step(phase: str, x: torch.Tensor, y: torch.Tensor) -> Any:
        if x.shape[0] != batch:  # partial batches run eagerly
            return method.train_step(phase, x, y)
        position, warm = in_epoch[phase, epoch], in_run[phase] < warmup
        in_epoch[phase, epoch] += 1
        in_run[phase] += 1
        if warm:
            return method.train_step(phase, x, y)
        before = _optimiser_state(method)
        if position in ((warmup, warmup + 1) if epoch == 0 else (warmup,)):
            with trace_ops() as ops:
                out = method.train_step(phase, x, y)
            traces.setdefault((phase, epoch), []).append(ops)
        else:
            out = method.train_step(phase, x, y)
        created = sorted(_optimiser_state(method) - before)
        if created:
            name, index, key = created[0]
            raise _fail("graphs", f"optimiser {name} created its state {key!r} for parameter {index} in a full batch of "
                                  f"phase {phase!r} after the warm-up (epoch {epoch}); a CUDA graph recording that step "
                                  "re-initialises the state at every replay, so it never accumulates: let every "
                                  f"optimiser state exist after the first {warmup} full batches of each phase (every "
                                  "parameter gets a gradient from the start; no clearing of optimiser state, no new "
                                  "optimisers later), or drop graph_safe")
        return out

    sess.step = traced_step
    for epoch in range(TOY_EPOCHS):
        s.epoch("graphs", sess, epoch)
    for (phase, _), steps in traces.items():
        host = next(filter(None, map(_host_bound, steps)), None)
        if host:
            raise _fail("graphs", f"train_step({phase!r}, ...) runs {host}, which waits for a device value on the "
                                  "host or makes a tensor from host data; a CUDA graph cannot record it (remove "
                                  ".item()/bool()/torch.tensor(...) and value-dependent shapes such as t[mask], "
                                  "nonzero(), unique() from the step, or drop graph_safe)")
    for phase in method.phases:
        first, later = traces.get((phase, 0), []), traces.get((phase, 1), [])
        for pair, what in ((first[:2], f"two consecutive full batches of phase {phase!r}"),
                           (first[:1] + later[:1], f"full batch {warmup + 1} of phase {phase!r} in epoch 0 and in epoch 1")):
            if len(pair) == 2 and pair[0] != pair[1]:
                i = next((i for i, (a, b) in enumerate(zip(*pair)) if a != b), min(map(len, pair)))
                show = lambda ops: ops[i][0] if i < len(ops) else "the end of the step"  # noqa: E731
                raise _fail("graphs", f"{what} ran different operations (first difference at "
                                      f"operation {i}: {show(pair[0])} vs {show(pair[1])}, or their scalar arguments); "
                                      "a graph would replay the first one forever: keep Python-side state (step or "
                                      "epoch counters) out of the step's math, or drop graph_safe")

    # 3: the host's graph wrapper trains exactly as the eager loop (run A) did.
    sess = s.fresh("graphs")
    method = sess.method
    cuda = s.device.type == "cuda"
    backend = graphs.CudaGraphBackend(s.device, [sess.generator], check_liveness=True) if cuda else graphs.ReplayBackend()
    with _calling("graphs", "osrbench.graphs.StepGraphs(method, ...)"):
        sess.step = graphed = graphs.StepGraphs(method, batch, backend)
    for epoch in range(TOY_EPOCHS):
        s.epoch("graphs", sess, epoch)
    preds = s.predict_all("graphs", sess)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(graphed.counts.items()))
    if cuda:  # capturable Adam and cuDNN kernels differ from eager in the last bits
        gap = max(np.abs(a.logits - b.logits).max() for a, b in zip(preds, reference))
        value = metrics.auroc(preds[0].score, preds[1].score)
        if value < MIN_AUROC:
            raise _fail("graphs", f"trained through CUDA graphs, the main score's AUROC on the toy problem is "
                                  f"{value:.3f} < {MIN_AUROC} (eager logits differ by up to {gap:.3g})")
        return f"steps {counts}; AUROC {value:.3f}, logits within {gap:.3g} of eager"
    for part, x, y in (("known", reference[0], preds[0]), ("unknown", reference[1], preds[1])):
        diff = x.differs(y)
        if diff:
            raise _fail("graphs", f"training through osrbench.graphs.StepGraphs gave different {diff} on the {part} "
                                  "images than eager training (are the loss terms 0-d tensors of fixed names?)")
    short = [p for p in method.phases if len(traces.get((p, 0), ())) < 2]
    untraced = f"phases {short} not traced (fewer than {warmup + 2} full batches)" if short else ""
    traced = ""
    if len(short) < len(method.phases):
        n = max(len(ops) for steps in traces.values() for ops in steps)
        traced = (f"up to {n} operations per step, none host-bound, stable across steps and epochs, optimiser "
                  f"state complete after the warm-up" + (f"; {untraced}" if short else ""))
    return f"{traced or untraced}; steps {counts}; identical to eager"


def _check_engine(s: _Session) -> str:
    from osrbench import engine

    s.need("engine", "spec", s.spec)
    reg = copy.copy(s.reg)
    reg.datasets = {**s.reg.datasets, TOY_DATASET: toy_dataset_spec()}
    reg.origin = {**s.reg.origin, f"dataset:{TOY_DATASET}": "osrbench"}
    with tempfile.TemporaryDirectory(prefix="osrbench-conformance-") as tmp:
        req = engine.RunRequest(
            method=s.name, dataset=TOY_DATASET, epochs=1, overrides={"batch_size": TOY_BATCH, **s.overrides},
            device=str(s.device), out=Path(tmp) / "runs", data_root=Path(tmp), progress=False, checkpoint_every=1,
        )
        try:
            rec = engine.run(req, registry=reg, log=lambda msg: None).record
        except UserError as exc:
            raise _fail("engine", f"engine.run refused the run: {exc}") from exc
        except MethodFailed as exc:
            raise _fail("engine", f"engine.run failed: {exc}") from exc
        try:
            checkpoints.read(rec.dir / checkpoints.CHECKPOINT)
        except checkpoints.CorruptCheckpoint as exc:
            raise _fail("engine", f"the run's checkpoint cannot be read back for --resume: {exc}") from exc
    bad = {k: v for k, v in rec.metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise _fail("engine", f"the record's metrics are not finite: {bad}")
    return f"auroc {rec.metrics['auroc']:.3f}, acc {rec.metrics['acc']:.3f} (K={len(rec.known_classes)})"


_RUNNERS: dict[str, Callable[[_Session], str]] = {
    "register": _check_register,
    "spec": _check_spec,
    "train": _check_train,
    "predict": _check_predict,
    "sign": _check_sign,
    "determinism": _check_determinism,
    "state": _check_state,
    "features": _check_features,
    "fit": _check_fit,
    "graphs": _check_graphs,
    "engine": _check_engine,
}
assert tuple(_RUNNERS) == CHECKS


def _session(name: str, registry: plugins.Plugins | None, device: str | torch.device,
             overrides: Mapping[str, Any] | None) -> _Session:
    key = (name, id(registry) if registry is not None else None, str(torch.device(device)),
           json.dumps(dict(overrides or {}), sort_keys=True, default=repr))
    if key not in _CACHE:
        _CACHE[key] = _Session(name, registry, device, overrides)
    return _CACHE[key]


def _run(s: _Session, check: str) -> CheckResult:
    if check not in _RUNNERS:
        raise ValueError(f"unknown check {check!r} (valid: {', '.join(CHECKS)})")
    t0 = time.perf_counter()
    try:
        with _suite_environment(s.device):
            message = _RUNNERS[check](s)
        status = "passed"
    except ConformanceError as exc:
        status, message = "failed", str(exc)
    except _Skip as exc:
        status, message = "skipped", str(exc)
    return CheckResult(check, status, time.perf_counter() - t0, message)


def run_check(
    name: str,
    check: str,
    *,
    registry: plugins.Plugins | None = None,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Run one check of :data:`CHECKS` on method ``name``; raise :class:`ConformanceError` if it fails.

    A check whose prerequisite failed (``predict`` when ``train`` fails) raises too, naming the
    prerequisite. Trained methods are cached between calls (see :func:`clear_cache`).

    :param registry: the plugins to look the method up in (default: the installed ones).
    :param overrides: config overrides for the toy runs (``--set`` keys), e.g. to make a method that
        is slow on CPU smaller.
    """
    __tracebackhide__ = True
    result = _run(_session(name, registry, device, overrides), check)
    if result.status == "failed":
        raise ConformanceError(result.message)
    if result.status == "skipped":
        raise ConformanceError(f"{check}: {result.message}")
    return result


def check_method(
    name: str,
    *,
    registry: plugins.Plugins | None = None,
    device: str | torch.device = "cpu",
    checks: Sequence[str] = CHECKS,
    overrides: Mapping[str, Any] | None = None,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Run the conformance checks on method ``name`` and return the report.

    With ``raise_on_failure`` (default) a failing check raises :class:`ConformanceError` listing
    every failed check after all of them ran; the report is the exception's ``report`` attribute.
    """
    __tracebackhide__ = True
    s = _session(name, registry, device, overrides)
    report = ConformanceReport(name, str(s.device), [_run(s, c) for c in checks])
    if raise_on_failure and not report.ok:
        failed = report.failures
        lines = [r.message for r in failed] or [f"{r.name}: {r.message}" for r in report.results if not r.ok]
        exc = ConformanceError(f"method {name!r} broke {len(lines)} contract(s):\n  " + "\n  ".join(lines))
        exc.report = report  # type: ignore[attr-defined]
        raise exc
    return report


# ------------------------------------------------------------------------------- hook reference docs


def hook_specs() -> list[tuple[str, Callable[..., Any]]]:
    """The hook specifications of ``osrbench.hookspecs``, in source order."""
    from osrbench import hookspecs

    marker = f"{plugins.GROUP}_spec"
    found = [(n, f) for n, f in vars(hookspecs).items() if inspect.isfunction(f) and hasattr(f, marker)]
    return sorted(found, key=lambda nf: nf[1].__code__.co_firstlineno)


def _signature(fn: Callable[..., Any]) -> str:
    """``(register: Callable[[MethodSpec], None]) -> None`` from the (string) annotations."""
    sig = inspect.signature(fn)

    def text(annotation: Any) -> str:
        raw = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        return raw.replace('"', "").replace("'", "")

    params = ", ".join(p.name if p.annotation is p.empty else f"{p.name}: {text(p.annotation)}"
                       for p in sig.parameters.values())
    ret = "" if sig.return_annotation is sig.empty else f" -> {text(sig.return_annotation)}"
    return f"({params}){ret}"


def hook_reference() -> str:
    """The hooks section of docs/PLUGINS.md, rendered from the hookspec signatures and docstrings."""
    parts = []
    for name, fn in hook_specs():
        sig = _signature(fn)
        parts.append(f"### `{name}`\n\n```python\n@osrbench.hookimpl\ndef {name}{sig}:\n    ...\n```\n\n"
                     f"```text\n{inspect.getdoc(fn)}\n```\n")
    return "\n".join(parts)


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m osrbench.testing METHOD...``: print the conformance report of each method."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m osrbench.testing", description=__doc__.splitlines()[0])
    p.add_argument("methods", nargs="*")
    p.add_argument("--device", default="cpu")
    p.add_argument("--hook-reference", action="store_true", help="print the hooks section of docs/PLUGINS.md")
    args = p.parse_args(argv)
    if args.hook_reference:
        print(hook_reference(), end="")
        return 0
    ok = True
    for name in args.methods:
        report = check_method(name, device=args.device, raise_on_failure=False)
        print(report)
        ok &= report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(_main())
