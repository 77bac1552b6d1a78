"""One method set up for one run, exactly as the engine trains it: the only place that does it.

:func:`open_session` takes a method spec, a resolved config and loaded data and makes, in this
order: the seeded global RNGs, the run's ``torch.Generator``, the training feed (the device-resident
stream, or the file feed of a file-backed dataset: :func:`make_stream`),
the precision policy, the :class:`Context`, the method (``factory()`` then ``setup(ctx)``). After a
resume's :meth:`Session.restore`, :meth:`Session.build_step` makes the step callable (eager, or
replayed from CUDA graphs); :meth:`Session.run_epoch` drives one epoch. The engine, rescore, the
conformance suite and the benchmarks all build their methods here.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from osrbench import checkpoints, graphs
from osrbench.data.feed import FileStream
from osrbench.data.imagefiles import OpenSetFiles
from osrbench.data.randaugment import ops_for
from osrbench.data.stream import TrainStream, derive_seed
from osrbench.datasets import DataNotFound, DatasetSpec, OpenSetData
from osrbench.devices import Precision
from osrbench.errors import MethodFailed, UserError
from osrbench.evaluation import BATCH, model_inputs
from osrbench.method import Context, Method, MethodSpec, implements

#: ``call(stage, fn, *args)``: how a session calls into the method (the engine records failures).
Call = Callable[..., Any]


def _call(stage: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class MethodRaised(MethodFailed):
    """The method's own code raised (the original exception is the cause)."""


class BadLosses(MethodFailed):
    """``train_step`` returned something other than a dict of named 0-d loss terms."""

    stage = "train_step"


def check_losses(phase: str, losses: Any) -> None:
    """Raise :class:`BadLosses` unless ``losses`` is a non-empty dict of str -> 0-d tensor (or number).

    Every term, a loss or a diagnostic (an accuracy, a margin), is averaged over the pass into the
    record's history; the engine never sums or differentiates them. At least one is required: a
    step without one is not logged, and the CUDA-graph host packs the terms into one tensor.
    Metadata only (type, shape): no host synchronisation. The conformance suite checks more.
    """
    where = f"train_step({phase!r}, ...)"
    if not isinstance(losses, Mapping):
        raise BadLosses(f"{where} returned {type(losses).__name__}; it must return a dict of named loss terms")
    if not losses:
        raise BadLosses(f"{where} returned an empty dict; it must return at least one named loss term "
                        "(a detached 0-d tensor, e.g. {'loss': loss.detach()})")
    for key, value in losses.items():
        if not isinstance(key, str) or not key:
            raise BadLosses(f"{where} returned a loss named {key!r}; names must be non-empty str")
        if torch.is_tensor(value):
            if value.dim() != 0:
                raise BadLosses(f"{where} returned loss {key!r} of shape {tuple(value.shape)}, expected a 0-d tensor")
            if value.is_complex() or not (value.is_floating_point() or value.dtype in (torch.int64, torch.int32)):
                raise BadLosses(f"{where} returned loss {key!r} of dtype {value.dtype}, expected a float tensor")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadLosses(f"{where} returned loss {key!r} as {type(value).__name__}, expected a 0-d tensor")


class LossSums:
    """Each loss term summed over a pass on the device: one stack and one add per step, no host sync.

    :meth:`means` reads them all back at once (the engine's one host synchronisation per epoch).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sums: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}

    def add(self, phase: str, losses: Mapping[str, Any]) -> None:
        key = (phase, tuple(losses))
        if isinstance(losses, graphs.PackedLosses):  # a replayed step's terms, already one float32 tensor
            packed, fresh = losses.packed, False
        else:
            values = [(v.detach() if torch.is_tensor(v) else torch.tensor(float(v))).to(self.device, torch.float32)
                      for v in losses.values()]
            packed = torch.stack(values) if len(values) > 1 else values[0].reshape(1)
            fresh = len(values) > 1  # a stack is a new tensor; a single term is a view of the method's
        if key in self._sums:
            self._sums[key].add_(packed)
        else:
            self._sums[key] = packed if fresh else packed.clone()

    def means(self, steps: int) -> dict[str, float]:
        """``{"phase/term": sum / steps}`` of every term seen, in the order first seen."""
        if not self._sums:
            return {}
        values = (torch.cat(list(self._sums.values())) / steps).tolist()
        row: dict[str, float] = {}
        names = [f"{phase}/{name}" for phase, terms in self._sums for name in terms]
        for name, value in zip(names, values):
            row[name] = row.get(name, 0.0) + value
        return row


def guarded(method: str, on_error: Callable[[str, BaseException], str] | None = None) -> Call:
    """A ``call`` whose method exceptions become one :class:`MethodRaised` line.

    ``on_error(stage, exc)`` may record the failure and returns a note appended to the message.
    """

    def call(stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (KeyboardInterrupt, MethodFailed, UserError):
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of the method's code, SystemExit included
            note = on_error(stage, exc) if on_error else ""
            raise MethodRaised(f"method {method!r} raised in {stage}: {type(exc).__name__}: {exc}{note}") from exc

    return call


def default_data_root() -> Path:
    env = os.environ.get("OSRBENCH_DATA")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "osrbench"


def load_data(dataset: DatasetSpec, split: Any, image_size: int, root: Path | None = None
              ) -> OpenSetData | OpenSetFiles:
    """The split's uint8 tensors (or, for a file-backed dataset, its files); missing data is a user error."""
    try:
        from osrbench.protocols import reader_of

        reader = reader_of(getattr(split, "protocol", ""))  # a protocol of the user's files brings its own images
        return (reader.load if reader else dataset.load)(Path(root or default_data_root()), split, image_size)
    except DataNotFound as exc:
        raise UserError(str(exc)) from None


def seed_everything(seed: int, device: torch.device, deterministic: bool | None = False) -> None:
    """Seed Python, numpy and torch from the run's seed; pick the kernel policy (``None``: leave it)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif deterministic is False and device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the releases do


def phases_problem(phases: Any) -> str | None:
    """What is wrong with a method's ``phases`` (``None``: nothing); the conformance suite says the same."""
    if not isinstance(phases, (tuple, list)) or not phases:
        return f"phases is {phases!r}; expected a non-empty tuple of phase names"
    if not all(isinstance(p, str) and p for p in phases) or len(set(phases)) != len(phases):
        return f"phases {phases!r} must be distinct non-empty strings"
    return None


def _make(spec: MethodSpec) -> Method:
    method = spec.factory()
    if not isinstance(method, Method):
        raise TypeError(f"factory() returned {type(method).__name__}, not an osrbench.Method subclass")
    problem = phases_problem(method.phases)
    if problem:  # an epoch is one pass per phase: with none the run would train nothing and still write a record
        raise UserError(f"method {spec.name!r} cannot be trained: {problem}")
    return method


@dataclass
class Session:
    """A method, its Context and everything the engine feeds it, for one run."""

    spec: MethodSpec
    config: Mapping[str, Any]
    method: Method
    ctx: Context
    stream: TrainStream | FileStream
    precision: Precision
    generator: torch.Generator
    call: Call = _call
    step: Callable[..., dict[str, torch.Tensor]] | None = None
    phases: tuple[str, ...] = field(default=())
    #: The resolved ``cuda_graphs``: the steps replay from real CUDA graphs.
    cuda_graphs: bool = False
    #: Makes the backend of :class:`graphs.StepGraphs` (``None``: the step is ``train_step`` itself).
    graph_backend: Callable[[], Any] | None = None

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Load a checkpoint's method state and random states (before :meth:`build_step`)."""
        self.call("load_state_dict(state)", self.method.load_state_dict, ckpt["state"])
        checkpoints.set_rng_state(ckpt["rng"], self.generator)

    def build_step(self) -> Callable[..., dict[str, torch.Tensor]]:
        """The step callable: ``train_step`` itself, or its CUDA-graph replay (``cuda_graphs``).

        Built after a resume, because graphs make the loaded optimiser states capturable.
        """
        self.step = self.method.train_step
        if self.graph_backend is not None:
            self.step = self.call("cuda_graphs set-up", lambda: graphs.StepGraphs(
                self.method, self.config["batch_size"], self.graph_backend(), channels_last=self.precision.bf16))
        return self.step

    def run_epoch(self, epoch: int, on_step: Callable[[str, int, Any], None] | None = None,
                  batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None) -> None:
        """Every phase's pass over the stream (``on_step(phase, index, losses)`` after each step), then end_epoch.

        ``batches(phase_index)`` replaces the stream's pass (the benchmarks feed a DataLoader).
        """
        for _ in self.epoch_steps(epoch, on_step, batches):
            pass

    def epoch_steps(self, epoch: int, on_step: Callable[[str, int, Any], None] | None = None,
                    batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None
                    ) -> Iterator[None]:
        """:meth:`run_epoch`, yielding after each step (a pack interleaves the steps of its runs)."""
        for phase_index in range(len(self.phases)):
            passes = batches(phase_index) if batches is not None else None
            yield from self.phase_steps(epoch, phase_index, on_step, passes)
        self.call(f"end_epoch({epoch})", self.method.end_epoch, epoch)

    def phase_steps(self, epoch: int, phase_index: int, on_step: Callable[[str, int, Any], None] | None = None,
                    passes: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Iterator[None]:
        """One phase's pass over the stream (or ``passes``), yielding after each step."""
        step = self.step or self.build_step()
        phase = self.phases[phase_index]
        if passes is None:
            into = step.input_buffer(phase) if isinstance(step, graphs.StepGraphs) else None
            passes = self.stream.batches(epoch, phase_index, into)
        for i, (x, y) in enumerate(passes):
            with self.precision.autocast():
                losses = self.call(f"train_step({phase!r}, ...) in epoch {epoch}", step, phase,
                                   self.precision.inputs(x), y)
            if on_step is not None:
                on_step(phase, i, losses)
            yield

    def rng_state(self) -> dict[str, Any]:
        return checkpoints.rng_state(self.generator)

    @property
    def fits(self) -> bool:
        """The method has a fit stage (:meth:`Method.fit`)."""
        return implements(self.method, "fit")

    def fit_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The fit stage's pass: every training image once, in file order, unaugmented, prepared as
        ``predict``'s images are (float, normalised as the run's ``normalize``), with its label."""
        images, labels = self.stream.images, self.stream.labels
        for start in range(0, len(images), BATCH):
            x = model_inputs(images[start:start + BATCH], self.device, self.config["normalize"], self.precision)
            yield x, labels[start:start + BATCH]

    def fit(self) -> None:
        """Run the method's fit stage once (after the last epoch; the caller checkpoints the result)."""
        with self.precision.autocast():
            self.call("fit(batches)", self.method.fit, self.fit_batches())


def check_compiler(device: torch.device) -> None:
    """Refuse ``compile=true`` where inductor cannot generate code (before any step): on the CPU
    without a C++ compiler, on a CUDA device without Triton."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise UserError("compile=true on a CUDA device needs Triton, and torch found none: "
                            "pip install triton, or drop --set compile=true")
        return
    if device.type != "cpu":
        return
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - inductor raises its own error types here
        raise UserError(f"compile=true on the CPU needs a C++ compiler, and torch found none ({type(exc).__name__}): "
                        "install g++ or set CXX, or drop --set compile=true") from None


def compile_networks(method: Method) -> None:
    """``compile=true``: compile each of ``method.networks()`` in place (``module.compile()``).

    Only the networks: a whole ``train_step`` breaks into many graphs (``zero_grad``, backward,
    the seeded generator). Random operations (dropout) run torch's eager kernels inside the
    compiled code (inductor's ``fallback_random``), so a compiled run draws the same masks and
    noise as an eager one and differs from it by rounding only. Compiling happens at the first
    call of each network, inside the run's thread setting; with ``cuda_graphs=true`` that is an
    eager warm-up step, so a graph records the compiled kernels and never a compilation. The
    default mode only: inductor's own CUDA graphs (``reduce-overhead``) would nest in ours.
    """
    import torch._inductor.config as inductor

    inductor.fallback_random = True
    for net in method.networks():
        net.compile()


def resolve_cuda_graphs(setting: Any, method: Method, name: str, device: torch.device, compile: bool) -> bool:
    """Whether a run's steps replay from CUDA graphs: ``auto`` is on for a ``graph_safe`` method on a
    CUDA device without ``compile=true``, off elsewhere; ``true`` insists (a user error where it
    cannot be honoured), ``false`` is eager.

    ``auto`` leaves compiled runs eager until compiled graphs are measured faster than graphs
    alone on a GPU; ``true`` records the compiled networks' kernels (:func:`compile_networks`).
    """
    safe = bool(getattr(method, "graph_safe", False))
    if setting == "auto":
        return safe and device.type == "cuda" and not compile
    if not setting:
        return False
    if not safe:
        raise UserError(f"method {name!r} does not declare graph_safe, so its steps cannot be replayed "
                        "from CUDA graphs (drop --set cuda_graphs=true)")
    if device.type != "cuda":
        raise UserError(f"cuda_graphs=true needs a CUDA device, and this run is on {device.type} "
                        "(drop --set cuda_graphs=true)")
    return True


def make_stream(data: OpenSetData | OpenSetFiles, cfg: Mapping[str, Any], seed: int, device: torch.device,
                dataset: str) -> TrainStream | FileStream:
    """The run's training feed: the device-resident stream of an in-memory split, the file feed
    (decoded per pass) of a file-backed one; the same draws from ``(seed, epoch, phase)`` either way."""
    kw = dict(augment=cfg["augment"], normalize=cfg["normalize"], randaugment=cfg["randaugment"],
              randaugment_ops=ops_for(dataset), randaugment_n=cfg.get("randaugment_n", 1))  # absent from older records
    if isinstance(data, OpenSetFiles):
        return FileStream(data.train.paths, data.train_y, cfg["batch_size"], seed, data.image_size, device,
                          images=data.train_x, **kw)
    return TrainStream(data.train_x, data.train_y, cfg["batch_size"], seed, device, **kw)


def open_session(spec: MethodSpec, config: Mapping[str, Any], data: OpenSetData | OpenSetFiles, *, num_classes: int,
                 dataset: str, device: torch.device, seed: int, deterministic: bool | None = False,
                 call: Call = _call, graph_backend: Callable[[], Any] | None = None) -> Session:
    """Seed, build the stream, precision and Context, make the method and call ``setup(ctx)``.

    ``graph_backend()`` replaces the CUDA-graph backend of a run whose ``cuda_graphs`` is not false
    and whose method is graph_safe (a pack on the CPU: :class:`graphs.ReplayBackend`).
    """
    cfg = dict(config)
    seed_everything(seed, device, deterministic)
    generator = torch.Generator(device=device).manual_seed(derive_seed(seed, 1))
    stream = make_stream(data, cfg, seed, device, dataset)
    if cfg["compile"]:
        check_compiler(device)
    # The method is made before the precision policy and the Context, which depend on whether its
    # steps are graphed (only graph_safe methods are); making it first draws no random number.
    method = call("factory()", _make, spec)
    if graph_backend is not None and cfg["cuda_graphs"] is not False and getattr(method, "graph_safe", False):
        cuda_graphs, backend = False, graph_backend
    else:
        cuda_graphs = resolve_cuda_graphs(cfg["cuda_graphs"], method, spec.name, device, cfg["compile"])
        backend = (lambda: graphs.CudaGraphBackend(device, [generator])) if cuda_graphs else None
    precision = Precision(cfg["precision"], device, cuda_graphs=cuda_graphs)
    ctx = Context(
        num_classes=num_classes, image_shape=(3, *data.image_shape[1:]), device=device, config=cfg,
        generator=generator, epochs=cfg["epochs"], dataset=dataset, steps_per_epoch=len(stream),
        channels_last=precision.bf16, train_size=len(data.train_y),
    )
    call("setup(ctx)", method.setup, ctx)
    if cfg["compile"]:
        call("networks() (compile=true)", compile_networks, method)
    return Session(spec, cfg, method, ctx, stream, precision, generator, call, phases=tuple(method.phases),
                   cuda_graphs=cuda_graphs, graph_backend=backend)
