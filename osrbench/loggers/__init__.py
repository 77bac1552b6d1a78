"""Training that can be watched: loggers (TensorBoard, MLflow, W&B, or a plugin's) fed by the engine.

A logger is registered through the ``osrbench_register_loggers`` hook as a :class:`LoggerSpec` and
chosen with ``--log NAME,...`` (``RunRequest.loggers``). The engine knows no tracker: it opens a
:class:`Watch` per run and tells it the run's events, which the watch passes to each chosen
:class:`Logger` in order:

1. :meth:`Logger.on_run_start` (a :class:`RunInfo`: identity, resolved config and hash, folders,
   the epoch a resumed run continues from),
2. :meth:`Logger.on_epoch_end` per epoch trained now (a resumed run's earlier epochs are not sent
   again): every loss term's epoch mean (the record's history row) and the learning rates,
3. :meth:`Logger.on_evaluation` (the final metrics),
4. :meth:`Logger.on_run_end` (the record's path and the run folder's files) or
   :meth:`Logger.on_failure` (the exception in one line) instead of 3-4 when the run fails.

A logger that raises never stops the run: the first failure of each logger is one warning line
in the run's progress log (stderr for the commands), and later events still reach it. A run whose record already exists trains nothing and
logs nothing.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from osrbench.errors import one_line
from osrbench.loggers.base import PLOT_SUFFIXES, RESULT_FILES, Logger, LoggerSpec, RunInfo, UnknownLogger

__all__ = ["Logger", "LoggerSpec", "RunInfo", "UnknownLogger", "Watch", "check", "open_watch", "parse",
           "progress_postfix"]


def builtin_specs() -> list[LoggerSpec]:
    """The built-in loggers; their modules import their trackers only when a run starts."""
    from osrbench.loggers import mlflow, tensorboard, wandb

    return [tensorboard.SPEC, mlflow.SPEC, wandb.SPEC]


def parse(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--log tensorboard,mlflow`` (repeatable) as a tuple of names, in order, without repeats."""
    if not text:
        return ()
    parts = [text] if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in parts:
        for name in str(part).split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return tuple(names)


def missing_module(names: Sequence[str]) -> str | None:
    """The first module of ``names`` that cannot be imported here (found without importing it)."""
    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def check(names: Sequence[str], registry: Any) -> list[LoggerSpec]:
    """The specs of ``names``; an unknown name or a missing extra is an :class:`UnknownLogger` (exit 2)."""
    specs = []
    for name in names:
        spec = registry.loggers.get(name) if isinstance(name, str) else None
        if spec is None:
            close = difflib.get_close_matches(str(name), list(registry.loggers), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownLogger(f"unknown logger {name!r} for --log (valid: "
                                f"{', '.join(sorted(registry.loggers)) or 'none'}){hint}")
        module = missing_module(spec.requires)
        if module is not None:
            install = f"pip install '{spec.extra}'" if spec.extra else f"install the package that provides {module}"
            raise UnknownLogger(f"--log {name} needs the {module!r} package, which is not installed: {install}")
        specs.append(spec)
    return specs


def learning_rates(method: Any) -> dict[str, float]:
    """Each optimiser's learning rate, named ``lr`` (one optimiser, one rate) or ``lr/ATTR`` (its
    attribute on the method) with ``.GROUP`` where its parameter groups differ; a plain read."""
    try:
        optimizers = list(method.optimizers())
    except Exception:  # noqa: BLE001 - a method whose optimisers cannot be listed logs no rate
        return {}
    names = {id(v): k for k, v in vars(method).items()}
    rates: dict[str, float] = {}
    for i, opt in enumerate(optimizers):
        key = "lr" if len(optimizers) == 1 else f"lr/{names.get(id(opt), i)}"
        groups = [float(g["lr"]) for g in opt.param_groups]
        if len(set(groups)) == 1:
            rates[key] = groups[0]
        else:
            rates.update({f"{key}.{g}": v for g, v in enumerate(groups)})
    return rates


@dataclass
class Watch:
    """One run's loggers; each event goes to each logger in turn, a raising logger is warned about once."""

    loggers: list[tuple[str, Logger]] = field(default_factory=list)
    method: Any = None
    #: Where the one warning line per failing logger goes (the engine's progress log).
    log: Callable[[str], None] = lambda msg: None
    _warned: set[str] = field(default_factory=set)
    _lrs: dict[str, float] = field(default_factory=dict)
    _closed: bool = False

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def _send(self, event: str, *args: Any) -> None:
        if self._closed:
            return
        for name, logger in self.loggers:
            try:
                getattr(logger, event)(*args)
            except Exception as exc:  # noqa: BLE001 - a logger must never stop the run
                if name not in self._warned:
                    self._warned.add(name)
                    self.log(f"warning: logger {name!r} failed in {event} ({type(exc).__name__}: "
                             f"{one_line(exc)}); the run goes on")

    def epoch_start(self) -> None:
        """Read the learning rates the epoch trains with (set by ``setup``/``end_epoch`` before it)."""
        if self.loggers and self.method is not None:
            self._lrs = learning_rates(self.method)

    def epoch_end(self, epoch: int, losses: Mapping[str, float]) -> None:
        if self.loggers:
            self._send("on_epoch_end", epoch, dict(losses), dict(self._lrs))

    def evaluation(self, metrics: Mapping[str, float]) -> None:
        if self.loggers:
            self._send("on_evaluation", dict(metrics))

    def run_end(self, record: Path) -> None:
        if self.loggers:
            self._send("on_run_end", record, run_files(record.parent))
            self._closed = True

    def failure(self, exc: BaseException) -> None:
        if self.loggers and not self._closed:
            self._send("on_failure", f"{type(exc).__name__}: {one_line(exc)}")
            self._closed = True


def run_files(folder: Path) -> list[Path]:
    """The result files in a run folder (record first), without checkpoints or tracker folders."""
    found = [folder / n for n in RESULT_FILES if (folder / n).is_file()]
    found += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PLOT_SUFFIXES)
    return found


def log_dir_of(p: Any) -> Path:
    """Where a run's tracker files go: its run folder, or ``--log-dir`` + its path under ``--out``."""
    req = p.request
    if req.log_dir is None:
        return p.dir
    try:
        rel = p.dir.relative_to(req.out)
    except ValueError:
        rel = Path(p.dir.name)
    return Path(req.log_dir) / rel


def open_watch(p: Any, registry: Any, method: Any, start_epoch: int,
               log: Callable[[str], None] = lambda msg: None) -> Watch:
    """The loggers of ``p``'s request, made and told the run started (none: an empty watch)."""
    names = tuple(getattr(p.request, "loggers", ()) or ())
    if not names:
        return Watch()
    watch = Watch(method=method, log=log)
    info = RunInfo(p.spec.name, p.dataset.name, p.split.protocol, p.split.index, p.request.seed, p.recipe,
                   dict(p.config), p.config_hash, p.dir, log_dir_of(p), Path(p.request.log_dir or p.request.out),
                   int(p.config["epochs"]),
                   start_epoch)
    for spec in check(names, registry):
        try:
            watch.loggers.append((spec.name, spec.factory()))
        except Exception as exc:  # noqa: BLE001 - as any logger failure: warned, the run goes on
            log(f"warning: logger {spec.name!r} could not be made ({type(exc).__name__}: "
                f"{one_line(exc)}); the run goes on")
    watch._send("on_run_start", info)
    return watch


def failed(p: Any, exc: BaseException) -> None:
    """Tell the loggers of ``p``'s run (if any are open) that it failed."""
    watch = getattr(p, "watch", None)
    if watch:
        watch.failure(exc)


def main_loss(row: Mapping[str, float]) -> tuple[str, float] | None:
    """The loss a progress bar shows: the first phase's ``loss`` term, else the first term seen."""
    if not row:
        return None
    named = [k for k in row if k.split("/")[-1] == "loss"]
    key = named[0] if named else next(iter(row))
    return key, row[key]


def progress_postfix(epoch: int, epochs: int, row: Mapping[str, float]) -> dict[str, str]:
    """The progress bar's postfix after epoch ``epoch`` (0-based): ``epoch=3/10, loss=0.123``
    (the epoch means the engine read anyway: no extra device sync)."""
    postfix = {"epoch": f"{epoch + 1}/{epochs}"}
    main = main_loss(row)
    if main is not None:
        key, value = main
        postfix[key.split("/")[-1] if key.endswith("/loss") else key] = f"{value:.4g}"
    return postfix
