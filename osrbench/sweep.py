"""The ``sweep`` command: a grid of runs (methods x datasets x splits x seeds) on one machine or on Ray.

The library of the ``sweep`` command (:mod:`osrbench.commands.sweep`): one function,
:func:`execute`, that ``compare`` shares::

    records, failures = execute(requests, executor="local", jobs=2, on_event=print)

- Every request is planned first (a typo fails before anything runs); a run whose result record
  already exists with the same config hash is *skipped* (returned, not scheduled).
- ``executor="local"``: the runs in this process (``jobs=1``) or in ``jobs`` worker processes
  (several splits at once on one CPU or GPU). A worker process that dies (killed, out of memory)
  costs only the run it was running: a new worker takes its place, the run is started again up to
  ``max_retries`` times (resuming from its last checkpoint) and then counts as failed; the other
  runs go on undisturbed.
- ``executor="ray"``: one Ray task per run with ``num_cpus`` = the run's ``threads`` and
  ``num_gpus=gpus_per_run`` (fractional: ``0.25`` puts four splits on one GPU). A task whose worker
  dies (killed, OOM, node lost) is retried by Ray up to ``max_retries`` times and resumes from the
  run folder's last checkpoint (the output folder must be shared storage on a cluster). A method
  that raises is a failure of that run and is not retried. Without an address the Ray instance is
  local and listens on 127.0.0.1 only; joining a cluster: :mod:`osrbench.ray_cluster`. Ray is
  optional: ``pip install 'osrbench[ray]'``.
- A method that raises, and a run error (missing data, a bad checkpoint), fail only their own run
  with every executor; the sweep goes on and returns the failures.
- The CPU thread count of a run is its config key ``threads`` (default 1, part of the config hash;
  ``engine.run`` applies it), not something the executor chooses: on the CPU the result of a
  seeded run depends on torch's thread count (the reduction order of convolution kernels changes
  with it), so it is fixed per run instead of derived from the core count. The records (metrics,
  history, ``scores.npz``) of one config are therefore bit-identical whichever executor ran them,
  and the same as ``osrbench run``'s and ``compare``'s. ``osrbench sweep --threads T`` is
  ``--set threads=T`` for every run.

Progress is reported through ``on_event(Event)``: ``plan`` (once), ``start``, ``retry`` (a task
restarted on another worker), ``resume`` (a run continued from a checkpoint), ``done``, ``fail``,
``log`` and ``summary`` (once, with :class:`Stats`: counts, wall time and the aggregate training
throughput in images per second).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from osrbench.errors import MethodFailed, UserError, one_line
from osrbench.protocols import split_label

if TYPE_CHECKING:  # the engine imports torch: imported where a run is planned or run, so that
    from osrbench import engine  # ``osrbench sweep --help`` does not
    from osrbench.records import Record

EXECUTORS = ("local", "ray")
PACK_CHOICES = ("auto", "yes", "no")  # --pack (osrbench.pack; kept here so --help needs no torch)
RAY_MISSING = "Ray is not installed: pip install 'osrbench[ray]' (or: pip install 'ray>=2.9')"


class SweepError(UserError):
    """A sweep that cannot start (bad grid, missing Ray, unschedulable resources); one line."""


def label(req: engine.RunRequest) -> str:
    return f"{req.method} {req.dataset}/{req.protocol} split {split_label(req.dataset, req.protocol, req.split)} seed {req.seed}"


@dataclass(frozen=True)
class Failure:
    """A run that ended without a record: ``kind`` is ``method`` (the method raised: not retried),
    ``run`` (a run error such as missing data or a bad checkpoint), ``worker`` (its process died
    more often than the retries allow) or ``error`` (anything else)."""

    request: engine.RunRequest
    message: str
    kind: str = "method"

    def __str__(self) -> str:
        return f"{label(self.request)}: {self.message}"


@dataclass
class Stats:
    total: int = 0  # distinct runs in the sweep
    skipped: int = 0  # results that existed already (not scheduled)
    submitted: int = 0  # runs handed to the executor
    completed: int = 0
    failed: int = 0
    retries: int = 0  # restarts of a run after its worker process died (local pool, Ray)
    resumed: int = 0  # runs continued from a checkpoint
    images: int = 0  # training images seen by the runs this sweep trained (train count x epochs trained)
    wall_s: float = 0.0
    packed: bool = False  # the local runs trained as one pack in this process (osrbench.pack)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Event:
    kind: str  # plan | start | retry | resume | done | fail | log | summary
    request: engine.RunRequest | None = None
    message: str = ""
    completed: int = 0
    running: int = 0
    failed: int = 0
    to_run: int = 0
    skipped: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return label(self.request) if self.request is not None else ""


# ------------------------------------------------------------------------------------ one run


def _run_one(req: engine.RunRequest, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one request (resume from its checkpoint if any); what a local job or a Ray task returns.

    The run's CPU thread count is its config's ``threads``, set by ``engine.run`` for the run."""
    lines: list[str] = []

    def _log(msg: str) -> None:
        lines.append(msg)
        if log is not None:
            log(msg)

    from osrbench import engine
    t0 = time.perf_counter()
    outcome = engine.run(req, log=_log)
    return {"outcome": outcome, "log": lines, "pid": os.getpid(), "host": socket.gethostname(),
            "wall_s": time.perf_counter() - t0}


def _worker_main(conn: Any) -> None:
    """A local worker process: runs the requests it receives one at a time and sends back each
    result (or the exception that ended the run); ``None`` or a closed pipe ends it."""
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            index, req = job
            try:
                reply = (index, True, _run_one(req))
            except BaseException as exc:  # noqa: BLE001 - sent back as this run's failure
                reply = (index, False, exc)
            try:
                conn.send(reply)
            except (EOFError, OSError):  # the driver is gone
                return
            except Exception as exc:  # noqa: BLE001 - the result or the exception does not pickle
                conn.send((index, False, RuntimeError(f"{type(reply[2]).__name__} that cannot be sent back "
                                                      f"to the sweep ({type(exc).__name__}: {exc})")))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the driver stops the sweep
        return


# ----------------------------------------------------------------------------------- progress


class _Progress:
    def __init__(self, requests: Sequence[engine.RunRequest], on_event: Callable[[Event], None] | None,
                 stats: Stats) -> None:
        self.requests = requests
        self.on_event = on_event
        self.stats = stats
        self.running: set[int] = set()
        self.finished: set[int] = set()
        self.records: dict[int, Record] = {}
        self.failures: dict[int, Failure] = {}

    def emit(self, kind: str, index: int | None = None, message: str = "", **info: Any) -> None:
        if self.on_event is None:
            return
        s = self.stats
        self.on_event(Event(
            kind, self.requests[index] if index is not None else None, message, completed=s.completed,
            running=len(self.running), failed=s.failed, to_run=s.submitted, skipped=s.skipped, info=info,
        ))

    def start(self, index: int, **info: Any) -> None:
        if index in self.finished:
            return
        self.running.add(index)
        self.emit("start", index, **info)

    def done(self, index: int, out: Mapping[str, Any]) -> None:
        outcome: engine.Outcome = out["outcome"]
        rec = outcome.record
        for line in out["log"]:
            self.emit("log", index, line)
        start = outcome.resumed_from
        if start is not None:
            self.stats.resumed += 1
            self.emit("resume", index, f"resumed from the checkpoint of epoch {start}", epoch=start)
        self.stats.images += int(rec.counts["train"]) * outcome.epochs_trained
        self.running.discard(index)
        self.finished.add(index)
        self.records[index] = rec
        self.stats.completed += 1
        self.emit("done", index, record=rec, wall_s=out.get("wall_s"), trained=outcome.trained)

    def fail(self, index: int, message: str, kind: str) -> None:
        self.running.discard(index)
        self.finished.add(index)
        self.failures[index] = Failure(self.requests[index], message, kind)
        self.stats.failed += 1
        self.emit("fail", index, message, failure_kind=kind)


# ------------------------------------------------------------------------------------ execute


def _prepared(req: engine.RunRequest, in_process: bool) -> engine.RunRequest:
    """A request as the executors run it: resume from a checkpoint, absolute paths, quiet workers."""
    return dataclasses.replace(
        req, resume="auto", force=False, out=Path(req.out).absolute(),
        data_root=None if req.data_root is None else Path(req.data_root).absolute(),
        progress=req.progress and in_process,
    )


def execute(
    requests: Sequence[engine.RunRequest],
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    gpus_per_run: float | None = None,
    max_retries: int = 2,
    on_event: Callable[[Event], None] | None = None,
    pack: str = "auto",
) -> tuple[list[Record], list[Failure]]:
    """Run every request that has no result yet; return the records (in request order) and the failures.

    :param executor: ``local`` (this process when ``jobs == 1``, else a pool of ``jobs`` processes)
        or ``ray`` (tasks on the Ray cluster at ``address``; ``None`` = the one this process is
        connected to, else a new local one; ``auto``; ``ray://host:port``).
    :param gpus_per_run: Ray GPU request per task, fractional allowed (``None``: 1 when the cluster
        has GPUs and the runs are not pinned to ``cpu``, else 0).
    :param max_retries: restarts of a run whose worker process died (a local pool worker or a Ray
        worker); the restart resumes from the run's last checkpoint. Method errors are never retried.
    :param pack: ``local`` with ``jobs > 1``: ``auto`` trains the runs as one pack in this process
        (:mod:`osrbench.pack`: ``jobs`` at once, each on its own CUDA stream) when they all replay
        from CUDA graphs on one CUDA device, else in worker processes; ``yes`` always packs (on the
        CPU too, where it only tests the pack); ``no`` always uses processes.

    Requests are planned before anything runs: an unknown name raises :class:`UserError`.
    Runs are always resumed from their checkpoint when one exists (``resume="auto"``); ``force``
    is ignored. Duplicate requests (the same run folder) run once.
    """
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r} (valid: {', '.join(EXECUTORS)})")
    if jobs < 1:
        raise SweepError(f"--jobs must be at least 1, got {jobs}")
    if max_retries < 0:
        raise SweepError(f"--max-retries must be 0 or more, got {max_retries}")
    if gpus_per_run is not None and gpus_per_run < 0:
        raise SweepError(f"--gpus-per-run must be 0 or more, got {gpus_per_run}")
    if pack not in PACK_CHOICES:
        raise SweepError(f"unknown --pack {pack!r} (valid: {', '.join(PACK_CHOICES)})")
    if pack == "yes" and executor != "local":
        raise SweepError("--pack yes applies to --executor local (a pack is one process)")
    ray = import_ray() if executor == "ray" else None  # before anything runs
    from osrbench import engine

    t0 = time.perf_counter()
    in_process = executor == "local" and jobs == 1
    reqs = [_prepared(r, in_process) for r in requests]
    plans = [engine.plan(r) for r in reqs]  # every name checked before anything runs
    first: dict[Path, int] = {}
    order: list[int] = []  # index of the distinct run behind each request
    stats = Stats()
    progress = _Progress(reqs, on_event, stats)
    todo: list[int] = []
    for i, p in enumerate(plans):
        if p.dir in first:
            order.append(first[p.dir])
            continue
        first[p.dir] = i
        order.append(i)
        stats.total += 1
        rec = p.existing_result()
        if rec is not None:
            progress.records[i] = rec
            progress.finished.add(i)
            stats.skipped += 1
        else:
            todo.append(i)
    stats.submitted = len(todo)
    cpus = {i: int(plans[i].config["threads"]) for i in todo}  # a run's torch threads (engine.run sets them)
    if executor == "local" and jobs > 1 and len(todo) > 1 and pack != "no":
        from osrbench import pack as packs
        stats.packed = pack == "yes" or packs.packable([plans[i] for i in todo])
    progress.emit("plan", total=stats.total, executor=executor, jobs=jobs, threads=sorted(set(cpus.values())),
                  packed=stats.packed)
    try:
        if todo and executor == "local" and jobs == 1:
            _execute_in_process(reqs, todo, progress)
        elif todo and stats.packed:
            _execute_pack(reqs, todo, jobs, progress)
        elif todo and executor == "local":
            _execute_pool(reqs, todo, jobs, max_retries, progress)
        elif todo:
            _execute_ray(ray, reqs, todo, cpus, address, gpus_per_run, max_retries, progress)
    except KeyboardInterrupt:  # each unfinished run says what it keeps; a plain rerun continues them
        raise engine.interrupted([plans[i] for i in sorted(progress.running)]) from None
    finally:
        stats.wall_s = time.perf_counter() - t0
    progress.emit("summary", stats=stats)
    seen: set[int] = set()
    records = []
    for i in order:
        if i in progress.records and i not in seen:
            seen.add(i)
            records.append(progress.records[i])
    return records, [progress.failures[i] for i in sorted(progress.failures)]


def _failure(exc: BaseException) -> tuple[str, str]:
    """What a run's exception means for the sweep: its message and :class:`Failure` kind."""
    if isinstance(exc, MethodFailed):
        return str(exc), "method"
    if isinstance(exc, UserError):
        return one_line(exc), "run"
    return f"{type(exc).__name__}: {one_line(exc)}", "error"


def _execute_in_process(reqs: list[engine.RunRequest], todo: list[int], progress: _Progress) -> None:
    for i in todo:
        progress.start(i, pid=os.getpid(), host=socket.gethostname())
        try:
            out = _run_one(reqs[i], log=lambda msg, i=i: progress.emit("log", i, msg))
        except Exception as exc:  # noqa: BLE001 - the run's failure; the sweep goes on
            progress.fail(i, *_failure(exc))
            continue
        out["log"] = []  # reported as they came
        progress.done(i, out)


def _execute_pack(reqs: list[engine.RunRequest], todo: list[int], jobs: int, progress: _Progress) -> None:
    """The runs as one pack in this process (:mod:`osrbench.pack`), ``jobs`` at once."""
    from osrbench import pack

    pid, host = os.getpid(), socket.gethostname()
    pack.train(reqs, todo, jobs,
               started=lambda i: progress.start(i, pid=pid, host=host),
               done=lambda i, outcome: progress.done(i, {"outcome": outcome, "log": []}),
               failed=lambda i, exc: progress.fail(i, *_failure(exc)),
               log=lambda i, msg: progress.emit("log", i, msg))


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (", e.g. out of memory" if name == "SIGKILL" else "")
    return f"exit code {code}"


@dataclass
class _Worker:
    """A local worker process, the pipe to it and the run it is running (``None``: idle)."""

    proc: Any
    conn: Any
    index: int | None = None


def _execute_pool(reqs: list[engine.RunRequest], todo: list[int], jobs: int, max_retries: int,
                  progress: _Progress) -> None:
    """``jobs`` worker processes, each running one run at a time.

    Each worker has its own pipe, so the driver knows which run a dead worker was running: only
    that run is affected. A new worker takes the dead one's place and the run starts again
    (resuming from its last checkpoint) up to ``max_retries`` times, then fails (kind ``worker``);
    the other runs keep running. (A ``concurrent.futures`` pool cannot do this: one dead worker
    breaks the whole pool and fails every pending future without saying whose worker died.)
    """
    import multiprocessing
    from multiprocessing.connection import wait

    # spawn: a forked child of a process that has used OpenMP threads (or CUDA) can hang.
    ctx = multiprocessing.get_context("spawn")
    host = socket.gethostname()
    queue = deque(todo)
    deaths: dict[int, int] = {}  # run index -> how often its worker died
    reasons: dict[int, str] = {}  # run index -> how its worker died last
    workers: list[_Worker] = []

    def spawn() -> _Worker:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child,), name="osrbench-sweep-worker")
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def retire(w: _Worker) -> None:
        w.proc.join()
        w.conn.close()
        workers.remove(w)

    def bury(w: _Worker) -> None:
        """``w`` died while running a run: retire it; retry the run or fail it."""
        retire(w)
        i, w.index = w.index, None
        assert i is not None
        n = deaths[i] = deaths.get(i, 0) + 1
        reasons[i] = _exit_reason(w.proc.exitcode)
        if n > max_retries:
            progress.fail(i, f"its worker process died {n} time(s) (last: {reasons[i]}); run the sweep "
                             "again to resume from the last checkpoint", "worker")
        else:
            queue.appendleft(i)  # next: it resumes from its last checkpoint

    try:
        while queue or any(w.index is not None for w in workers):
            while queue and (len(workers) < jobs or any(w.index is None for w in workers)):
                w = next((w for w in workers if w.index is None), None)
                if w is None:
                    w = spawn()
                    workers.append(w)
                i = w.index = queue.popleft()
                if i in deaths:
                    progress.stats.retries += 1
                    progress.running.add(i)
                    progress.emit("retry", i, f"restarted in a new worker process (pid {w.proc.pid}), attempt "
                                  f"{deaths[i] + 1}: the previous one died ({reasons[i]})",
                                  pid=w.proc.pid, host=host, attempt=deaths[i] + 1)
                else:
                    progress.start(i, pid=w.proc.pid, host=host)
                try:
                    w.conn.send((i, reqs[i]))
                except OSError:  # it died before it got the run
                    bury(w)
            busy = [w for w in workers if w.index is not None]
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
            for w in busy:
                if w.conn not in ready and w.proc.sentinel not in ready:
                    continue
                if not w.conn.poll():  # ended without an answer
                    bury(w)
                    continue
                try:
                    index, ok, payload = w.conn.recv()
                except (EOFError, OSError):  # died before or while answering
                    bury(w)
                    continue
                except Exception as exc:  # noqa: BLE001 - an answer that cannot be unpickled here
                    index, ok, payload = w.index, False, exc
                w.index = None
                if not w.proc.is_alive():  # answered, then died: not a failure of that run
                    retire(w)
                if ok:
                    progress.done(index, payload)
                else:
                    progress.fail(index, *_failure(payload))
    finally:
        interrupted = any(w.index is not None for w in workers)
        for w in workers:
            try:
                w.conn.send(None)  # read after its current run, if any
            except OSError:
                pass
        for w in workers:
            w.proc.join(timeout=10 if interrupted else None)  # Ctrl-C reaches the workers too
            if w.proc.is_alive():  # still training: stop it; its last checkpoint stays for a rerun
                w.proc.terminate()
                w.proc.join()
            w.conn.close()


# ---------------------------------------------------------------------------------------- ray


def import_ray() -> Any:
    """The ``ray`` module, or :class:`SweepError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SweepError(RAY_MISSING) from None
    return ray


def ray_available() -> bool:
    try:
        import_ray()
    except SweepError:
        return False
    return True


def _ray_task(req: engine.RunRequest, index: int, tracker: Any) -> dict[str, Any]:
    tracker.started.remote(index, os.getpid(), socket.gethostname())
    return _run_one(req)


def _ray_failure(ray: Any, exc: BaseException, attempts: int) -> tuple[str, str]:
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, MethodFailed):
            return str(cause), "method"
        if isinstance(cause, UserError):
            return one_line(cause), "run"
        if cause is not None:
            return f"{type(cause).__name__}: {cause}", "error"
        return str(exc).strip().splitlines()[0], "error"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (f"its worker died {attempts} time(s) ({type(exc).__name__}: {first}); "
            "run the sweep again to resume from the last checkpoint", "worker")


def _execute_ray(ray: Any, reqs: list[engine.RunRequest], todo: list[int], cpus: Mapping[int, int],
                 address: str | None, gpus_per_run: float | None, max_retries: int, progress: _Progress) -> None:
    from osrbench import ray_cluster

    started_here = False
    if not ray.is_initialized():
        if address:
            ray_cluster.connect(ray, address)
        else:  # this machine only: on the loopback, no dashboard
            ray_cluster.start_local(ray)
        started_here = True
    pending: list[Any] = []
    try:
        resources = ray.cluster_resources()
        if gpus_per_run is None:
            pinned_cpu = all(str(reqs[i].device or "auto").startswith("cpu") for i in todo)
            gpus_per_run = 1 if resources.get("GPU", 0) > 0 and not pinned_cpu else 0
        have_cpus, have_gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        most = max(cpus.values())
        if have_cpus < most:
            raise SweepError(f"a run asks for {most} CPU(s) (its config's threads) but the Ray cluster has "
                             f"{have_cpus:g}")
        if gpus_per_run > have_gpus:
            raise SweepError(f"each run asks for {gpus_per_run:g} GPU(s) but the Ray cluster has {have_gpus:g}")
        tracker = ray_cluster.start_tracker(ray)
        task = ray.remote(_ray_task)
        refs = {task.options(num_cpus=cpus[i], num_gpus=gpus_per_run, max_retries=max_retries,  # threads = CPUs
                             retry_exceptions=False).remote(reqs[i], i, tracker): i for i in todo}
        pending = list(refs)
        attempts: dict[int, int] = {}

        def drain() -> None:
            for i, pid, host in ray.get(tracker.drain.remote()):
                attempts[i] = attempts.get(i, 0) + 1
                if i in progress.finished:
                    continue
                if attempts[i] == 1:
                    progress.start(i, pid=pid, host=host, attempt=1)
                else:
                    progress.stats.retries += 1
                    progress.running.add(i)
                    progress.emit("retry", i, f"restarted on {host} (pid {pid}), attempt {attempts[i]}: "
                                  "the previous worker was lost", pid=pid, host=host, attempt=attempts[i])

        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            drain()
            for ref in ready:
                i = refs[ref]
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    progress.fail(i, *_ray_failure(ray, exc, max(1, attempts.get(i, 1))))
                    continue
                progress.done(i, out)
    except BaseException:
        for ref in pending:  # interrupted: stop the tasks; their checkpoints stay for a rerun
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        raise
    finally:
        if started_here:
            ray.shutdown()
