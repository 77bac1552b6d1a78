"""CUDA graphs of whole training steps (engine key ``cuda_graphs``).

At the releases' batch size (64) a classifier32 step is launch-bound on a current GPU: one DIAS
batch dispatches about 900 kernels over its two passes (four networks, forwards, backwards and
four optimisers; ``make kernels``).
:class:`StepGraphs` records one full-batch ``train_step`` per phase as a CUDA graph and replays it
with one launch per batch. The recorded kernels are the eager step's kernels, so the math is the
same; only the launch cost goes.

What a method promises by setting ``graph_safe = True`` (the conformance suite's ``graphs``
check verifies the first three on the CPU; docs/PLUGINS.md, "CUDA graphs", says them once in full):

1. ``train_step`` never reads a device value on the host (``.item()``, ``bool(t)``), makes no
   value-dependent shape (``t[mask]``, ``nonzero``) and never makes a tensor from host data;
2. with the same optimiser hyperparameters, every full batch of a phase runs the same operations
   with the same scalar arguments, in every epoch (no Python-side step or epoch counter inside the math);
3. all optimiser state exists after the warm-up (none is created by a recorded step);
4. the state its step reads or writes (parameters, buffers, optimiser state, gradients zeroed in
   place) stays alive between steps: nothing the graph recorded is freed by eager code.

What the host does for it:

- only full batches are graphed; the last, partial batch of a pass runs eagerly on the same
  tensors (parameters and optimiser state are updated in place either way);
- the first ``warmup`` full batches of each phase run eagerly on a side stream (optimiser state,
  cuDNN autotuning, allocator), as torch's whole-network capture recipe asks;
- Adam-style optimisers are switched to ``capturable`` (their step count lives on the device);
  a graph is replayed only under the optimiser hyperparameters it was recorded with, so a change
  (the learning rate at an epoch boundary) re-records each phase at its next full batch;
- the run's generator is registered with each graph, so GAN noise advances exactly as it does
  eagerly and is checkpointed with the run; dropout's default CUDA generator graphs handle alone;
- the stream writes each full batch straight into the phase's static input
  (:meth:`StepGraphs.input_buffer`), and the loss terms are packed into one tensor inside the
  graph that the engine adds to its sums as it is (:class:`PackedLosses`): around a replay the
  host dispatches the labels' copy and one add, plus torch's own replay prologue (a seed and an
  offset filled per registered generator); ``make kernels`` counts it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from osrbench.method import Method

Step = Callable[[], dict[str, torch.Tensor]]


def hyperparameters(optimizers: Iterable[torch.optim.Optimizer]) -> tuple:
    """Every optimiser's param-group settings (lr, momentum, ...) as one hashable value.

    A graph bakes Python floats such as the learning rate into its kernels; a graph recorded under
    other values than the current ones must not be replayed.
    """

    def freeze(value: Any) -> Any:
        if torch.is_tensor(value):  # a tensor lr is read from device memory: its identity suffices
            return ("tensor", id(value))
        if isinstance(value, (list, tuple)):
            return tuple(freeze(v) for v in value)
        return value

    return tuple(
        tuple(sorted((k, freeze(v)) for k, v in group.items() if k != "params"))
        for opt in optimizers for group in opt.param_groups
    )


def make_capturable(optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """Switch optimisers that have a ``capturable`` flag (Adam, AdamW, ...) to it.

    A non-capturable Adam keeps its step count on the host and computes the bias correction
    there, which a graph would freeze at the recorded step. Existing step counts move to their
    parameter's device.
    """
    for opt in optimizers:
        if "capturable" not in opt.defaults:
            continue
        for group in opt.param_groups:
            group["capturable"] = True
        for param, state in opt.state.items():
            step = state.get("step")
            if torch.is_tensor(step) and step.device != param.device:
                state["step"] = step.to(param.device, torch.float32)


class CudaGraphBackend:
    """Records and replays with ``torch.cuda.CUDAGraph`` (one private memory pool per graph)."""

    def __init__(self, device: torch.device, generators: Sequence[torch.Generator] = (),
                 check_liveness: bool = False) -> None:
        if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
            raise RuntimeError(f"cuda_graphs needs a newer torch than {torch.__version__} "
                               "(CUDAGraph.register_generator_state, for the run's seeded generator)")
        self.device = device
        self.generators = [g for g in generators if g.device.type == "cuda"]
        # check_liveness: torch raises at replay if eager code freed a tensor the graph uses
        # (contract 3 of graph_safe); a debugging aid of the conformance suite.
        self.options = {"check_input_liveness": True} if check_liveness else {}
        self._side = torch.cuda.Stream(device)

    def warm_up(self, step: Step) -> dict[str, torch.Tensor]:
        self._side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._side):
            out = step()
        torch.cuda.current_stream(self.device).wait_stream(self._side)
        return out

    def capture(self, step: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        """Record ``step``, then replay it once: the result holds one executed step."""
        graph = torch.cuda.CUDAGraph()
        for g in self.generators:
            graph.register_generator_state(g)
        with torch.cuda.graph(graph, **self.options):
            packed = step()
        graph.replay()
        return graph.replay, packed


class ReplayBackend:
    """A stand-in for CUDA graphs on any device: "replay" runs the recorded Python again.

    It exercises everything :class:`StepGraphs` does around the graph (static inputs, warm-up,
    re-recording, copying outputs out) on the CPU, so that logic is tested where no GPU is; what
    only a real graph does (freezing the Python side) is the ``graphs`` conformance check's part.
    """

    def warm_up(self, step: Step) -> dict[str, torch.Tensor]:
        return step()

    def capture(self, step: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        packed = step()

        def replay() -> None:
            out = step()
            if out.shape == packed.shape:
                packed.copy_(out)
            else:  # other terms than when recorded (a NaN diagnostic added): keep what it returned, as eagerly
                packed.set_(out)

        return replay, packed


class PackedLosses(dict):
    """A replayed step's loss terms: views of one float32 tensor the graph writes (``packed``), so
    :class:`osrbench.session.LossSums` adds them in one kernel. Valid until the phase's next step."""

    def __init__(self, names: Sequence[str], packed: torch.Tensor) -> None:
        super().__init__((name, packed[i]) for i, name in enumerate(names))
        self.packed = packed


@dataclass
class _Recorded:
    key: tuple
    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    packed: torch.Tensor
    replay: Callable[[], None]


class StepGraphs:
    """``method.train_step`` with every full batch after the warm-up replayed from a CUDA graph.

    Call it as the engine calls ``train_step``: ``graphs(phase, images, labels)`` returns the
    step's loss terms (after a replay a :class:`PackedLosses`, valid until the phase's next step:
    sum them or copy them). ``counts`` says how many steps ran ``eager``, were ``captured`` or
    ``replayed``. ``channels_last``: the static inputs' memory format (the bf16 policy's).
    """

    #: Eager full batches per phase before recording (torch's whole-network capture recipe).
    WARMUP = 3

    def __init__(self, method: Method, batch_size: int, backend: Any, warmup: int = WARMUP,
                 channels_last: bool = False) -> None:
        self.method = method
        self.batch_size = batch_size
        self.backend = backend
        self.warmup = warmup
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._inputs: dict[str, torch.Tensor] = {}
        self.optimizers = list(method.optimizers())
        if isinstance(backend, CudaGraphBackend):
            make_capturable(self.optimizers)
        self.counts: Counter[str] = Counter()
        self._warm: Counter[str] = Counter()
        self._graphs: dict[str, _Recorded] = {}

    def __call__(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[0] != self.batch_size:  # the pass's last, partial batch
            self.counts["eager"] += 1
            return self.method.train_step(phase, images, labels)
        if self._warm[phase] < self.warmup:
            self._warm[phase] += 1
            self.counts["eager"] += 1
            return self.backend.warm_up(lambda: self.method.train_step(phase, images, labels))
        key = hyperparameters(self.optimizers)
        rec = self._graphs.get(phase)
        if rec is not None and rec.key == key:
            if images is not rec.images:  # the stream wrote it in place (input_buffer) or not
                rec.images.copy_(images)
            rec.labels.copy_(labels)
            rec.replay()
            self.counts["replayed"] += 1
        else:
            # Graphs of older hyperparameters can never run again: free their memory first.
            self._graphs = {p: r for p, r in self._graphs.items() if r.key == key}
            rec = self._record(phase, images, labels, key)
            self.counts["captured"] += 1
        return PackedLosses(rec.names, rec.packed)

    def input_buffer(self, phase: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """``into`` for the stream's pass of ``phase`` (:meth:`TrainStream.batches`): each full batch is
        written into the phase's static input, the tensor its graph reads, so a replay copies no images."""

        def buffer(like: torch.Tensor) -> torch.Tensor:
            shape = (like.shape[0], 3, *like.shape[2:])
            buf = self._inputs.get(phase)
            if buf is None or tuple(buf.shape) != shape:
                buf = self._inputs[phase] = torch.empty(shape, dtype=torch.float32, device=like.device,
                                                        memory_format=self.memory_format)
            return buf

        return buffer

    def _record(self, phase: str, images: torch.Tensor, labels: torch.Tensor, key: tuple) -> _Recorded:
        # The phase's static input when the stream wrote into it, else a copy (clone keeps channels-last strides).
        static_images = images if images is self._inputs.get(phase) else images.clone()
        static_labels = labels.clone()
        names: list[str] = []

        def step() -> torch.Tensor:
            out = self.method.train_step(phase, static_images, static_labels)
            names[:] = list(out)
            return torch.stack([v.detach().float().reshape(()) for v in out.values()])

        replay, packed = self.backend.capture(step)
        rec = _Recorded(key, static_images, static_labels, names, packed, replay)
        self._graphs[phase] = rec
        return rec
