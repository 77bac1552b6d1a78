"""The two files a finished run leaves: its record (``result.json``) and its scores (``scores.npz``).

Each has one type, one writer and one reader here:

- :class:`Record`: everything that identifies the run (method, plugin distribution and version,
  dataset, protocol, split index and hash, seed, config and its hash, torch's thread count) and
  what it measured. Written with a content hash (``sha256``); a reader refuses a record whose hash
  does not match, and a record of a newer schema than this osrbench reads. The folder a record
  was read from is :attr:`Record.dir`, never part of the file.
- :class:`Scores`: the test set's logits, labels, main score and named scores, as float64 arrays,
  and which named score the main score is.

Torch-free: compare, report and export read records without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from osrbench import results
from osrbench.errors import UserError

RESULT = "result.json"
SCORES = "scores.npz"
ERROR = "error.json"
#: Version of the record's JSON layout. 1: before ``schema``, ``plugin`` and ``threads`` existed.
SCHEMA = 2


class CorruptRecord(UserError, ValueError):
    """A record or scores file that is truncated, not osrbench's, edited, or of a newer schema."""


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
    cuda_graph_steps: Mapping[str, int] | None = None
    schema: int = SCHEMA
    #: Content hash of the file it was read from (``None`` before it is written).
    sha256: str | None = field(default=None, compare=False)
    #: The run folder it was read from or written to; not part of the file.
    dir: Path | None = field(default=None, compare=False)

    # ------------------------------------------------------------------------- conversion
    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("sha256", "dir")}
        for key in ("known_classes", "unknown_classes", "image_shape", "scores", "history", "f1_rule"):
            if doc[key] is not None:
                doc[key] = list(doc[key])
        if doc["cuda_graph_steps"] is None:
            del doc["cuda_graph_steps"]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "record") -> "Record":
        schema = doc.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise CorruptRecord(f"{where}: record schema {schema!r} is newer than this osrbench reads ({SCHEMA}); "
                                "upgrade osrbench")
        known = {f.name for f in dataclasses.fields(cls)} - {"sha256", "dir"}
        kw = {k: v for k, v in doc.items() if k in known}
        if schema == 1:
            kw.setdefault("plugin", dict(doc.get("versions", {}).get("plugin", {})))
        kw["schema"] = schema
        for key in ("known_classes", "unknown_classes", "image_shape", "scores", "history", "f1_rule"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        try:
            return cls(**kw, sha256=doc.get("sha256"))
        except TypeError as exc:  # a required field missing
            raise CorruptRecord(f"{where}: not an osrbench record ({exc})") from None

    def replace(self, **changes: Any) -> "Record":
        return dataclasses.replace(self, **changes)

    @property
    def epochs(self) -> int:
        return int(self.config["epochs"])


def write_record(folder: Path, record: Record) -> Record:
    """Write ``folder/result.json`` atomically; returns the record with its hash and folder."""
    path = Path(folder) / RESULT
    results.write_json(path, record.to_json())
    return read_record(path)


def read_record(path: Path) -> Record:
    """A verified record (``result.json`` or its folder); :class:`CorruptRecord` when it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT
    try:
        doc = results.read_json(path)
    except results.CorruptJSON as exc:
        raise CorruptRecord(str(exc)) from None
    return Record.from_json(doc, str(path)).replace(dir=path.parent)


def iter_records(root: Path, on_error: Callable[[str], None] | None = None) -> Iterator[Record]:
    """Every valid record under ``root``, in path order; corrupt ones are reported and skipped."""
    for path in sorted(Path(root).rglob(RESULT)):
        try:
            yield read_record(path)
        except CorruptRecord as exc:
            if on_error:
                on_error(str(exc))


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


def write_scores(folder: Path, scores: Scores) -> None:
    results.write_npz(Path(folder) / SCORES, scores.to_arrays())


def read_scores(folder: Path) -> Scores:
    """The scores file of a run folder; :class:`CorruptRecord` when it is missing parts or unreadable."""
    path = Path(folder) / SCORES
    try:
        with np.load(path, allow_pickle=False) as z:
            return Scores.from_arrays({k: z[k] for k in z.files})
    except FileNotFoundError:
        raise CorruptRecord(f"{path}: no scores file") from None
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptRecord(f"{path}: unreadable scores file ({type(exc).__name__}: {exc})") from None
