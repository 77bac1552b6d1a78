"""The training and evaluation loop: seeding, device, progress, checkpoint and resume, records.

One run = (method, dataset, protocol, split, seed, resolved config). The engine owns the data
stream, the loop, the clock, checkpoints and metrics; the method only sees batches.
"""

from __future__ import annotations

import io
import hashlib
import os
import platform
import random
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import osrbench
from osrbench import config as configmod
from osrbench import graphs, metrics, plugins, protocols, results
from osrbench.data.randaugment import ops_for
from osrbench.data.stream import TrainStream, derive_seed, to_input
from osrbench.datasets import DataNotFound, DatasetSpec, OpenSetData
from osrbench.method import Context, Method, MethodSpec

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
RESULT = "result.json"
SCORES = "scores.npz"
ERROR = "error.json"
_TRAILER = b"OSRBENCH-SHA256:"  # checkpoint = torch.save bytes + trailer + 64 hex digits


class RunError(Exception):
    """A problem the user can fix (bad name, missing data, conflicting results); one line."""


class MethodFailed(Exception):
    """The method's own code raised; the traceback is in the run folder's error.json."""


class NonFiniteLoss(MethodFailed):
    """A loss term became NaN or infinite."""


def default_data_root() -> Path:
    env = os.environ.get("OSRBENCH_DATA")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "osrbench"


def pick_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RunError(f"unknown device {name!r} (valid: auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    return dev


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
    checkpoint_every: int = 10
    progress: bool = True
    deterministic: bool = False


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

    @property
    def result_path(self) -> Path:
        return self.dir / RESULT

    def existing_result(self) -> dict[str, Any] | None:
        """The stored record of exactly this run, if one exists and is intact."""
        if not self.result_path.exists():
            return None
        try:
            rec = results.read_json(self.result_path)
        except results.CorruptRecord:
            return None
        if rec.get("config_hash") != self.config_hash:
            return None
        rec["_path"] = str(self.dir)
        return rec


def plan(req: RunRequest, registry: plugins.Plugins | None = None) -> Plan:
    reg = registry or plugins.get()
    try:
        spec = reg.method(req.method)
        dataset = reg.dataset(req.dataset)
        split = protocols.get_split(dataset, req.protocol, req.split)
        recipe, cfg = configmod.resolve(spec, dataset, req.recipe, req.epochs, req.overrides)
    except (plugins.UnknownName, protocols.SplitError, configmod.ConfigError) as exc:
        raise RunError(str(exc).strip("'\"")) from None
    chash = configmod.config_hash(spec.name, cfg)
    rkey = configmod.resume_key(spec.name, cfg)
    folder = results.run_dir(req.out, spec.name, dataset.name, req.protocol, req.split, req.seed, rkey)
    return Plan(req, spec, dataset, split, recipe, cfg, chash, rkey, folder)


# ---------------------------------------------------------------------------------- checkpoints


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically; the one it replaces becomes ``checkpoint.prev.pt``."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    blob = buf.getvalue()
    blob += _TRAILER + hashlib.sha256(blob).hexdigest().encode()
    current = folder / CHECKPOINT
    if current.exists():
        os.replace(current, folder / PREVIOUS)
    results.atomic_write(current, lambda fh: fh.write(blob))


class CorruptCheckpoint(RunError):
    pass


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and verify one checkpoint file; safe (``weights_only``): it cannot run code."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    body, sep, digest = blob.rpartition(_TRAILER)
    if not sep or hashlib.sha256(body).hexdigest().encode() != digest:
        raise CorruptCheckpoint(f"{path}: checkpoint is truncated or damaged (content hash mismatch)")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal means an unusable file
        raise CorruptCheckpoint(f"{path}: checkpoint refused by safe loading ({type(exc).__name__})") from None


def load_latest_checkpoint(folder: Path, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest intact checkpoint of a run folder, falling back to the previous one."""
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            ckpt = read_checkpoint(path)
        except CorruptCheckpoint as exc:
            problems.append(str(exc))
            continue
        for p in problems:
            warn(f"{p}; using {name} (epoch {ckpt['epoch']})")
        return ckpt
    if problems:
        raise CorruptCheckpoint(problems[0] + "; no intact earlier checkpoint (use --force to start over)")
    return None


# ---------------------------------------------------------------------------------------- run


def _versions(reg: plugins.Plugins, method: str) -> dict[str, Any]:
    info = reg.plugin_of("method", method)
    return {
        "osrbench": osrbench.__version__,
        "plugin": {"name": info.name, "distribution": info.distribution, "version": info.version},
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


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


def _guard(p: Plan, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call into the method; its exceptions become one MethodFailed with the traceback on disk."""
    try:
        return fn(*args)
    except (KeyboardInterrupt, MethodFailed):
        raise
    except Exception as exc:  # noqa: BLE001
        _write_error(p, stage, exc)
        raise MethodFailed(
            f"method {p.spec.name!r} raised in {stage}: {type(exc).__name__}: {exc} (traceback in {p.dir / ERROR})"
        ) from exc


def load_data(p: Plan) -> OpenSetData:
    root = p.request.data_root or default_data_root()
    try:
        return p.dataset.load(Path(root), p.split, p.config["image_size"])
    except DataNotFound as exc:
        raise RunError(str(exc)) from None


class Precision:
    """The run's precision policy: fp32 (reference) or bf16 autocast with channels-last inputs.

    ``cuda_graphs``: steps are recorded as CUDA graphs, where autocast's weight cache must be off.
    """

    def __init__(self, name: str, device: torch.device, cuda_graphs: bool = False) -> None:
        self.bf16 = name == "bf16"
        self.device_type = device.type
        self.cache = not cuda_graphs

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=self.cache)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.bf16 else x


def predict_all(method: Method, images: torch.Tensor, device: torch.device, normalize: str,
                precision: Precision | None = None, batch: int = 500):
    """Logits, score and named scores for every image, on the CPU in float64."""
    precision = precision or Precision("fp32", device)
    logits, score, named = [], [], {}
    with torch.no_grad():
        for chunk in images.split(batch):
            with precision.autocast():
                out = method.predict(precision.inputs(to_input(chunk.to(device), normalize)))
            logits.append(out.logits.detach().double().cpu())
            score.append(out.score.detach().double().cpu())
            for k, v in out.scores.items():
                named.setdefault(k, []).append(v.detach().double().cpu())
    return torch.cat(logits).numpy(), torch.cat(score).numpy(), {k: torch.cat(v).numpy() for k, v in named.items()}


def run(req: RunRequest, registry: plugins.Plugins | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and evaluate one run (or return its stored record); returns the result record."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    reg = registry or plugins.get()
    p = plan(req, reg)
    cfg = p.config
    existing = p.existing_result()
    if existing is not None and not req.force:
        return existing

    ckpt = None
    if not req.force:
        # A record here that is not this run's has another epoch count: only an explicit
        # --resume may extend it, so that no record is silently replaced by another config.
        other_record = p.result_path.exists()
        if req.resume == "yes" or (req.resume == "auto" and not other_record):
            ckpt = load_latest_checkpoint(p.dir, log)
            if ckpt is None and req.resume == "yes":
                raise RunError(f"no checkpoint to resume in {p.dir} (run without --resume to start)")
        elif other_record or (p.dir / CHECKPOINT).exists():
            raise RunError(
                f"{p.dir} already holds a run of this method/split/seed with another epoch count or an "
                "unfinished run; pass --resume to continue it or --force to replace it"
            )
    if ckpt is not None:
        if ckpt.get("resume_key") != p.resume_key:
            raise RunError(f"checkpoint in {p.dir} was made with a different config; use --force to start over")
        if ckpt["epoch"] > cfg["epochs"]:
            raise RunError(f"checkpoint in {p.dir} is at epoch {ckpt['epoch']}, past --epochs {cfg['epochs']}")

    device = pick_device(req.device)
    data = load_data(p)
    seed = req.seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if req.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the releases do
    generator = torch.Generator(device=device).manual_seed(derive_seed(seed, 1))
    stream = TrainStream(
        data.train_x, data.train_y, cfg["batch_size"], seed, device,
        augment=cfg["augment"], normalize=cfg["normalize"], randaugment=cfg["randaugment"],
        randaugment_ops=ops_for(p.dataset.name),
    )
    image_shape = (3, *data.image_shape[1:])
    precision = Precision(cfg["precision"], device, cuda_graphs=cfg["cuda_graphs"])
    ctx = Context(
        num_classes=p.split.num_known, image_shape=image_shape, device=device, config=dict(cfg),
        generator=generator, epochs=cfg["epochs"], dataset=p.dataset.name, steps_per_epoch=len(stream),
        channels_last=precision.bf16,
    )
    method = p.spec.factory()
    if cfg["cuda_graphs"]:
        if not getattr(method, "graph_safe", False):
            raise RunError(f"method {p.spec.name!r} does not declare graph_safe, so its steps cannot be replayed "
                           "from CUDA graphs (drop --set cuda_graphs=true)")
        if device.type != "cuda":
            raise RunError(f"cuda_graphs=true needs a CUDA device, and this run is on {device.type} "
                           "(drop --set cuda_graphs=true)")
    _guard(p, "setup", method.setup, ctx)
    history: list[dict[str, float]] = []
    start, elapsed = 0, 0.0
    if ckpt is not None:
        _guard(p, "load_state_dict", method.load_state_dict, ckpt["state"])
        _set_rng_state(ckpt["rng"], generator)
        start, history, elapsed = ckpt["epoch"], list(ckpt["history"]), ckpt["elapsed"]
        log(f"resuming {p.spec.name} on {p.dataset.name} split {p.split.index} from epoch {start}")
    p.dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_step = method.train_step
    if cfg["cuda_graphs"]:  # built after a resume: optimiser states are loaded, then made capturable
        train_step = _guard(p, "cuda_graphs set-up", lambda: graphs.StepGraphs(
            method, cfg["batch_size"], graphs.CudaGraphBackend(device, [generator])))

    from tqdm.auto import tqdm

    phases = tuple(method.phases)
    total = cfg["epochs"] * len(phases) * len(stream)
    bar = tqdm(total=total, initial=start * len(phases) * len(stream), disable=not req.progress,
               desc=f"{p.spec.name}/{p.dataset.name}/s{p.split.index}", unit="step", leave=False)
    t0 = time.perf_counter()
    for epoch in range(start, cfg["epochs"]):
        sums: dict[str, torch.Tensor] = {}
        for phase_index, phase in enumerate(phases):
            for x, y in stream.batches(epoch, phase_index):
                with precision.autocast():
                    losses = _guard(p, f"train_step (phase {phase!r}, epoch {epoch})", train_step,
                                    phase, precision.inputs(x), y)
                for name, value in losses.items():
                    key = f"{phase}/{name}"
                    value = value.detach() if torch.is_tensor(value) else torch.tensor(float(value), device=device)
                    sums[key] = sums[key] + value if key in sums else value.float()
                bar.update()
        _guard(p, f"end_epoch ({epoch})", method.end_epoch, epoch)
        keys = list(sums)
        means = (torch.stack([sums[k] for k in keys]) / len(stream)).tolist() if keys else []  # one host sync
        row = dict(zip(keys, means))
        bad = [k for k, v in row.items() if not np.isfinite(v)]
        if bad:
            exc = NonFiniteLoss(
                f"loss term {bad[0]!r} became {row[bad[0]]} in epoch {epoch} (phase {bad[0].split('/')[0]!r}); "
                f"the last good checkpoint in {p.dir} is kept"
            )
            _write_error(p, f"train_step (epoch {epoch})", exc, {"epoch": epoch, "losses": row})
            raise exc
        history.append({"epoch": epoch, **row})
        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in row.items()}, refresh=False)
        done = epoch + 1
        if done % max(1, req.checkpoint_every) == 0 or done == cfg["epochs"]:
            save_checkpoint(p.dir, {
                "format": 1, "method": p.spec.name, "resume_key": p.resume_key, "config": cfg,
                "epoch": done, "state": method.state_dict(), "rng": _rng_state(generator),
                "history": history, "elapsed": elapsed + time.perf_counter() - t0,
            })
    bar.close()
    train_time = elapsed + time.perf_counter() - t0

    t1 = time.perf_counter()
    known_logits, known_score, known_named = _guard(
        p, "predict", predict_all, method, data.known_x, device, cfg["normalize"], precision)
    unknown_logits, unknown_score, unknown_named = _guard(
        p, "predict", predict_all, method, data.unknown_x, device, cfg["normalize"], precision)
    for name, arr in (("known", known_score), ("unknown", unknown_score)):
        if not np.all(np.isfinite(arr)):
            exc = NonFiniteLoss(f"method {p.spec.name!r} returned non-finite {name} scores")
            _write_error(p, "predict", exc)
            raise exc
    known_labels = data.known_y.numpy()
    known_pred = known_logits.argmax(1)
    unknown_pred = unknown_logits.argmax(1)
    rule = method.f1_rule()
    scores = {"known_score": known_score, "unknown_score": unknown_score, "known_logits": known_logits,
              "unknown_logits": unknown_logits, "known_labels": known_labels, "unknown_ids": data.unknown_ids.numpy()}
    for k in known_named:
        scores[f"known_score_{k}"] = known_named[k]
        scores[f"unknown_score_{k}"] = unknown_named[k]
    results.write_npz(p.dir / SCORES, scores)
    metric_values = metrics.evaluate(known_score, known_pred, known_labels, unknown_score, unknown_pred)
    if rule is not None:  # macro-F1 thresholds the score the rule names (METHODS.md §6.5)
        name, threshold = rule
        ks, us = (known_score, unknown_score) if name == "score" else (known_named[name], unknown_named[name])
        metric_values["macro_f1"] = metrics.macro_f1(known_labels, known_pred, ks, unknown_pred, us, threshold)
    eval_time = time.perf_counter() - t1

    record = {
        "method": p.spec.name, "dataset": p.dataset.name, "protocol": p.split.protocol, "split": p.split.index,
        "seed": seed, "recipe": p.recipe, "config": cfg, "config_hash": p.config_hash,
        "split_hash": p.split.hash, "known_classes": list(p.split.known), "unknown_classes": list(p.split.unknown),
        "counts": {"train": len(data.train_x), "known": len(data.known_x), "unknown": len(data.unknown_x)},
        "image_shape": list(image_shape), "metrics": metric_values, "f1_rule": list(rule) if rule else None,
        "scores": ["score", *known_named], "history": history, "adaptations": method.adaptations(),
        "versions": _versions(reg, p.spec.name), "device": _device_name(device),
        "wall_time_s": {"train": train_time, "eval": eval_time},
        "peak_memory_mb": _peak_memory_mb(device), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if isinstance(train_step, graphs.StepGraphs):  # this process's steps: eager / captured / replayed
        record["cuda_graph_steps"] = dict(train_step.counts)
    results.write_json(p.result_path, record)
    err = p.dir / ERROR
    if err.exists():
        err.unlink()
    record["_path"] = str(p.dir)
    return record


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    out = {"host_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == "cuda":
        out["device"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
