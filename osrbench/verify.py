"""What a record proves, checked in one place: every reader of a metric calls
:func:`osrbench.records.verify_metrics`, which makes the checks written here.

A record's content hash (``sha256``) and its scores hash (``scores_sha256``) prove that the two
files are intact and belong together, and :func:`metrics_problem` recomputes every metric from the
stored scores. None of that is a signature: anyone who edits the scores can recompute the metrics
and both hashes. What the split fixes (its known and unknown classes, and, for a dataset whose
test set is fixed here, the number of test images of each class) is checked against the scores
too, so a forgery that drops test images is refused. Only ``osrbench verify`` proves that the
numbers came from the run's network: it rebuilds the predictions from the checkpoint, and leaves a
stamp (:data:`STAMP`) in each run folder it verified: the sha256 of the record, scores and checkpoint
files it checked, with the osrbench version, device and date. A later edit of any of the three makes
the stamp stale (:func:`stamped` recomputes the hashes); export and the report page count the runs
whose stamp holds. The stamp is not a signature either: it says that someone ran ``verify`` on a
machine that held the checkpoint, and anyone can write one.

A record without a scores hash (``schema: 1``, or the field deleted or nulled) has nothing its
metrics can be checked against: it is *unverified*, refused by default (one line per record) and
included only where the user asks (``--allow-unverified``, or ``OSRBENCH_ALLOW_UNVERIFIED=1``,
which the flag sets so that worker processes see it too), marked in every output.

Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

from osrbench.errors import UserError

# A record and its scores are osrbench.records' Record and Scores: records calls these checks
# (records.verify_metrics), so this module names them without importing them (no cycle).
Record = Scores = Any

#: Set by ``--allow-unverified`` (an environment variable: a sweep's worker processes inherit it).
ALLOW_ENV = "OSRBENCH_ALLOW_UNVERIFIED"

#: The stamp ``osrbench verify`` writes in each run folder it verified from the checkpoint.
STAMP = "verified.json"
#: The files a stamp covers: its key -> the run folder's file (records.RESULT, records.SCORES and
#: checkpoints.CHECKPOINT, named here: records imports this module, checkpoints imports torch).
STAMPED_FILES = {"record_sha256": "result.json", "scores_sha256": "scores.npz", "checkpoint_sha256": "checkpoint.pt"}

#: What a record that fails a check says to do (``compare`` and ``run`` do it themselves).
AGAIN = "it is not used (osrbench run or compare evaluates it again from its final checkpoint)"
MISMATCH = "the scores were changed after training, or the checkpoint is not this run's"


class Unverified(UserError, ValueError):
    """A record whose metrics cannot be checked: it states no scores hash."""


def allowed() -> bool:
    """Whether unverified records are included (``--allow-unverified`` set it for this process tree)."""
    return os.environ.get(ALLOW_ENV, "") not in ("", "0")


def allow(on: bool = True) -> None:
    """Include (``on``) or refuse unverified records in this process and the workers it starts."""
    if on:
        os.environ[ALLOW_ENV] = "1"
    else:
        os.environ.pop(ALLOW_ENV, None)


def unverified_reason(rec: Record) -> str | None:
    """Why ``rec``'s metrics cannot be checked against its scores (``None``: they can)."""
    if rec.scores_sha256:
        return None
    if rec.schema < 2:
        return "a schema-1 record, which states no scores hash"
    return "its scores hash is missing or null (the field was removed: an edited record)"


def metrics_problem(rec: Record, scores: Scores) -> str | None:
    """Why ``rec``'s metrics are not the ones ``scores`` give (``None``: they are)."""
    n_known, n_unknown = len(scores.known["score"]), len(scores.unknown["score"])
    if (rec.counts.get("known"), rec.counts.get("unknown")) != (n_known, n_unknown):
        return (f"its counts ({rec.counts.get('known')} known, {rec.counts.get('unknown')} unknown images) are not "
                f"its scores file's ({n_known}, {n_unknown})")
    if list(rec.scores) != scores.names:
        return f"its score names {list(rec.scores)} are not its scores file's {scores.names}"
    try:
        derived = scores.metrics("score", rec.f1_rule)
    except (UserError, ValueError) as exc:
        return f"its metrics cannot be recomputed from its scores ({exc})"
    for name, value in rec.metrics.items():
        if name not in derived:
            return f"metric {name!r} is not one its scores give"
        if not same(value, derived[name]):
            return f"metric {name!r} is {value!r}, but its scores.npz gives {derived[name]!r} (the record was edited)"
    return None


def same(a: Any, b: Any) -> bool:
    """Two metric values agree: equal up to rounding, or both missing (JSON stores NaN as null)."""
    missing = [x is None or (isinstance(x, float) and math.isnan(x)) for x in (a, b)]
    if any(missing):
        return all(missing)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def split_hash(dataset: str, known: tuple[int, ...], unknown: tuple[int, ...]) -> str:
    """:attr:`osrbench.protocols.OpenSetSplit.hash` (the records layer cannot import protocols, which
    reach the plugin registry; tests/test_verify.py checks that the two agree on every digits split)."""
    doc = {"known": list(known), "unknown": list(unknown), "dataset": dataset}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def official_counts(dataset: str) -> dict[str, tuple[int, ...]]:
    """The images per class id of ``dataset``'s official files, from its ``registry.yaml`` entry:
    ``{"test", "train", "unknown_test"}``, each present when the registry gives it (``{}``: none)."""
    import osrbench.registry as registry

    try:
        entry = registry.load().datasets.get(dataset)
    except UserError:
        return {}
    if entry is None:
        return {}
    found = {key.removesuffix("_images_per_class"): registry.images_per_class(entry, key)
             for key in registry.IMAGE_COUNT_KEYS}
    return {k: v for k, v in found.items() if v is not None}


def registry_split(rec: Record) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(known, unknown)`` class ids of ``rec``'s split in a split table of ``registry.yaml``; ``None``
    for a protocol whose splits come from files or are named (ssb), or a dataset it does not list."""
    import osrbench.registry as registry

    try:
        reg = registry.load()
        entry = reg.datasets.get(rec.dataset)
        tables = reg.splits.get(rec.protocol)
        if entry is None or tables is None or entry["table"] not in tables:
            return None
        known = tuple(tables[entry["table"]][rec.split])
        if entry.get("unknown_table"):
            unknown = tuple(tables[entry["unknown_table"]][rec.split])
        else:
            unknown = tuple(c for c in range(entry["num_classes"]) if c not in known)
        return known, unknown
    except (UserError, KeyError, IndexError, ValueError, TypeError, OSError):
        return None


def split_problem(rec: Record, scores: Scores) -> str | None:
    """Why ``scores`` are not what ``rec``'s split fixes (``None``: they are, or nothing is fixed here).

    For a record of a split the registry defines (its ``split_hash`` is the registry's): its classes
    must be the split's, the known labels 0..K-1, the unknown ids the split's unknown classes, and,
    for a dataset whose test set the registry counts, its test images those of the official files
    (:func:`count_problem`). A record of another split definition (files of the user's, an older registry,
    a hand-made record) is checked against its scores only.
    """
    import numpy as np

    reg = registry_split(rec)
    if reg is None or split_hash(rec.dataset, *reg) != rec.split_hash:
        return None
    known, unknown = reg
    if rec.known_classes and (tuple(rec.known_classes), tuple(rec.unknown_classes)) != (known, unknown):
        return f"its classes are not those of {rec.dataset}/{rec.protocol} split {rec.split} in the registry"
    labels, ids = np.asarray(scores.known_labels), np.asarray(scores.unknown_ids)
    if labels.size and (labels.min() < 0 or labels.max() >= len(known)):
        return f"its known test labels are not 0..{len(known) - 1} (the split has {len(known)} known classes)"
    if ids.size and not np.isin(ids, unknown).all():
        return "its unknown test images include classes that are not the split's unknown classes"
    return count_problem(rec, known, unknown, labels, ids)


def count_problem(rec: Record, known: tuple[int, ...], unknown: tuple[int, ...], labels: Any, ids: Any) -> str | None:
    """Why the test images of ``rec``'s scores (known ``labels`` 0..K-1, unknown original ``ids``) are
    not those of the official files (``None``: they are, or the registry gives no counts).

    No class may hold more test images than the official files have. All of them must be there when
    the record states the official training set (its ``counts["train"]`` is the known classes'
    official training images) or the dataset has no training count.
    Stand-in files (tests, a user's own small copy) state another training count, so a forger who
    also edits the training count is not caught here: such a record states a training set other
    than the official one, and only ``osrbench verify`` on the official files names it.
    """
    import numpy as np

    official = official_counts(rec.dataset)
    test = official.get("test")
    unknown_test = official.get("unknown_test", test)
    if test is None or not all(0 <= c < len(test) for c in known) or not all(0 <= c < len(unknown_test) for c in unknown):
        return None
    want_k = [test[c] for c in known]
    got_k = np.bincount(labels.astype(np.int64), minlength=len(known)).tolist() if labels.size else [0] * len(known)
    want_u = {c: unknown_test[c] for c in unknown}
    got_u = dict(zip(*(a.tolist() for a in np.unique(ids.astype(np.int64), return_counts=True)))) if ids.size else {}
    more = [c for c, n in zip(known, got_k) if n > test[c]] + [c for c, n in got_u.items() if n > want_u[c]]
    train = official.get("train")
    claims_official = train is None or rec.counts.get("train") == sum(train[c] for c in known)
    if more or (claims_official and (got_k != want_k or got_u != want_u)):
        why = f"class {more[0]} has fewer in the official files: test images were added" if more else \
            "test images were removed or added"
        return (f"its scores hold {labels.size} known and {ids.size} unknown test images, but {rec.dataset} split "
                f"{rec.split} has {sum(want_k)} and {sum(want_u.values())} ({why})")
    return None


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file's bytes (``None``: there is no such file)."""
    from osrbench.results import file_sha256 as sha256

    try:
        return sha256(path)
    except OSError:
        return None


def _stamped_hashes(folder: Path) -> dict[str, str | None]:
    return {key: file_sha256(folder / name) for key, name in STAMPED_FILES.items()}


def write_stamp(folder: Path, device: str, version: str) -> None:
    """Stamp the run in ``folder`` as verified from its checkpoint on ``device`` by osrbench ``version``
    (written atomically, with a content hash, as every osrbench JSON file)."""
    from osrbench import results

    doc = {"osrbench_verified": 1, **_stamped_hashes(Path(folder)), "osrbench": version,
           "device": device, "verified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results.write_json(Path(folder) / STAMP, doc)


def remove_stamp(folder: Path) -> None:
    """Drop ``folder``'s stamp (the run just failed ``verify``); nothing when there is none."""
    try:
        (Path(folder) / STAMP).unlink()
    except FileNotFoundError:
        pass


def stamped(rec: Record) -> bool:
    """Whether ``rec``'s run folder holds a stamp of ``verify`` that still holds: the record, scores
    and checkpoint files are the ones it verified (their sha256 recomputed now)."""
    from osrbench import results

    if rec.dir is None or not (Path(rec.dir) / STAMP).exists():
        return False
    try:
        doc = results.read_json(Path(rec.dir) / STAMP)
    except UserError:
        return False  # damaged or edited: not a stamp
    now = _stamped_hashes(Path(rec.dir))
    return all(now[key] is not None and doc.get(key) == now[key] for key in STAMPED_FILES)


def stamp_count(recs: Iterable[Record]) -> str:
    """``k of n runs``: how many of ``recs`` hold a stamp of ``verify`` that still holds."""
    recs = list(recs)
    return f"{sum(stamped(r) for r in recs)} of {len(recs)} runs"


def marked(recs: Iterable[Record]) -> list[Record]:
    """The unverified ones of ``recs`` (included by ``--allow-unverified``)."""
    return [r for r in recs if getattr(r, "unverified", False)]


def unverified_note(recs: Iterable[Record]) -> str | None:
    """The line every output that includes unverified records carries (``None``: there are none)."""
    bad = marked(recs)
    if not bad:
        return None
    runs = ", ".join(f"{r.method} split {r.split} seed {r.seed}" for r in bad[:6]) + (" ..." if len(bad) > 6 else "")
    return (f"UNVERIFIED: {len(bad)} record(s) without a scores hash included by --allow-unverified "
            f"(their metrics were not checked): {runs}")


def add_option(p: Any) -> None:
    """``--allow-unverified`` on a command that reads records (argparse parser ``p``)."""
    p.add_argument("--allow-unverified", action="store_true",
                   help="include records without a scores hash (schema 1 or edited), marked UNVERIFIED "
                        "in every output (default: refused, one line each)")
