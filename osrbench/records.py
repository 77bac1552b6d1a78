"""The two files a finished run leaves: its record (``result.json``) and its scores (``scores.npz``).

Each has one type, one writer and one reader here:

- :class:`Record`: everything that identifies the run (method, plugin distribution and version,
  dataset, protocol, split index and hash, seed, config and its hash, torch's thread count) and
  what it measured. Written with a content hash (``sha256``); a reader refuses a record whose hash
  does not match, and a record of a newer schema than this osrbench reads. The folder a record
  was read from is :attr:`Record.dir`, never part of the file.
- :class:`Scores`: the test set's logits, labels, main score and named scores, as float64 arrays,
  and which named score the main score is; written with the run's identity and a content hash,
  which the record holds too (``scores_sha256``), so a swapped or edited scores file is refused.
- :class:`RunIdentity`: what a file must say to belong to a run. The checkpoint carries it as
  well; every reader compares it with the run it is reading for and refuses a foreign file in
  one line (:class:`ForeignFile`).

Torch-free: compare, report and export read records without importing torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from osrbench import metrics, results
from osrbench.errors import UserError
from osrbench import verify as checks  # the checks; ``verify`` is the readers' flag
from osrbench.verify import Unverified

RESULT = "result.json"
SCORES = "scores.npz"
POSTHOC = "posthoc.npz"
ERROR = "error.json"
#: Version of the record's JSON layout. 1: before ``schema``, ``plugin`` and ``threads`` existed.
SCHEMA = 2


class CorruptRecord(UserError, ValueError):
    """A record or scores file that is truncated, not osrbench's, edited, or of a newer schema."""


class ForeignFile(UserError):
    """An intact file that belongs to another run (another split, seed, method, plugin, ...)."""


@dataclass(frozen=True)
class RunIdentity:
    """What identifies a run; every file of a run carries it and every reader checks it."""

    method: str
    plugin_distribution: str
    plugin_version: str
    dataset: str
    protocol: str
    split: int
    split_hash: str
    seed: int
    config_hash: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> "RunIdentity | None":
        """The identity a file states, or ``None`` when it states none (or not a valid one)."""
        if not isinstance(doc, Mapping):
            return None
        try:
            return cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls)})
        except (KeyError, TypeError):
            return None

    def differences(self, other: "RunIdentity", ignore: tuple[str, ...] = ()) -> list[str]:
        """``field other-value (expected self-value)`` for every field that differs."""
        return [f"{f.name} {getattr(other, f.name)!r} (expected {getattr(self, f.name)!r})"
                for f in dataclasses.fields(self) if f.name not in ignore and getattr(self, f.name) != getattr(other, f.name)]

    def check(self, stated: Any, what: str, ignore: tuple[str, ...] = ()) -> None:
        """Raise :class:`ForeignFile` unless ``stated`` (a file's identity, JSON) is this run's."""
        other = self.from_json(stated)
        if other is None:
            raise ForeignFile(f"{what} states no run identity (written by an older osrbench or not by osrbench); "
                              "it is not used")
        diff = self.differences(other, ignore)
        if diff:
            raise ForeignFile(f"{what} belongs to another run ({'; '.join(diff[:3])}); it is not used")


@dataclass(frozen=True)
class Record:
    """The result of one run (method, dataset, protocol, split, seed, resolved config)."""

    method: str
    dataset: str
    protocol: str
    split: int
    seed: int
    config: Mapping[str, Any]
    config_hash: str
    split_hash: str
    metrics: Mapping[str, float]
    recipe: str | None = None
    #: The plugin that registered the method: ``{"name", "distribution", "version"}``.
    plugin: Mapping[str, str] = field(default_factory=dict)
    #: torch's CPU thread count during the run (``None`` in schema-1 records).
    threads: int | None = None
    known_classes: tuple[int, ...] = ()
    unknown_classes: tuple[int, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)  # train / known / unknown images
    image_shape: tuple[int, ...] = ()
    f1_rule: tuple[str, float] | None = None
    scores: tuple[str, ...] = ("score",)  # names of the stored scores; "score" is the main score
    history: tuple[Mapping[str, float], ...] = ()  # per epoch: {"epoch", "<phase>/<loss>": mean}
    adaptations: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    device: str = ""
    wall_time_s: Mapping[str, float] = field(default_factory=dict)
    peak_memory_mb: Mapping[str, float] = field(default_factory=dict)
    created: str = ""
    #: Whether the training steps replayed from CUDA graphs (config ``cuda_graphs`` resolved;
    #: ``None`` in records written before ``auto``).
    cuda_graphs: bool | None = None
    cuda_graph_steps: Mapping[str, int] | None = None
    #: Content hash of the run's ``scores.npz`` (``None`` in schema-1 records).
    scores_sha256: str | None = None
    #: ``osrbench evaluate``: weights trained elsewhere, ``{"layout", "files": [{"name", "sha256"}]}``;
    #: ``None`` for a run trained here.
    external_weights: Mapping[str, Any] | None = None
    #: A run that trained nothing itself: the weights are those another split of the same method,
    #: seed and config trained on the same known classes (protocol ssb), ``{"split", "split_hash"}``;
    #: ``None`` for a run that trained its own weights.
    shared_training: Mapping[str, Any] | None = None
    schema: int = SCHEMA
    #: Content hash of the file it was read from (``None`` before it is written).
    sha256: str | None = field(default=None, compare=False)
    #: The run folder it was read from or written to; not part of the file.
    dir: Path | None = field(default=None, compare=False)
    #: Included by ``--allow-unverified`` although it states no scores hash (:mod:`osrbench.verify`);
    #: not part of the file.
    unverified: bool = field(default=False, compare=False)

    # ------------------------------------------------------------------------- conversion
    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("sha256", "dir", "unverified")}
        for key in ("known_classes", "unknown_classes", "image_shape", "scores", "history", "f1_rule"):
            if doc[key] is not None:
                doc[key] = list(doc[key])
        for key in ("cuda_graphs", "cuda_graph_steps", "external_weights", "shared_training"):  # absent rather than null: older readers
            if doc[key] is None:
                del doc[key]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "record") -> "Record":
        schema = doc.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise CorruptRecord(f"{where}: record schema {schema!r} is newer than this osrbench reads ({SCHEMA}); "
                                "upgrade osrbench")
        known = {f.name for f in dataclasses.fields(cls)} - {"sha256", "dir", "unverified"}
        kw = {k: v for k, v in doc.items() if k in known}
        if schema == 1:
            versions = doc.get("versions")
            kw.setdefault("plugin", dict(versions.get("plugin", {})) if isinstance(versions, Mapping) else {})
        kw["schema"] = schema
        problem = _schema_problem(kw)
        if problem:
            raise CorruptRecord(f"{where}: not a valid osrbench record ({problem}); it is skipped")
        for key in ("known_classes", "unknown_classes", "image_shape", "scores", "history", "f1_rule"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw, sha256=doc.get("sha256"))

    def replace(self, **changes: Any) -> "Record":
        return dataclasses.replace(self, **changes)

    @property
    def epochs(self) -> int:
        return int(self.config["epochs"])

    @property
    def plugin_id(self) -> tuple[str | None, str | None]:
        """``(distribution, version)`` of the plugin that registered the method (``None``: not recorded)."""
        dist, version = self.plugin.get("distribution"), self.plugin.get("version")
        return (None if dist is None else str(dist)), (None if version is None else str(version))

    @property
    def identity(self) -> RunIdentity:
        dist, version = self.plugin_id
        return RunIdentity(self.method, dist or "?", version or "?", self.dataset, self.protocol, self.split,
                           self.split_hash, self.seed, self.config_hash)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool))


#: What every reader of a record relies on: field -> (required, check). A record with a valid
#: content hash that breaks one of these is reported and skipped, never a traceback later on.
_FIELDS: dict[str, tuple[bool, Callable[[Any], bool]]] = {
    "method": (True, lambda v: isinstance(v, str) and bool(v)),
    "dataset": (True, lambda v: isinstance(v, str) and bool(v)),
    "protocol": (True, lambda v: isinstance(v, str) and bool(v)),
    "split": (True, lambda v: _is_int(v) and v >= 0),
    "seed": (True, lambda v: _is_int(v) and v >= 0),
    "config": (True, lambda v: isinstance(v, Mapping) and _is_int(v.get("epochs"))),
    "config_hash": (True, lambda v: isinstance(v, str) and bool(v)),
    "split_hash": (True, lambda v: isinstance(v, str)),
    "metrics": (True, lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and (x is None or _is_num(x))
                                                              for k, x in v.items())),
    "counts": (True, lambda v: isinstance(v, Mapping) and all(_is_int(v.get(k)) for k in ("train", "known", "unknown"))),
    "wall_time_s": (True, lambda v: isinstance(v, Mapping) and _is_num(v.get("train")) and _is_num(v.get("eval"))),
    "history": (True, lambda v: isinstance(v, list) and all(isinstance(r, Mapping) for r in v)),
    "scores": (True, lambda v: isinstance(v, list) and "score" in v and all(isinstance(x, str) for x in v)),
    "recipe": (False, lambda v: v is None or isinstance(v, str)),
    "plugin": (False, lambda v: isinstance(v, Mapping)),
    "threads": (False, lambda v: v is None or (_is_int(v) and v >= 1)),
    "f1_rule": (False, lambda v: v is None or (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                                              and _is_num(v[1]))),
    "known_classes": (False, lambda v: isinstance(v, list) and all(_is_int(x) for x in v)),
    "unknown_classes": (False, lambda v: isinstance(v, list) and all(_is_int(x) for x in v)),
    "image_shape": (False, lambda v: isinstance(v, list) and all(_is_int(x) for x in v)),
    "device": (False, lambda v: isinstance(v, str)),
    "created": (False, lambda v: isinstance(v, str)),
    "scores_sha256": (False, lambda v: v is None or isinstance(v, str)),
    "cuda_graphs": (False, lambda v: v is None or isinstance(v, bool)),
    "external_weights": (False, lambda v: v is None or (isinstance(v, Mapping) and isinstance(v.get("layout"), str)
                                                        and isinstance(v.get("files"), list))),
    "shared_training": (False, lambda v: v is None or (isinstance(v, Mapping) and _is_int(v.get("split"))
                                                       and isinstance(v.get("split_hash"), str))),
}


def _schema_problem(doc: Mapping[str, Any]) -> str | None:
    for name, (required, ok) in _FIELDS.items():
        if name not in doc:
            if required:
                return f"field {name!r} missing"
        elif not ok(doc[name]):
            return f"field {name!r} has an invalid value"
    return None


def write_record(folder: Path, record: Record) -> Record:
    """Write ``folder/result.json`` atomically; returns the record with its hash and folder."""
    path = Path(folder) / RESULT
    results.write_json(path, record.to_json())
    return read_record(path)


def read_record(path: Path, verify: bool = True) -> Record:
    """A verified record (``result.json`` or its folder); :class:`CorruptRecord` when it is not one.

    ``verify``: it must also pass :func:`verify_metrics` (its metrics are what its
    scores give, its scores what its split fixes; an unverified record is refused unless allowed);
    only a reader that recomputes every number itself (``rescore``, ``verify``) reads without it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULT
    try:
        doc = results.read_json(path)
    except results.CorruptJSON as exc:
        raise CorruptRecord(str(exc)) from None
    rec = Record.from_json(doc, str(path)).replace(dir=path.parent)
    return verify_metrics(rec) if verify else rec


def verify_metrics(rec: Record, scores: "Scores | None" = None, allow_unverified: bool | None = None) -> Record:
    """The one check every reader of a metric makes (the checks are :mod:`osrbench.verify`'s): ``rec``
    if every metric it states is what its scores give and its scores are what its split fixes;
    ``rec`` marked ``unverified`` if it states no scores hash and those are allowed
    (``allow_unverified``, default: ``--allow-unverified`` was given).

    Raises :class:`osrbench.verify.Unverified` for an unverified record that is not allowed, and
    :class:`CorruptRecord` naming the file and the problem otherwise.
    """
    path = Path(rec.dir) / RESULT if rec.dir is not None else "record"
    why = checks.unverified_reason(rec)
    if why is not None:
        if checks.allowed() if allow_unverified is None else allow_unverified:
            return rec.replace(unverified=True)
        raise Unverified(f"{path}: unverified, {why}; its metrics cannot be checked, so it is not used "
                         "(--allow-unverified includes it, marked)")
    if rec.dir is None:
        return rec
    if scores is None:
        try:
            scores = read_scores(rec.dir, rec)
        except UserError as exc:
            raise CorruptRecord(f"{path}: its metrics cannot be verified ({exc}); {checks.AGAIN}") from None
    problem = checks.split_problem(rec, scores) or checks.metrics_problem(rec, scores)
    if problem:
        raise CorruptRecord(f"{path}: {problem}; {checks.AGAIN}")
    return rec


def misplaced(rec: Record) -> str | None:
    """Why ``rec`` does not lie in its own run folder (``<dataset>/<protocol>/<method>/split<i>-seed<s>-*``)."""
    if rec.dir is None:
        return None
    parts = Path(rec.dir).parts[-4:]
    want = (rec.dataset, rec.protocol, rec.method)
    if len(parts) < 4 or tuple(parts[:3]) != want or not parts[3].startswith(f"split{rec.split}-seed{rec.seed}-"):
        return (f"{rec.dir}: a record of {rec.method} {rec.dataset}/{rec.protocol} split {rec.split} seed {rec.seed} "
                "lies in another run's folder (copied or moved); it is not used")
    return None


def iter_records(root: Path, on_error: Callable[[str], None] | None = None,
                 verify: bool = True) -> Iterator[Record]:
    """Every valid record under ``root`` in its own run folder, in path order; a corrupt,
    unverifiable (``verify``, see :func:`read_record`) or misplaced one is reported through
    ``on_error`` (one line each) and skipped."""
    for path in sorted(Path(root).rglob(RESULT)):
        try:
            rec = read_record(path, verify=False)
            problem = misplaced(rec)  # first: a copied record's folder holds no scores of its own
            if problem is None and verify:
                rec = verify_metrics(rec)
        except (CorruptRecord, Unverified) as exc:
            problem = str(exc)
        if problem is None:
            yield rec
        elif on_error:
            on_error(problem)


# ------------------------------------------------------------------------------------ scores


@dataclass(frozen=True)
class Scores:
    """A run's test-set outputs: float64 logits and scores, labels, and the name of its main score.

    ``known`` / ``unknown`` map score names to (N,) arrays; ``"score"`` is always there (the
    method's main score, higher = more likely known); ``main`` names the named score it equals
    (``"score"`` when it equals none).
    """

    known_logits: np.ndarray
    unknown_logits: np.ndarray
    known_labels: np.ndarray
    unknown_ids: np.ndarray
    known: Mapping[str, np.ndarray]
    unknown: Mapping[str, np.ndarray]
    main: str = "score"

    @property
    def names(self) -> list[str]:
        return ["score", *(k for k in self.known if k != "score")]

    def pick(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Known and unknown values of score ``name``; a user error naming the stored ones."""
        if name not in self.known:
            raise UserError(f"no stored score {name!r} (available: {', '.join(self.names)})")
        return self.known[name], self.unknown[name]

    @property
    def known_pred(self) -> np.ndarray:
        return self.known_logits.argmax(1)

    @property
    def unknown_pred(self) -> np.ndarray:
        return self.unknown_logits.argmax(1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"known_score": self.known["score"], "unknown_score": self.unknown["score"],
               "known_logits": self.known_logits, "unknown_logits": self.unknown_logits,
               "known_labels": self.known_labels, "unknown_ids": self.unknown_ids, "main": np.array(self.main)}
        for k in self.names[1:]:
            out[f"known_score_{k}"], out[f"unknown_score_{k}"] = self.known[k], self.unknown[k]
        return out

    def metrics(self, name: str = "score", f1_rule: Sequence[Any] | None = None) -> dict[str, float]:
        """Every metric of the run with score ``name``; macro-F1 thresholds the score its rule names
        (METHODS.md §6.5: the rule names its own score, whichever score ranks the rest)."""
        known, unknown = self.pick(name)
        labels, known_pred, unknown_pred = self.known_labels, self.known_pred, self.unknown_pred
        out = metrics.evaluate(known, known_pred, labels, unknown, unknown_pred)
        if f1_rule:
            rule_name, threshold = f1_rule
            ks, us = self.pick(rule_name)
            out["macro_f1"] = metrics.macro_f1(labels, known_pred, ks, unknown_pred, us, threshold)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Scores":
        known = {"score": arrays["known_score"]}
        unknown = {"score": arrays["unknown_score"]}
        for k in arrays:  # in the order they were written: the record's order
            if k.startswith("known_score_"):
                name = k[len("known_score_"):]
                known[name], unknown[name] = arrays[k], arrays[f"unknown_score_{name}"]
        main = str(arrays["main"]) if "main" in arrays else main_score_name(known, unknown)
        return cls(arrays["known_logits"], arrays["unknown_logits"], arrays["known_labels"], arrays["unknown_ids"],
                   known, unknown, main)


def main_score_name(known: Mapping[str, np.ndarray], unknown: Mapping[str, np.ndarray]) -> str:
    """Which named score equals the main score on every test image (``score`` when none does)."""
    for name in sorted(known):
        if name != "score" and np.array_equal(known[name], known["score"]) and np.array_equal(
                unknown[name], unknown["score"]):
            return name
    return "score"


def arrays_hash(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def write_scores(folder: Path, scores: Scores, identity: RunIdentity) -> str:
    """Write ``folder/scores.npz`` with the run's identity and content hash; returns the hash."""
    arrays = scores.to_arrays()
    digest = arrays_hash(arrays)
    stamp = {"identity": np.array(json.dumps(identity.to_json(), sort_keys=True)), "sha256": np.array(digest)}
    results.write_npz(Path(folder) / SCORES, {**arrays, **stamp})
    return digest


def read_scores(folder: Path, record: Record | None = None) -> Scores:
    """The verified scores file of a run folder (of ``record``'s run, when given).

    :class:`CorruptRecord` when it is missing, unreadable or edited (content hash);
    :class:`ForeignFile` when it is another run's or not the one ``record`` was written with.
    """
    path = Path(folder) / SCORES
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        stated, digest = arrays.pop("identity", None), arrays.pop("sha256", None)
        scores = Scores.from_arrays(arrays)
    except FileNotFoundError:
        raise CorruptRecord(f"{path}: no scores file") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptRecord(f"{path}: unreadable scores file ({type(exc).__name__})") from None
    if digest is not None and str(digest) != arrays_hash(arrays):
        raise CorruptRecord(f"{path}: content hash mismatch (the scores were modified or damaged)")
    if record is not None:
        if record.scores_sha256 is not None and (digest is None or str(digest) != record.scores_sha256):
            raise ForeignFile(f"{path}: not the scores file this run's record was written with (hash differs); "
                              "it is not used")
        if stated is not None:
            try:
                doc = json.loads(str(stated))
            except ValueError:
                doc = None
            record.identity.check(doc, str(path))
    return scores


# ------------------------------------------------------------------------------ post-hoc scores
@dataclass(frozen=True)
class Posthoc:
    """The post-hoc scores of a run (``osrbench score``), in ``posthoc.npz`` beside its scores file.

    Per scorer name: its (N,) test scores, higher = more likely known (``known`` / ``unknown``),
    and ``info``: the parameters it used, how they were tuned, the scorer's plugin; a scorer that
    does not apply to the method has only ``info`` (``{"not_applicable": why}``). The file is
    bound to the run's identity and to the ``scores.npz`` it was computed against (whose logits
    give the closed-set predictions), so a retrained run never shows another network's scores.
    """

    known: Mapping[str, np.ndarray] = field(default_factory=dict)
    unknown: Mapping[str, np.ndarray] = field(default_factory=dict)
    info: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Scorers with stored scores."""
        return list(self.known)

    def not_applicable(self, name: str) -> str | None:
        """Why scorer ``name`` does not apply to this run's method (``None``: it does, or was not tried)."""
        return self.info.get(name, {}).get("not_applicable")

    def merged(self, other: "Posthoc") -> "Posthoc":
        """These scores with ``other``'s added (``other`` wins where both have a scorer)."""
        return Posthoc({**self.known, **other.known}, {**self.unknown, **other.unknown}, {**self.info, **other.info})

    def metrics(self, name: str, scores: Scores) -> dict[str, float]:
        """Every metric of scorer ``name`` (no macro-F1: a scorer has no threshold rule); the closed-set
        predictions are ``scores``' logits'."""
        why = self.not_applicable(name)
        if why:
            raise UserError(f"scorer {name!r} does not apply to this run's method: {why}")
        if name not in self.known:
            raise UserError(f"no post-hoc score {name!r} stored (stored: {', '.join(self.names) or 'none'}); "
                            f"compute it with: osrbench score --scorer {name}")
        return metrics.evaluate(self.known[name], scores.known_pred, scores.known_labels, self.unknown[name],
                                scores.unknown_pred)


def write_posthoc(folder: Path, posthoc: Posthoc, record: Record) -> None:
    """Write ``folder/posthoc.npz`` atomically, bound to ``record``'s identity and scores file."""
    arrays = {}
    for name in posthoc.names:
        arrays[f"known/{name}"], arrays[f"unknown/{name}"] = posthoc.known[name], posthoc.unknown[name]
    arrays["info"] = np.array(json.dumps(posthoc.info, sort_keys=True))
    stamp = {"identity": np.array(json.dumps(record.identity.to_json(), sort_keys=True)),
             "scores_sha256": np.array(record.scores_sha256 or ""), "sha256": np.array(arrays_hash(arrays))}
    results.write_npz(Path(folder) / POSTHOC, {**arrays, **stamp})


def read_posthoc(folder: Path, record: Record) -> Posthoc:
    """The verified post-hoc scores of ``record``'s run; empty when it has none yet.

    :class:`CorruptRecord` when the file is unreadable or edited; :class:`ForeignFile` when it is
    another run's or was computed against another scores file (the run was trained again).
    """
    path = Path(folder) / POSTHOC
    if not path.exists():
        return Posthoc()
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        stated, against, digest = (str(arrays.pop(k)) for k in ("identity", "scores_sha256", "sha256"))
        info = json.loads(str(arrays["info"]))
        names = [k[len("known/"):] for k in arrays if k.startswith("known/")]
        known = {n: arrays[f"known/{n}"] for n in names}
        unknown = {n: arrays[f"unknown/{n}"] for n in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptRecord(f"{path}: unreadable post-hoc scores file ({type(exc).__name__})") from None
    if digest != arrays_hash(arrays):
        raise CorruptRecord(f"{path}: content hash mismatch (the post-hoc scores were modified or damaged)")
    try:
        doc = json.loads(stated)
    except ValueError:
        doc = None
    record.identity.check(doc, str(path))
    if against != (record.scores_sha256 or ""):
        raise ForeignFile(f"{path}: computed against another scores file of this run (it was evaluated again); "
                          "score it again with osrbench score --force")
    if not isinstance(info, dict) or {n for n, v in info.items() if "not_applicable" not in v} != set(names):
        raise CorruptRecord(f"{path}: its scorer list does not match its scores")
    # its metrics are always computed from these scores with scores.npz's predictions: one score per test image
    want = (record.counts.get("known"), record.counts.get("unknown"))
    for n in names:
        if (known[n].shape, unknown[n].shape) != ((want[0],), (want[1],)):
            raise CorruptRecord(f"{path}: scorer {n!r} holds {known[n].shape} known and {unknown[n].shape} unknown "
                                f"scores, not one per test image ({want[0]}, {want[1]}); score it again with "
                                "osrbench score --force")
    return Posthoc(known, unknown, info)


def folder_hash(rec: Any) -> str:
    """The hash a record's run folder name ends in (``split0-seed0-<hash>``): its resume key's first
    10 characters, what a user finds on disk; the record's ``config_hash`` covers the whole config
    (the epochs too) and names no folder."""
    if rec.dir is not None:
        return Path(rec.dir).name.rsplit("-", 1)[-1]
    from osrbench.config import resume_key  # torch: only for a record read without its folder

    return resume_key(rec.method, rec.config)[:10]
