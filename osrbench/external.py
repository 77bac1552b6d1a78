"""Evaluate weights trained elsewhere (``osrbench evaluate``): a record marked "external weights".

:func:`evaluate` plans the run exactly as ``osrbench run`` would (:func:`osrbench.engine.plan`: the
method, dataset, split, recipe and ``--set`` resolved and checked), sets the method up through
:func:`osrbench.session.open_session` without training it, loads the files, evaluates through
:func:`osrbench.evaluation.evaluate` and writes what a run writes: ``result.json``, ``scores.npz``
and a ``checkpoint.pt`` of the loaded state, so ``rescore --from-checkpoint`` and post-hoc scoring
rebuild it like any run.

The files are read by layout (:mod:`osrbench.layouts`): the releases' layouts by the method's own
:meth:`~osrbench.method.Method.load_external` (which of them it reads: ``Method.external_layouts``),
the ``osrbench`` layout (a ``checkpoint.pt`` or a ``Method.state_dict()`` file) by the host for
every method, through ``load_state_dict``. Every check runs before anything is written: a bad file,
a layout the method does not read, a missing or misshapen key is one line (exit 2) and the output
folder stays untouched.

What the record says:

- ``external_weights``: ``{"layout", "files": [{"name", "sha256"}], "dropped": {key pattern: why},
  "trained_epochs"}`` (the release's keys that were not loaded, such as the unused ``bn10``, and
  the epochs the files say they were trained for, or ``None``); ``from_run`` too for an osrbench
  checkpoint (the identity of the run that wrote it).
- ``config``: the method's set-up, resolved as ``osrbench run`` resolves it, plus
  :data:`CONFIG_KEY` = ``{"layout", "sha256": [...]}``: the weights enter the config hash, so the
  record has its own identity and run folder and is never averaged with a run trained here. Its
  ``epochs`` is the recipe's (what the method was set up for; nothing is trained here).
- ``history`` is empty and ``wall_time_s.train`` is 0.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from osrbench import checkpoints, devices, engine, evaluation, layouts, plugins, records, results, session
from osrbench import config as configmod
from osrbench.datasets import OpenSetData
from osrbench.errors import UsageError, UserError
from osrbench.layouts import LAYOUTS, LayoutError
from osrbench.method import Method, implements
from osrbench.records import Record

#: The config key that holds the layout and the files' hashes.
CONFIG_KEY = "external_weights"
#: How many ``--weights`` files each layout takes.
FILE_COUNTS = {"arpl-release": (1, 2), "dias-release": (1, 1), "mls-release": (1, 1), "cac-release": (1, 1), "medaf-release": (1, 1), "torchvision": (1, 1), "osrbench": (1, 1)}


@dataclass
class EvaluateRequest:
    method: str
    dataset: str
    weights: tuple[Path, ...]
    layout: str
    protocol: str = "auroc"
    split: int = 0
    seed: int = 0
    recipe: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    out: Path = Path("runs")
    data_root: Path | None = None
    force: bool = False  # evaluate again even if the record of these weights exists


@dataclass(frozen=True)
class Evaluated:
    """The record, and whether it was evaluated now (``False``: the stored one of these weights)."""

    record: Record
    evaluated: bool


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


#: The most epochs a weights file may state it was trained for (no release trains for more than a
#: few thousand): a larger or a negative count is a damaged or edited file, never recorded.
MAX_TRAINED_EPOCHS = 100_000


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        close = ([lay for lay in LAYOUTS if str(layout) and lay.startswith(str(layout))]
                 or difflib.get_close_matches(str(layout), LAYOUTS, n=1))
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown --layout {str(layout)[:60]!r} (valid: {', '.join(LAYOUTS)}){hint}")
    return layout


def check_request(req: EvaluateRequest) -> None:
    """The flags: the layout, how many files it takes, that each is a file and none is given twice."""
    check_layout(req.layout)
    lo, hi = FILE_COUNTS[req.layout]
    n = len(req.weights)
    if not lo <= n <= hi:
        want = str(lo) if lo == hi else f"{lo} or {hi}"
        what = {"arpl-release": "the network's .pth and, for ARPLoss, its _criterion.pth",
                "dias-release": "the release's checkpoint.pth.tar",
                "mls-release": "the release's pretrained_weights/tinyimagenet_<i>.pth",
                "cac-release": "the release's <dataset>_<trial>_<name>CACclassifierAnchorLoss.pth",
                "medaf-release": "the release's epoch_<N>.pth",
                "torchvision": "an ImageNet classifier's state_dict() with its head",
                "osrbench": "a checkpoint.pt or a state_dict() file"}[req.layout]
        raise UsageError(f"--layout {req.layout} takes {want} --weights file(s) ({what}), got {n}")
    seen: dict[Path, Path] = {}
    for path in req.weights:
        path = Path(path)
        if not path.exists():
            raise UsageError(f"--weights {path}: no such file")
        if not path.is_file():
            raise UsageError(f"--weights {path}: not a file")
        real = path.resolve()
        if real in seen:
            raise UsageError(f"--weights {path} is given twice (also as {seen[real]})")
        seen[real] = path


def sha256_of(path: Path) -> str:
    try:
        return results.file_sha256(path)
    except OSError as exc:
        raise UserError(f"--weights {path}: cannot read it ({exc.strerror or type(exc).__name__})") from None


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` ends like an osrbench ``checkpoint.pt`` (its content-hash trailer)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 80))
            tail = fh.read()
    except OSError:
        return False
    return len(tail) == 80 and tail.startswith(checkpoints._TRAILER)


def accepted_layouts(method: Method) -> tuple[str, ...]:
    """The layouts ``method`` can be evaluated from: its own release layouts, then the host's."""
    own = tuple(getattr(method, "external_layouts", ())) if implements(method, "load_external") else ()
    return (*(lay for lay in own if lay != layouts.HOST_LAYOUT), layouts.HOST_LAYOUT)


def check_accepted(name: str, method: Method, layout: str) -> None:
    accepted = accepted_layouts(method)
    if layout not in accepted:
        raise UserError(f"method {name!r} does not read --layout {layout} (it reads: {', '.join(accepted)})")


def external_plan(base: engine.Plan, layout: str, files: list[WeightsFile]) -> engine.Plan:
    """``base`` (the plan of a run trained here) with the weights in its config: another config hash,
    resume key, run folder and identity."""
    if CONFIG_KEY in base.config:
        raise UserError(f"method {base.spec.name!r} has a config key {CONFIG_KEY!r}, which osrbench evaluate "
                        "needs for itself (plugin bug)")
    cfg = {**base.config, CONFIG_KEY: {"layout": layout, "sha256": sorted(f.sha256 for f in files)}}
    chash = configmod.config_hash(base.spec.name, cfg)
    rkey = configmod.resume_key(base.spec.name, cfg)
    req = base.request
    folder = results.run_dir(req.out, base.spec.name, base.dataset.name, req.protocol, req.split, req.seed, rkey)
    identity = dataclasses.replace(base.identity, config_hash=chash)
    return dataclasses.replace(base, config=cfg, config_hash=chash, resume_key=rkey, dir=folder, identity=identity)


# ------------------------------------------------------------------------------------ reading


@dataclass
class Loaded:
    """What the files held: the release's (``weights``) or the osrbench state (``state``)."""

    files: list[WeightsFile]
    weights: layouts.ExternalWeights | None = None
    state: Mapping[str, Any] | None = None
    checkpoint: Mapping[str, Any] | None = None  # the osrbench checkpoint, when the file was one


def read_files(layout: str, paths: tuple[Path, ...]) -> Loaded:
    """Read and hash every file; one line naming the file when one is not of the layout."""
    files = [WeightsFile(Path(p), sha256_of(Path(p))) for p in paths]
    if layout == layouts.HOST_LAYOUT:
        path = files[0].path
        if is_checkpoint(path):
            ckpt = checkpoints.read(path)
            state = ckpt.get("state")
            if not isinstance(state, Mapping):
                raise LayoutError(f"--weights {path}: an osrbench checkpoint without a method state")
            trained_epochs(ckpt.get("epoch"), str(path))
            layouts.check_finite(layouts.flatten(state, f"--weights {path}")[0], lambda key: str(path))
            return Loaded(files, state=state, checkpoint=ckpt)
        obj = layouts.read_file(path)
        if not isinstance(obj, Mapping):
            raise LayoutError(f"--weights {path}: neither an osrbench checkpoint.pt nor a Method.state_dict() "
                              f"(a dict), but a {type(obj).__name__}")
        layouts.check_finite(layouts.flatten(obj, f"--weights {path}")[0], lambda key: str(path))
        return Loaded(files, state=obj)
    for f in files:
        if is_checkpoint(f.path):
            raise LayoutError(f"--weights {f.path}: an osrbench checkpoint.pt, not a {layout} file: "
                              "use --layout osrbench")
    objs = [(f.name if [g.name for g in files].count(f.name) == 1 else str(f.path), layouts.read_file(f.path))
            for f in files]
    weights = layouts.ExternalWeights.from_files(objs)
    layouts.check_finite(weights.peek(), lambda key: weights.origin.get(key, "?"))
    return Loaded(files, weights=weights)


def trained_epochs(value: Any, where: str) -> int | None:
    """The epochs a file states it was trained for, bounded (``None``: it states none)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TRAINED_EPOCHS:
        raise LayoutError(f"--weights {where}: it states {str(value)[:40]} trained epochs, not a count of epochs "
                          f"(0 to {MAX_TRAINED_EPOCHS:,}): a damaged or edited file")
    return value


def check_seed_matches(loaded: Loaded, req: EvaluateRequest) -> None:
    """Refuse ``--seed`` when the weights are an osrbench checkpoint trained with another seed: the
    record would file seed-0 weights as a seed-5 run, and a comparison over seeds would count them
    as another draw."""
    ident = records.RunIdentity.from_json(loaded.checkpoint.get("identity")) if loaded.checkpoint else None
    if ident is not None and ident.seed != req.seed:
        raise UsageError(f"--weights {loaded.files[0].path} was trained with seed {ident.seed}, not --seed "
                         f"{req.seed}; evaluate it with --seed {ident.seed}")


def _load_release(s: session.Session, name: str, layout: str, loaded: Loaded) -> dict[str, Any]:
    weights = loaded.weights
    assert weights is not None
    s.call(f"load_external({layout!r}, weights)", s.method.load_external, layout, weights)
    unused = weights.unused()
    if unused:
        origin = weights.origin.get(unused[0], "?")
        mine = [k for k in unused if weights.origin.get(k) == origin]
        raise LayoutError(f"--weights {origin}: {len(mine)} key(s) that method {name!r} did not read for --layout "
                          f"{layout}: {layouts.shown(mine)} (not a file of this layout and method?)")
    epochs = trained_epochs(weights.info.get("trained_epochs"), ", ".join(f.name for f in loaded.files))
    return {"dropped": weights.dropped_summary(), "trained_epochs": epochs}


def _load_osrbench(s: session.Session, name: str, loaded: Loaded, plan: engine.Plan,
                   log: Callable[[str], None]) -> dict[str, Any]:
    path = loaded.files[0].path
    ckpt = loaded.checkpoint
    info: dict[str, Any] = {"dropped": {}, "trained_epochs": None}
    if ckpt is not None:
        if ckpt.get("method") != name:
            raise LayoutError(f"--weights {path}: a checkpoint of method {ckpt.get('method')!r}, not {name!r}")
        info["trained_epochs"] = trained_epochs(ckpt.get("epoch"), str(path))
        ident = records.RunIdentity.from_json(ckpt.get("identity"))
        if ident is not None:
            info["from_run"] = ident.to_json()
            diff = [f"{k} {getattr(ident, k)!r}" for k in ("dataset", "protocol", "split")
                    if getattr(ident, k) != getattr(plan.identity, k)]
            if diff:
                log(f"warning: {path} was trained on {', '.join(diff)}; evaluating it on {plan.dataset.name} "
                    f"{plan.split.protocol} split {plan.split.index}")
        trained_cfg = ckpt.get("config")
        if isinstance(trained_cfg, Mapping):
            keys = [k for k in plan.config  # a key newer than the checkpoint counts as its earlier value
                    if k not in (CONFIG_KEY, "epochs")
                    and trained_cfg.get(k, configmod.earlier_value(plan.spec.name, k)) != plan.config[k]]
            if keys:
                log(f"warning: {path} was trained with another config "
                    f"({', '.join(f'{k}={trained_cfg.get(k)!r}' for k in keys[:3])}"
                    f"{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}); it is evaluated with this one")
    fresh = s.call("state_dict()", s.method.state_dict)
    layouts.check_state(loaded.state, fresh, f"--weights {path}")
    try:
        s.method.load_state_dict(dict(loaded.state))
    except Exception as exc:  # noqa: BLE001 - the file does not fit this method's state
        text = " ".join(str(exc).split())[:240]
        raise LayoutError(f"--weights {path} does not fit method {name!r}: {type(exc).__name__}: {text}") from None
    return info


# ------------------------------------------------------------------------------------ evaluation


def run_request(req: EvaluateRequest) -> engine.RunRequest:
    return engine.RunRequest(method=req.method, dataset=req.dataset, protocol=req.protocol, split=req.split,
                             seed=req.seed, recipe=req.recipe, overrides=dict(req.overrides), device=req.device,
                             out=req.out, data_root=req.data_root, progress=False)


def evaluate(req: EvaluateRequest, registry: plugins.Plugins | None = None,
             log: Callable[[str], None] | None = None) -> Evaluated:
    """Evaluate ``req.weights`` as method ``req.method`` on the split; returns the record.

    Everything is checked (names, config, the files, the layout, every key) before the run folder
    is created; an intact record of the same weights and config is returned as it is unless
    ``req.force``.
    """
    log = log or (lambda msg: None)
    check_request(req)
    reg = registry or plugins.get()
    base = engine.plan(run_request(req), reg)
    probe = session.guarded(base.spec.name)("factory()", base.spec.factory)
    if isinstance(probe, Method):  # else open_session says what is wrong with the factory
        check_accepted(base.spec.name, probe, req.layout)  # before any file or data is read
    loaded = read_files(req.layout, req.weights)
    check_seed_matches(loaded, req)
    p = external_plan(base, req.layout, loaded.files)
    existing = p.existing_result(log)
    if existing is not None and not req.force:
        return Evaluated(existing, evaluated=False)
    device = devices.pick_device(req.device)
    cfg = p.config
    with devices.cpu_threads(cfg["threads"]):
        check_fit(p, req, device, loaded)
    data = session.load_data(p.dataset, p.split, cfg["image_size"], req.data_root, **session.test_transform(cfg))
    with devices.cpu_threads(cfg["threads"]):  # the run's thread count: rescore rebuilds it under the same
        return _evaluate(p, reg, req, data, device, loaded, log)


def check_fit(p: engine.Plan, req: EvaluateRequest, device: Any, loaded: Loaded) -> None:
    """Load the files into the method set up on a stand-in of the split (one blank image of the run's
    size): a file that does not fit the layout or the method is refused in seconds, before the
    split's images are read. The evaluation then sets the method up again on the real data."""
    size = p.config["image_size"]
    blank, label = torch.zeros((1, 3, size, size), dtype=torch.uint8), torch.zeros(1, dtype=torch.long)
    stand_in = OpenSetData(blank, label, blank, label, blank, label)
    name = p.spec.name
    s = session.open_session(p.spec, p.config, stand_in, num_classes=p.split.num_known, dataset=p.dataset.name,
                             device=device, seed=req.seed, call=session.guarded(name))
    check_accepted(name, s.method, req.layout)
    if req.layout == layouts.HOST_LAYOUT:
        _load_osrbench(s, name, loaded, p, lambda msg: None)
    else:
        _load_release(s, name, req.layout, loaded)


def _evaluate(p: engine.Plan, reg: plugins.Plugins, req: EvaluateRequest, data: Any, device: Any,
              loaded: Loaded, log: Callable[[str], None]) -> Evaluated:
    cfg, name = p.config, p.spec.name
    s = session.open_session(p.spec, cfg, data, num_classes=p.split.num_known, dataset=p.dataset.name,
                             device=device, seed=req.seed, call=session.guarded(name))
    check_accepted(name, s.method, req.layout)
    if req.layout == layouts.HOST_LAYOUT:
        info = _load_osrbench(s, name, loaded, p, log)
        fitted = bool(loaded.checkpoint and loaded.checkpoint.get("fitted"))
    else:
        info = _load_release(s, name, req.layout, loaded)
        fitted = False
    if implements(s.method, "fit") and not fitted:
        s.fit()  # as the engine fits a run after its last epoch
        fitted = True
    devices.reset_peak_memory(device)
    t0 = time.perf_counter()
    ev = evaluation.evaluate(s.method, data, device, cfg["normalize"], p.split.num_known, s.precision, s.call)
    eval_time = time.perf_counter() - t0
    external = {"layout": req.layout, "files": [{"name": f.name, "sha256": f.sha256} for f in loaded.files], **info}
    state = s.call("state_dict()", s.method.state_dict)
    results.ensure_dir(p.dir, "run folder")
    for tmp in results.remove_orphans(p.dir):
        log(f"removed {tmp.name}, a temporary file a killed process left in {p.dir}")
    checkpoints.save(p.dir, {
        "identity": p.identity.to_json(), "method": name, "resume_key": p.resume_key, "config": cfg,
        "epoch": cfg["epochs"], "fitted": fitted, "state": state, "rng": s.rng_state(), "history": [],
        "elapsed": 0.0, "external_weights": external,
    })
    scores_sha256 = records.write_scores(p.dir, ev.scores, p.identity)
    plugin = reg.plugin_of("method", name)
    record = Record(
        method=name, dataset=p.dataset.name, protocol=p.split.protocol, split=p.split.index, seed=req.seed,
        config=cfg, config_hash=p.config_hash, split_hash=p.split.hash, metrics=ev.metrics, recipe=p.recipe,
        plugin={"name": plugin.name, "distribution": plugin.distribution, "version": plugin.version},
        threads=cfg["threads"], known_classes=tuple(p.split.known), unknown_classes=tuple(p.split.unknown),
        counts={"train": len(data.train_x), "known": len(data.known_x), "unknown": len(data.unknown_x)},
        image_shape=tuple(s.ctx.image_shape), f1_rule=ev.f1_rule, scores=tuple(ev.scores.names),
        history=(), adaptations=s.call("adaptations()", s.method.adaptations),
        versions=engine._versions(plugin), device=devices.device_name(device),
        wall_time_s={"train": 0.0, "eval": eval_time}, peak_memory_mb=devices.peak_memory_mb(device),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), scores_sha256=scores_sha256, external_weights=external,
    )
    record = records.write_record(p.dir, record)
    (p.dir / records.ERROR).unlink(missing_ok=True)
    return Evaluated(record, evaluated=True)
