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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from osrbench import devices, engine, graphs, session

T = TypeVar("T")


def packable(plans: Sequence[engine.Plan]) -> bool:
    """``--pack auto``: every run is on the same CUDA device and its steps resolve to CUDA graphs
    (a graph_safe method class, and ``cuda_graphs`` true, or auto without ``compile``:
    :func:`osrbench.session.resolve_cuda_graphs`); else processes stay."""
    devs = {str(devices.pick_device(p.request.device)) for p in plans}
    if len(devs) != 1 or not next(iter(devs)).startswith("cuda"):
        return False
    return all(getattr(p.spec.factory, "graph_safe", False) is True
               and (p.config["cuda_graphs"] is True or (p.config["cuda_graphs"] == "auto" and not p.config["compile"]))
               for p in plans)


def _default_cuda_generator(device: torch.device) -> torch.Generator:
    torch.cuda.init()  # default_generators is empty until CUDA is initialised
    return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]


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
            gen = _default_cuda_generator(device)
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


class Lane:
    """What keeps one run of a pack apart from the others: its CUDA stream and its random states.

    :meth:`Lanes.open` makes it; ``with lanes.on(lane):`` around each of the run's steps.
    """

    def __init__(self, stream: Any, states: RandomStates) -> None:
        self.stream = stream
        self.random = states


class Lanes:
    """The lanes of one pack, and the device's own default CUDA generator state, which a new run
    is seeded in before it takes a clone of it (and which :meth:`close` puts back)."""

    def __init__(self) -> None:
        self._outside: tuple[torch.Generator, Any] | None = None

    def open(self, device: torch.device, make: Callable[[], T]) -> tuple[T, Lane]:
        """``make()`` (a run's set-up: seeds, restores its checkpoint) on a new lane; its random states
        are taken right after it."""
        if device.type == "cuda":
            if self._outside is None:
                gen = _default_cuda_generator(device)
                self._outside = (gen, gen.graphsafe_get_state())
            gen, state = self._outside
            gen.graphsafe_set_state(state)
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        with _on(stream):
            made = make()
        return made, Lane(stream, RandomStates(device))

    @contextmanager
    def on(self, lane: Lane) -> Iterator[None]:
        with _on(lane.stream):
            lane.random.enter()
            try:
                yield
            finally:
                lane.random.leave()

    def close(self) -> None:
        if self._outside is not None:
            gen, state = self._outside
            gen.graphsafe_set_state(state)


def _on(stream: Any) -> Any:
    return torch.cuda.stream(stream) if stream is not None else nullcontext()


def check_options(plans: Sequence[engine.Plan]) -> None:
    """Refuse, before any run of the pack starts, what each run alone would refuse: the pack's
    replay backend must not let ``cuda_graphs=true`` train on the CPU (the same
    :func:`session.resolve_cuda_graphs` a run alone calls; a :class:`UserError`, exit 2)."""
    for p in plans:
        if p.config["cuda_graphs"] is not True:
            continue  # auto and false need nothing the device may lack
        device = devices.pick_device(p.request.device)
        session.resolve_cuda_graphs(True, p.spec.factory(), p.spec.name, device, p.config["compile"])


@dataclass
class Member:
    """A run in the pack: the sweep's index, its training, its step iterator and its lane."""

    index: int
    training: engine.Training
    steps: Iterator[None]
    lane: Lane


def train(requests: Sequence[engine.RunRequest], todo: Sequence[int], jobs: int, *,
          started: Callable[[int], None], done: Callable[[int, engine.Outcome], None],
          failed: Callable[[int, BaseException], None], log: Callable[[int, str], None]) -> None:
    """Train ``requests[i]`` for every ``i`` in ``todo``, at most ``jobs`` at once, as one pack.

    ``started(i)`` when a run joins, ``done(i, outcome)`` when its record is written (or existed),
    ``failed(i, exc)`` when it ends with an exception (any but Ctrl-C), ``log(i, line)`` for its
    progress lines. Ctrl-C stops the pack: every member's last checkpoint stays for a resume.
    """
    check_options([engine.plan(requests[i]) for i in todo])
    queue = deque(todo)
    members: list[Member] = []
    threads = torch.get_num_threads()
    lanes = Lanes()

    def join(i: int) -> None:
        req = requests[i]
        started(i)
        try:
            device = devices.pick_device(req.device)
            backend = graphs.ReplayBackend if device.type != "cuda" else None
            t, lane = lanes.open(device, lambda: engine.start(req, log=lambda msg: log(i, msg), graph_backend=backend))
            if isinstance(t, engine.Outcome):
                done(i, t)
                return
            members.append(Member(i, t, t.steps(), lane))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the run's failure; the pack goes on
            failed(i, exc)

    def step(m: Member) -> bool:
        """One step of ``m`` (or its finish); False when it left the pack."""
        t = m.training
        try:
            with engine.failures(t.plan), lanes.on(m.lane):
                n = t.config["threads"]
                if torch.get_num_threads() != n:
                    torch.set_num_threads(n)
                try:
                    next(m.steps)
                    return True
                except StopIteration:
                    outcome = t.finish()
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
    except KeyboardInterrupt:  # Ctrl-C reaches the pack, not one run: say what each run keeps
        raise engine.interrupted([m.training.plan for m in members]) from None
    finally:
        lanes.close()
        torch.set_num_threads(threads)
