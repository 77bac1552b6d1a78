"""A pack: several runs trained at once in one process, one training step each in turn.

On one GPU, runs in separate processes are time-sliced: their kernels never overlap, and at the
releases' batch size one run's kernels are too small to fill the device. In a pack each run
keeps its own session, CUDA stream, CUDA graphs and random states, and the driver steps the
runs round robin; a step only enqueues work on its run's stream, so the kernels of the runs
overlap on the device.

Each run stays exactly itself: its own record, config hash, checkpoints, resume and failure.
Before each of its steps the run's global random states (Python, numpy, torch's CPU generator
and, on CUDA, its own state of the device's default generator, which its graphs register) are
swapped in, so no run draws from another's sequence: on the CPU a packed run's record and scores
are bit-identical to the same run trained alone (``tests/test_pack.py``). A run that raises or
goes non-finite leaves the pack with its failure; the others go on. The pack is rolling: a
finished run's place goes to the next waiting run.

``sweep.execute`` packs ``--jobs N`` runs on one CUDA device when every run replays from CUDA
graphs (:func:`packable`), and on request (``--pack yes``) anywhere; on the CPU the graphs are
:class:`graphs.ReplayBackend`, which runs the same host logic, so the CPU tests exercise it.
"""

from __future__ import annotations

import random
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from osrbench import devices, engine, graphs

def packable(plans: Sequence[engine.Plan]) -> bool:
    """``--pack auto``: every run is on the same CUDA device and its steps resolve to CUDA graphs
    (a graph_safe method class, ``cuda_graphs`` not false, no ``compile``); else processes stay."""
    devs = {str(devices.pick_device(p.request.device)) for p in plans}
    if len(devs) != 1 or not next(iter(devs)).startswith("cuda"):
        return False
    return all(getattr(p.spec.factory, "graph_safe", False) is True and p.config["cuda_graphs"] is not False
               and not p.config["compile"] for p in plans)


class RandomStates:
    """One run's global random states, swapped in around each of its steps.

    Made right after the run's session is open (seeded, and restored from its checkpoint), while
    the device's own default CUDA generator state is current: the run gets a clone of it
    (``graphsafe_set_state``, the API torch made for graphs with several generator states), so
    the seed and offset its graphs read are its own.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda: tuple[torch.Generator, Any] | None = None
        if device.type == "cuda":
            gen = torch.cuda.default_generators[device.index if device.index is not None
                                                else torch.cuda.current_device()]
            self.cuda = (gen, gen.clone_state())
        self.leave()

    def enter(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            gen, state = self.cuda
            gen.graphsafe_set_state(state)

    def leave(self) -> None:
        self.python, self.numpy, self.torch = random.getstate(), np.random.get_state(), torch.get_rng_state()


@dataclass
class Member:
    """A run in the pack: the sweep's index, its training, its step iterator, states and stream."""

    index: int
    training: engine.Training
    steps: Iterator[None]
    random: RandomStates
    stream: Any = None  # torch.cuda.Stream on CUDA


def _stream_of(device: torch.device) -> Any:
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def _on(stream: Any) -> Any:
    return torch.cuda.stream(stream) if stream is not None else ExitStack()


def train(requests: Sequence[engine.RunRequest], todo: Sequence[int], jobs: int, *,
          started: Callable[[int], None], done: Callable[[int, engine.Outcome], None],
          failed: Callable[[int, BaseException], None], log: Callable[[int, str], None]) -> None:
    """Train ``requests[i]`` for every ``i`` in ``todo``, at most ``jobs`` at once, as one pack.

    ``started(i)`` when a run joins, ``done(i, outcome)`` when its record is written (or existed),
    ``failed(i, exc)`` when it ends with an exception (any but Ctrl-C), ``log(i, line)`` for its
    progress lines. Ctrl-C stops the pack: every member's last checkpoint stays for a resume.
    """
    queue = deque(todo)
    members: list[Member] = []
    threads = torch.get_num_threads()
    outside: dict[str, Any] = {}  # the default CUDA generator state before any member's was set

    def join(i: int) -> None:
        req = requests[i]
        device = devices.pick_device(req.device)
        if device.type == "cuda" and "state" not in outside:
            gen = torch.cuda.default_generators[device.index if device.index is not None
                                                else torch.cuda.current_device()]
            outside["state"] = (gen, gen.graphsafe_get_state())
        if "state" in outside:  # a new run seeds the shared state, then takes a clone of it
            gen, state = outside["state"]
            gen.graphsafe_set_state(state)
        stream = _stream_of(device)
        backend = graphs.ReplayBackend if device.type != "cuda" else None
        started(i)
        try:
            with _on(stream):
                t = engine.start(req, log=lambda msg: log(i, msg), graph_backend=backend)
                if isinstance(t, engine.Outcome):
                    done(i, t)
                    return
                with engine.failures(t.plan), devices.cpu_threads(t.config["threads"]):
                    steps = t.steps()
                    members.append(Member(i, t, steps, RandomStates(t.device), stream))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the run's failure; the pack goes on
            failed(i, exc)

    def step(m: Member) -> bool:
        """One step of ``m`` (or its finish); False when it left the pack."""
        t = m.training
        try:
            with engine.failures(t.plan), _on(m.stream):
                n = t.config["threads"]
                if torch.get_num_threads() != n:
                    torch.set_num_threads(n)
                m.random.enter()
                try:
                    try:
                        next(m.steps)
                        return True
                    except StopIteration:
                        outcome = t.finish()
                finally:
                    m.random.leave()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the run's failure; the others go on
            failed(m.index, exc)
            return False
        done(m.index, outcome)
        return False

    try:
        while queue or members:
            while queue and len(members) < jobs:
                join(queue.popleft())
            members[:] = [m for m in members if step(m)]
    finally:
        if "state" in outside:
            gen, state = outside["state"]
            gen.graphsafe_set_state(state)
        torch.set_num_threads(threads)
