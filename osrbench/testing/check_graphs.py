"""Check ``graphs``: a method declaring graph_safe keeps the promises CUDA graphs rely on."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from osrbench import metrics
from osrbench.method import Method
from osrbench.testing.contracts import MIN_AUROC
from osrbench.testing.runs import _calling, _fail, _Session
from osrbench.testing.toy import TOY_EPOCHS

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
