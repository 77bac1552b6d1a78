"""Kernels dispatched per training batch, counted on any device (a ``TorchDispatchMode``; no GPU needed).

At the releases' batch size a classifier32 step is launch-bound on a GPU, so the number of kernels
a batch launches is what decides its eager speed there, and it does not depend on the machine.

What counts as a kernel: every aten operation that reaches the backend, except views (``view``,
``permute``, ``expand``, ...), allocations (``empty*``, ``new_empty*``), ``detach``/``alias`` and
the profiler's markers. Optimisers are counted as torch runs them on CUDA: their param groups are
switched to ``foreach`` (CUDA's default; on the CPU each foreach op loops over the tensors, with the
same math), and the step counts Adam keeps on the host there (0-d CPU tensors) launch nothing. On
CUDA only operations that touch a CUDA tensor count. ``syncs`` counts reads of a device value on the
host (``.item()``, ``bool(t)``, ``nonzero``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

#: Operations that only allocate or alias memory: no kernel runs.
NOT_KERNELS = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "alias",
               "lift_fresh", "set_", "_record_function_enter_new", "_record_function_exit", "resize_"}
#: Operations that read a device value on the host.
SYNCS = {"_local_scalar_dense", "nonzero", "equal", "is_nonzero"}


@dataclass
class KernelCount:
    kernels: Counter = field(default_factory=Counter)
    syncs: int = 0

    @property
    def total(self) -> int:
        return sum(self.kernels.values())


class KernelCounter(TorchDispatchMode):
    """Counts the kernels (and host syncs) of the operations run inside it; see the module doc."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.count = KernelCount()
        self._in_optimizer = 0
        self.paused = False  # CountedReplay: a CPU stand-in for a graph launch runs uncounted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if self.paused or func.is_view or name in NOT_KERNELS or func.namespace == "profiler":
            return out
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if self.device.type == "cuda":
            on_device = any(t.device.type == "cuda" for t in tensors)
        else:  # inside an optimiser, 0-d CPU tensors are what CUDA keeps on the host (Adam's steps)
            on_device = not (self._in_optimizer and all(t.dim() == 0 for t in tensors))
        if not on_device:
            return out
        self.count.kernels[name] += 1
        if name in SYNCS:
            self.count.syncs += 1
        return out

    def __enter__(self):
        self._hooks = [register_optimizer_step_pre_hook(self._enter_optimizer),
                       register_optimizer_step_post_hook(self._leave_optimizer)]
        return super().__enter__()

    def __exit__(self, *exc: Any):
        for h in self._hooks:
            h.remove()
        return super().__exit__(*exc)

    def _enter_optimizer(self, *_: Any) -> None:
        self._in_optimizer += 1

    def _leave_optimizer(self, *_: Any) -> None:
        self._in_optimizer -= 1


_ACTIVE: list[KernelCounter] = []


def count(fn, device: torch.device) -> tuple[Any, KernelCount]:
    """``fn()``'s result and the kernels it dispatched."""
    counter = KernelCounter(device)
    _ACTIVE.append(counter)
    try:
        with counter:
            result = fn()
    finally:
        _ACTIVE.pop()
    return result, counter.count


#: What torch's ``CUDAGraph.replay`` dispatches itself before the launch: a seed and an offset
#: filled for each generator state registered with the graph (the run's generator and the
#: device's default one). The counter sees them on CUDA; on the CPU they are added by name.
REPLAY_PROLOGUE = {"fill_ (CUDA graph replay prologue)": 4}


class CountedReplay:
    """:class:`osrbench.graphs.ReplayBackend` for counting on the CPU: a replay (the recorded step run
    again) dispatches nothing the counter sees, as a graph launch does; torch's replay prologue is
    added as :data:`REPLAY_PROLOGUE`. What is left is what the host dispatches around a replay."""

    def __init__(self) -> None:
        from osrbench.graphs import ReplayBackend

        self._inner = ReplayBackend()

    def warm_up(self, step):
        return self._inner.warm_up(step)

    def capture(self, step):
        replay, packed = self._inner.capture(step)

        def uncounted() -> None:
            counters = list(_ACTIVE)
            for c in counters:
                c.paused = True
            try:
                replay()
            finally:
                for c in counters:
                    c.paused = False
                    c.count.kernels.update(REPLAY_PROLOGUE)

        return uncounted, packed


def foreach_like_cuda(optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """Run the optimisers' foreach implementations, as torch picks on CUDA (the math is the same)."""
    for opt in optimizers:
        for group in opt.param_groups:
            if "foreach" in group:
                group["foreach"] = True


#: Training images of one CIFAR-10 split (6 known classes x 5,000): the stream's once-per-pass
#: work (the shuffle and augmentation draws, the chunk's gather and crop) is spread over its batches.
PASS_IMAGES = 30000
BATCH = 64
K = 6  # known classes, as in a CIFAR-10 split
#: Full batches each phase runs before the counted one (momentum buffers, Adam state, ARPL+CS's
#: branch-1 gradients: what a later batch of the run already has).
WARMUP = 3


def synthetic_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded uint8 CIFAR-shaped images and labels of :data:`K` classes (speed does not depend on pixels)."""
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randint(0, K, (n,), generator=g))


def bench_session(name: str, x: torch.Tensor, y: torch.Tensor, device: torch.device, overrides: dict | None = None,
                  graph_backend=None, seed: int = 0):
    """Method ``name`` set up by ``osrbench.session`` as the engine sets it up, on images ``x, y`` of
    :data:`K` classes (batch 64, crop and flip, CIFAR-10's config, plus ``overrides``), with its step
    built (``graph_backend``: as :func:`osrbench.session.open_session` takes it)."""
    from osrbench import config as configmod
    from osrbench import plugins, session
    from osrbench.datasets import OpenSetData

    k = K
    reg = plugins.get()
    spec = reg.method(name)
    _, cfg = configmod.resolve(spec, reg.dataset("cifar10"),
                               overrides={"batch_size": BATCH, "augment": "crop_flip", **(overrides or {})})
    data = OpenSetData(x, y, x[:k], torch.arange(k), x[:k], torch.arange(k))
    s = session.open_session(spec, cfg, data, num_classes=k, dataset="cifar10", device=device, seed=seed,
                             graph_backend=graph_backend)
    s.build_step()
    return s


def stream_per_batch(device: torch.device, images: int = PASS_IMAGES) -> tuple[float, KernelCount]:
    """Kernels per batch of one crop-and-flip pass of ``images`` 32-px images, and the pass's count."""
    from osrbench.data.stream import TrainStream

    x, y = synthetic_images(images)
    stream = TrainStream(x, y, BATCH, seed=0, device=device, augment="crop_flip")
    _, counted = count(lambda: sum(1 for _ in stream.batches(0)), device)
    return counted.total / len(stream), counted


@dataclass
class MethodCount:
    """Kernels of one steady full batch of every phase of a method, as the engine runs it."""

    method: str
    steps: dict[str, KernelCount]  # phase -> the step and the summing of its loss terms
    stream: float  # per batch of each phase's pass

    @property
    def per_batch(self) -> float:
        return sum(c.total for c in self.steps.values()) + self.stream * len(self.steps)

    @property
    def syncs(self) -> int:
        return sum(c.syncs for c in self.steps.values())


def method_per_batch(name: str, device: torch.device, stream: float, graphed: bool = False) -> MethodCount:
    """Set ``name`` up as the engine does (32 px, batch 64, crop and flip) and count, per phase, one
    full batch after :data:`WARMUP`: its ``train_step`` and the summing of its loss terms
    (``session.LossSums``), fed by the stream as the session feeds it. ``graphed``: the counted
    batch is a replay (real CUDA graphs on CUDA, :class:`CountedReplay` on the CPU): what the host
    still dispatches around the one graph launch (the labels' copy, the loss terms' add, torch's
    replay prologue)."""
    from osrbench import graphs, session

    warm = WARMUP + graphed  # graphs: the batch after the warm-up is recorded
    x, y = synthetic_images(BATCH * (warm + 1))
    cuda = device.type == "cuda"
    s = bench_session(name, x, y, device, {"cuda_graphs": graphed} if cuda or not graphed else {},  # CPU: "auto"
                      graph_backend=CountedReplay if graphed and not cuda else None)
    if not cuda:
        foreach_like_cuda(s.method.optimizers())
    step = s.step
    sums = session.LossSums(device)
    steps = {}
    for index, phase in enumerate(s.phases):
        into = step.input_buffer(phase) if isinstance(step, graphs.StepGraphs) else None
        batches = s.stream.batches(0, index, into)  # each batch made as the engine makes it (its kernels: the stream's)
        for _ in range(warm):
            sums.add(phase, step(phase, *next(batches)))
        images, labels = next(batches)
        _, steps[phase] = count(lambda: sums.add(phase, step(phase, images, labels)), device)
    return MethodCount(name, steps, stream)
