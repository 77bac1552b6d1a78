"""The run loop: plan a run, reuse or resume it, train it epoch by epoch, evaluate, write its record.

One run = (method, dataset, protocol, split, seed, resolved config). :func:`plan` checks every
name and the config before any data is read; :func:`run` returns an :class:`Outcome` (the record,
whether it was trained now, the epoch it resumed from). Set-up is :mod:`osrbench.session`,
evaluation :mod:`osrbench.evaluation`, the files :mod:`osrbench.checkpoints` and
:mod:`osrbench.records`.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

import osrbench
from osrbench import checkpoints, devices, evaluation, graphs, loggers, plugins, protocols, records, results, session
from osrbench import config as configmod
from osrbench.datasets import DatasetSpec
from osrbench.errors import Interrupted, MethodFailed, NonFiniteLoss, UsageError, UserError
from osrbench.method import MethodSpec
from osrbench.models import backbones
from osrbench.records import ERROR, Record, RunIdentity


@dataclass
class RunRequest:
    method: str
    dataset: str
    protocol: str = "auroc"
    split: int = 0
    seed: int = 0
    recipe: str | None = None
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    out: Path = Path("runs")
    data_root: Path | None = None
    resume: str = "no"  # no | yes (a checkpoint must exist) | auto (continue if one exists)
    force: bool = False  # replace an existing result or unfinished run
    #: Checkpoint every N epochs; ``None``: after the first epoch, then after every epoch that ends
    #: ``checkpoint_interval`` seconds or more after the last checkpoint (and always after the last).
    checkpoint_every: int | None = None
    checkpoint_interval: float = 60.0
    progress: bool = True
    deterministic: bool = False
    loggers: tuple[str, ...] = ()  # --log: names of osrbench.loggers registered by plugins
    log_dir: Path | None = None  # --log-dir: the loggers' files (default: each run's folder, MLflow's store in out)


@dataclass
class Plan:
    """Everything known about a run before any data is read."""

    request: RunRequest
    spec: MethodSpec
    dataset: DatasetSpec
    split: protocols.OpenSetSplit
    recipe: str | None
    config: dict[str, Any]
    config_hash: str
    resume_key: str
    dir: Path
    identity: RunIdentity
    watch: loggers.Watch = field(default_factory=loggers.Watch, repr=False)  # the run's loggers, once it trains

    @property
    def result_path(self) -> Path:
        return self.dir / records.RESULT

    def stored_record(self, log: Callable[[str], None] = lambda msg: None) -> tuple[str, Record | None]:
        """What the run folder's record is: ``none``, ``this`` (this run's), ``other-epochs`` (this
        run with another epoch count, which only ``--resume``/``--force`` may replace). A damaged
        record or another run's is reported through ``log`` and counts as ``none``."""
        if not self.result_path.exists():
            return "none", None
        try:
            rec = records.read_record(self.result_path)
            self.identity.check(rec.identity.to_json(), str(self.result_path), ignore=("config_hash",))
        except UserError as exc:
            log(f"warning: {exc}")
            return "none", None
        if rec.config_hash == self.config_hash:
            return "this", rec
        if configmod.resume_key(rec.method, rec.config) == self.resume_key:
            return "other-epochs", rec
        log(f"warning: {self.result_path} holds a record of another config; it is not used")
        return "none", None

    def existing_result(self, log: Callable[[str], None] = lambda msg: None) -> Record | None:
        """The stored record of exactly this run, if one exists, is intact and is this run's."""
        kind, rec = self.stored_record(log)
        return rec if kind == "this" else None

    def check_checkpoint(self, ckpt: dict[str, Any], where: str) -> None:
        """Refuse (:class:`records.ForeignFile`) a checkpoint that is not of this run (any epoch count)."""
        self.identity.check(ckpt.get("identity"), where, ignore=("config_hash",))
        if ckpt.get("resume_key") != self.resume_key:
            raise records.ForeignFile(f"{where} was made with a different config; it is not used")


@dataclass(frozen=True)
class Outcome:
    """What :func:`run` did: the record, whether it trained now, the epoch it resumed from."""

    record: Record
    trained: bool
    resumed_from: int | None = None

    @property
    def epochs_trained(self) -> int:
        return self.record.epochs - (self.resumed_from or 0) if self.trained else 0


def _check_request(req: RunRequest) -> None:
    """What a request says beyond names and config: the seed and the checkpoint schedule."""
    protocols.check_seed(req.seed)
    devices.check_device_name(req.device)
    if req.checkpoint_every is not None and (not isinstance(req.checkpoint_every, int) or req.checkpoint_every < 1):
        raise UsageError(f"--checkpoint-every must be a positive number of epochs, got {req.checkpoint_every!r}")
    if not (isinstance(req.checkpoint_interval, (int, float)) and math.isfinite(req.checkpoint_interval)
            and req.checkpoint_interval >= 0):
        raise UsageError(f"--checkpoint-interval must be a number of seconds >= 0, got {req.checkpoint_interval!r}")


def plan(req: RunRequest, registry: plugins.Plugins | None = None) -> Plan:
    _check_request(req)
    reg = registry or plugins.get()
    spec = reg.method(req.method)
    dataset = reg.dataset(req.dataset)
    split = protocols.get_split(dataset, req.protocol, req.split, root=req.data_root)
    recipe, cfg = configmod.resolve(spec, dataset, req.recipe, req.epochs, req.overrides)
    cfg = backbones.pin_weights_file(cfg)  # a backbone weights file's sha256 enters the config hash
    chash = configmod.config_hash(spec.name, cfg)
    loggers.check(req.loggers, reg)  # an unknown logger or a missing extra, before any data is read
    rkey = configmod.resume_key(spec.name, cfg)
    folder = results.run_dir(req.out, spec.name, dataset.name, req.protocol, req.split, req.seed, rkey)
    plugin = reg.plugin_of("method", spec.name)
    identity = RunIdentity(spec.name, plugin.distribution, plugin.version, dataset.name, req.protocol, req.split,
                           split.hash, req.seed, chash)
    return Plan(req, spec, dataset, split, recipe, cfg, chash, rkey, folder, identity)


def _write_error(p: Plan, stage: str, exc: BaseException, extra: dict[str, Any] | None = None) -> None:
    results.write_json(
        p.dir / ERROR,
        {
            "method": p.spec.name, "dataset": p.dataset.name, "protocol": p.split.protocol,
            "split": p.split.index, "seed": p.request.seed, "config_hash": p.config_hash,
            "stage": stage, "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)), **(extra or {}),
        },
    )


def _guard(p: Plan) -> session.Call:
    """How the engine calls into the method: a failure's traceback goes to the run folder's error.json."""

    def record(stage: str, exc: BaseException) -> str:
        _write_error(p, stage, exc)
        return f" (traceback in {p.dir / ERROR})"

    return session.guarded(p.spec.name, record)


def _checkpoint_to_resume(p: Plan, kind: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The checkpoint to continue from (``None``: start at epoch 0), by the request's resume rule.

    Only this run's intact files count: a damaged or foreign record or checkpoint is reported and
    ignored (and replaced when this run writes its own). A record of this run with another epoch
    count, or an unfinished run, is continued only with ``--resume`` (``yes``/``auto``) and
    replaced only with ``--force``, so that no result is silently replaced by another config. A
    final checkpoint of exactly this config whose record is missing or damaged is evaluated again.
    ``kind`` is what :meth:`Plan.stored_record` found.
    """
    req = p.request
    checkpoints.check_folder(p.dir)  # before any training: --force too would die at its first save
    if req.force:
        return None
    ckpt, problems = checkpoints.load_latest(p.dir, p.check_checkpoint)
    if req.resume == "yes" and ckpt is None:
        why = problems[0] if problems else f"no checkpoint to resume in {p.dir}"
        raise UserError(f"{why} (run without --resume to start, or --force to start over)")
    for line in problems:
        log(f"warning: {line}" + (f"; resuming from the intact one (epoch {ckpt['epoch']})" if ckpt else ""))
    finished = ckpt is not None and ckpt["epoch"] == p.config["epochs"] and (
        ckpt["identity"]["config_hash"] == p.config_hash)  # only its evaluation is missing
    unfinished = ckpt is not None and not finished
    if req.resume != "yes" and (kind == "other-epochs" or (req.resume == "no" and unfinished)):
        raise UserError(
            f"{p.dir} already holds a run of this method/split/seed with another epoch count or an "
            "unfinished run; pass --resume to continue it or --force to replace it"
        )
    if ckpt is not None and ckpt["epoch"] > p.config["epochs"]:
        raise UserError(f"checkpoint in {p.dir} is at epoch {ckpt['epoch']}, past --epochs {p.config['epochs']}")
    return ckpt


def shared_training(p: Plan, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any] | None:
    """The finished checkpoint of a run that trained exactly what ``p`` would: same method, dataset,
    protocol, seed and config, another split of a protocol with named splits with the same known
    classes in the same order (the SSB's difficulties share their known classes, so the release
    trains once and evaluates on each). ``None`` when there is none; the run then trains.

    Only a protocol with named splits shares: a numbered protocol's repeated rows are separate
    trials of its table. The checkpoint (with its ``fitted`` state) becomes this run's starting
    point at the last epoch, so the run trains no step and only evaluates on its own unknowns.
    """
    req = p.request
    names = protocols.split_names(p.dataset, req.protocol)
    if names is None:
        return None
    for other in range(len(names)):
        split = protocols.get_split(p.dataset, req.protocol, other)
        if other == req.split or split.known != p.split.known:
            continue
        folder = results.run_dir(req.out, p.spec.name, p.dataset.name, req.protocol, other, req.seed, p.resume_key)
        identity = dataclasses.replace(p.identity, split=other, split_hash=split.hash)

        def accept(ckpt: dict[str, Any], where: str) -> None:
            identity.check(ckpt.get("identity"), where)
            if ckpt.get("resume_key") != p.resume_key or ckpt.get("epoch") != p.config["epochs"]:
                raise records.ForeignFile(f"{where} is not a finished run of this config")

        if not folder.is_dir():
            continue
        ckpt, _ = checkpoints.load_latest(folder, accept)
        if ckpt is not None:
            log(f"{p.spec.name} on {p.dataset.name} split {names[req.split]}: the known classes and training of "
                f"split {names[other]} (its checkpoint in {folder}); evaluating it on this split's unknowns")
            return {**ckpt, "identity": p.identity.to_json(), "shared_training": {"split": other, "split_hash": split.hash}}
    return None


def start(req: RunRequest, registry: plugins.Plugins | None = None, log: Callable[[str], None] | None = None,
          graph_backend: Callable[[], Any] | None = None) -> "Outcome | Training":
    """Plan a run and make it ready to train: its stored :class:`Outcome` when it is finished, else a
    :class:`Training` (session open, checkpoint restored, step built) that :func:`run` or a pack drives.

    ``graph_backend``: see :func:`session.open_session` (a pack on the CPU replays with
    :class:`graphs.ReplayBackend`).
    """
    log = log or (lambda msg: None)
    reg = registry or plugins.get()
    p = plan(req, reg)
    kind, existing = p.stored_record(log)
    if kind == "this" and not req.force:
        return Outcome(existing, trained=False)
    ckpt = _checkpoint_to_resume(p, kind, log)
    if ckpt is None and not req.force:
        ckpt = shared_training(p, log)
    device = devices.pick_device(req.device)
    data = session.load_data(p.dataset, p.split, p.config["image_size"], req.data_root,
                             **session.test_transform(p.config))
    with failures(p), devices.cpu_threads(p.config["threads"]):
        return Training(p, reg, data, device, ckpt, log, graph_backend)


def run(req: RunRequest, registry: plugins.Plugins | None = None,
        log: Callable[[str], None] | None = None) -> Outcome:
    """Train and evaluate one run, or return its stored record; progress lines (a resume, a damaged
    checkpoint) go to ``log`` (default: dropped; ``osrbench run`` prints them to stderr)."""
    training = start(req, registry, log)
    if isinstance(training, Outcome):
        return training
    with failures(training.plan), devices.cpu_threads(training.config["threads"]):
        for _ in training.steps():
            pass
        return training.finish()


@contextmanager
def failures(p: Plan) -> Iterator[None]:
    """What a run's failure leaves: the host's findings in ``error.json`` (the method's own exceptions
    wrote theirs when they were caught), and for Ctrl-C one line saying which checkpoint is kept."""
    try:
        yield
    except MethodFailed as exc:
        if not isinstance(exc, session.MethodRaised):  # the others are the host's findings
            _write_error(p, exc.stage, exc, getattr(exc, "details", None))
        loggers.failed(p, exc)
        raise
    except KeyboardInterrupt as exc:
        loggers.failed(p, exc)
        raise Interrupted(f"interrupted; {kept_checkpoint(p)}") from None
    except Exception as exc:
        loggers.failed(p, exc)
        raise


def kept_checkpoint(p: Plan, again: str = " (continue with --resume)") -> str:
    """What an interrupted run keeps, in words: its last intact checkpoint (and ``again``: how to
    continue from it), or none."""
    last, _ = checkpoints.load_latest(p.dir, p.check_checkpoint)
    return (f"the checkpoint of epoch {last['epoch']} in {p.dir} is kept{again}" if last
            else "no checkpoint had been written yet: the run starts over next time")


def interrupted(plans: Sequence[Plan]) -> Interrupted:
    """Ctrl-C of several runs at once (a pack, worker processes, a sweep): what each unfinished run
    keeps. Their command resumes every run, so a plain rerun of it continues them (the CLI prints it)."""
    kept = [f"{p.spec.name} split {p.split.index} seed {p.request.seed}: {kept_checkpoint(p, again='')}"
            for p in plans]
    return Interrupted("interrupted; " + ("; ".join(kept) if kept else "no run had started"), rerun=True)


class Training:
    """One run from its first remaining step to its record.

    :meth:`steps` trains the remaining epochs and yields after every training step (checkpoints and
    the non-finite check at each epoch's end happen inside it), so that :func:`run` drives one run
    and a pack (:mod:`osrbench.pack`) several at once, step by step; :meth:`finish` runs the fit
    stage, evaluates and writes the record. Callers wrap both in :func:`failures` and the run's
    ``threads``.
    """

    def __init__(self, p: Plan, reg: plugins.Plugins, data: Any, device: torch.device,
                 ckpt: dict[str, Any] | None, log: Callable[[str], None],
                 graph_backend: Callable[[], Any] | None = None) -> None:
        self.plan, self.registry, self.data, self.device, self.ckpt = p, reg, data, device, ckpt
        req, cfg = p.request, p.config
        self.config = cfg
        self.session = s = session.open_session(
            p.spec, cfg, data, num_classes=p.split.num_known, dataset=p.dataset.name, device=device,
            seed=req.seed, deterministic=req.deterministic, call=_guard(p), graph_backend=graph_backend)
        self.history: list[dict[str, float]] = []
        self.start, self.elapsed = 0, 0.0
        if ckpt is not None:
            s.restore(ckpt)
            self.start, self.history, self.elapsed = ckpt["epoch"], list(ckpt["history"]), ckpt["elapsed"]
        if ckpt is not None and "shared_training" not in ckpt:
            log(f"resuming {p.spec.name} on {p.dataset.name} split "
                f"{protocols.split_label(p.dataset.name, p.split.protocol, p.split.index)} from epoch {self.start}")
        results.ensure_dir(p.dir, "run folder")
        for tmp in results.remove_orphans(p.dir):
            log(f"removed {tmp.name}, a temporary file a killed process left in {p.dir}")
        devices.reset_peak_memory(device)
        self.step = s.build_step()
        self.t0 = time.perf_counter()
        p.watch = loggers.open_watch(p, reg, s.method, self.start, log)

    def steps(self) -> Iterator[None]:
        """Train every remaining epoch, yielding after each step."""
        p, s, cfg, req = self.plan, self.session, self.config, self.plan.request
        from tqdm.auto import tqdm

        steps = len(s.phases) * len(s.stream)
        bar = tqdm(total=cfg["epochs"] * steps, initial=self.start * steps, disable=not req.progress,
                   desc=f"{p.spec.name}/{p.dataset.name}/s{p.split.index}", unit="step", leave=False)
        self.t0 = last_saved = time.perf_counter()
        for epoch in range(self.start, cfg["epochs"]):
            sums = session.LossSums(self.device)
            p.watch.epoch_start()

            def add(phase: str, index: int, losses: dict[str, Any]) -> None:
                session.check_losses(phase, losses)
                sums.add(phase, losses)
                bar.update()

            yield from s.epoch_steps(epoch, add)
            row = sums.means(len(s.stream))  # one host sync
            bad = [k for k, v in row.items() if not np.isfinite(v)]
            if bad:
                exc = NonFiniteLoss(
                    f"loss term {bad[0]!r} became {row[bad[0]]} in epoch {epoch} (phase {bad[0].split('/')[0]!r}); "
                    f"the last good checkpoint in {p.dir} is kept"
                )
                exc.details = {"epoch": epoch, "losses": row}
                raise exc
            self.history.append({"epoch": epoch, **row})
            p.watch.epoch_end(epoch, row)
            bar.set_postfix(loggers.progress_postfix(epoch, cfg["epochs"], row), refresh=False)
            done = epoch + 1
            if req.checkpoint_every:
                due = done % req.checkpoint_every == 0
            else:  # a kill costs at most the first epoch, or one interval plus one epoch
                due = epoch == self.start or time.perf_counter() - last_saved >= req.checkpoint_interval
            if due or done == cfg["epochs"]:
                checkpoints.save(p.dir, self._payload(done))
                last_saved = time.perf_counter()
        bar.close()

    def _payload(self, done: int) -> dict[str, Any]:
        return _payload(self.plan, self.session, done, self.history,
                        self.elapsed + time.perf_counter() - self.t0)

    def finish(self) -> Outcome:
        """The fit stage (once), the evaluation and the record, after :meth:`steps` has run out."""
        p, s, cfg, ckpt, data, device = self.plan, self.session, self.config, self.ckpt, self.data, self.device
        req, start = p.request, self.start
        if s.fits and not (ckpt is not None and start == cfg["epochs"] and ckpt.get("fitted")):
            s.fit()  # once, after the last epoch; its state is checkpointed, so a resume does not fit again
            checkpoints.save(p.dir, {**self._payload(cfg["epochs"]), "fitted": True})
        elif ckpt is not None and "shared_training" in ckpt and not (p.dir / checkpoints.CHECKPOINT).exists():
            # the weights this run evaluates, under its own identity (rescore and --resume read them here)
            checkpoints.save(p.dir, {**self._payload(cfg["epochs"]), "fitted": bool(ckpt.get("fitted"))})
        train_time = self.elapsed + time.perf_counter() - self.t0

        t1 = time.perf_counter()
        ev = evaluation.evaluate(s.method, data, device, cfg["normalize"], p.split.num_known, s.precision, s.call)
        scores_sha256 = records.write_scores(p.dir, ev.scores, p.identity)
        eval_time = time.perf_counter() - t1
        p.watch.evaluation(ev.metrics)
        plugin = self.registry.plugin_of("method", p.spec.name)
        step = self.step
        record = Record(
            method=p.spec.name, dataset=p.dataset.name, protocol=p.split.protocol, split=p.split.index, seed=req.seed,
            config=cfg, config_hash=p.config_hash, split_hash=p.split.hash, metrics=ev.metrics, recipe=p.recipe,
            plugin={"name": plugin.name, "distribution": plugin.distribution, "version": plugin.version},
            threads=cfg["threads"], known_classes=tuple(p.split.known), unknown_classes=tuple(p.split.unknown),
            counts={"train": len(data.train_x), "known": len(data.known_x), "unknown": len(data.unknown_x)},
            image_shape=tuple(s.ctx.image_shape), f1_rule=ev.f1_rule, scores=tuple(ev.scores.names),
            history=tuple(self.history), adaptations=s.call("adaptations()", s.method.adaptations),
            versions=_versions(plugin), device=devices.device_name(device),
            wall_time_s={"train": train_time, "eval": eval_time}, peak_memory_mb=devices.peak_memory_mb(device),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), cuda_graphs=s.cuda_graphs,
            cuda_graph_steps=dict(step.counts) if s.cuda_graphs and isinstance(step, graphs.StepGraphs) else None,
            scores_sha256=scores_sha256, shared_training=(ckpt or {}).get("shared_training"),
        )
        record = records.write_record(p.dir, record)
        (p.dir / ERROR).unlink(missing_ok=True)
        p.watch.run_end(p.result_path)
        return Outcome(record, trained=True, resumed_from=start if ckpt is not None else None)


def _payload(p: Plan, s: session.Session, done: int, history: list[dict[str, float]],
             elapsed: float) -> dict[str, Any]:
    """A checkpoint of the run after ``done`` epochs (``fitted``: and after the fit stage)."""
    return {"identity": p.identity.to_json(), "method": p.spec.name, "resume_key": p.resume_key,
            "config": p.config, "epoch": done, "fitted": False, "state": s.method.state_dict(),
            "rng": s.rng_state(), "history": history, "elapsed": elapsed}


def _versions(plugin: plugins.PluginInfo) -> dict[str, Any]:
    return {
        "osrbench": osrbench.__version__,
        "plugin": {"name": plugin.name, "distribution": plugin.distribution, "version": plugin.version},
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
