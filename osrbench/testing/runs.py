"""The shared toy runs every check reads: one trained method per (method, registry, device,
overrides), how the suite calls into it, and the contract helpers the checks share."""

from __future__ import annotations

import io
import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from osrbench import checkpoints, evaluation, plugins, session
from osrbench import config as configmod
from osrbench.datasets import OpenSetData
from osrbench.evaluation import BadPrediction, Outputs
from osrbench.method import MethodSpec
from osrbench.testing.contracts import ConformanceError, _Skip
from osrbench.testing.toy import (
    TOY_BATCH,
    TOY_CLASSES,
    TOY_DATASET,
    TOY_EPOCHS,
    TOY_TEST_PER_CLASS,
    TOY_TRAIN_PER_CLASS,
    TOY_UNKNOWN,
    toy_data,
    toy_dataset_spec,
)

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
