"""What a record proves, checked in one place: every reader of a metric calls
:func:`osrbench.records.verify_metrics`, which makes the checks written here.

A record's content hash (``sha256``) and its scores hash (``scores_sha256``) prove that the two
files are intact and belong together, and :func:`metrics_problem` recomputes every metric from the
stored scores. None of that is a signature: anyone who edits the scores can recompute the metrics
and both hashes. What the split fixes (its known and unknown classes, and, for a dataset whose
test set is fixed here, the number of test images of each class) is checked against the scores
too, so a forgery that drops test images is refused. Only ``osrbench verify`` proves that the
numbers came from the run's network: it rebuilds the predictions from the checkpoint.

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
from typing import Any, Iterable, Mapping

from osrbench.errors import UserError

# A record and its scores are osrbench.records' Record and Scores: records calls these checks
# (records.verify_metrics), so this module names them without importing them (no cycle).
Record = Scores = Any

#: Set by ``--allow-unverified`` (an environment variable: a sweep's worker processes inherit it).
ALLOW_ENV = "OSRBENCH_ALLOW_UNVERIFIED"

#: Test images per original class id, for the datasets whose test set osrbench fixes itself.
#: digits: every third image of each class (osrbench.data.digits), sklearn's class sizes // 3.
TEST_IMAGES_PER_CLASS: Mapping[str, tuple[int, ...]] = {
    "digits": (59, 60, 59, 61, 60, 60, 60, 59, 58, 60),
}

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


def registry_split(rec: Record) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(known, unknown)`` class ids of ``rec``'s split in a split table of ``registry.yaml``; ``None``
    for a protocol whose splits come from files or are named (ssb), or a dataset it does not list."""
    from osrbench import registry

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
    for a dataset with a fixed test set (:data:`TEST_IMAGES_PER_CLASS`), every class must have all
    its test images. A record of another split definition (files of the user's, an older registry,
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
    table = TEST_IMAGES_PER_CLASS.get(rec.dataset)
    if table is None or not all(0 <= c < len(table) for c in (*known, *unknown)):
        return None
    want_k = [table[c] for c in known]
    got_k = np.bincount(labels.astype(np.int64), minlength=len(known)).tolist() if labels.size else [0] * len(known)
    want_u = sum(table[c] for c in unknown)
    if got_k != want_k or ids.size != want_u:
        return (f"its scores hold {labels.size} known and {ids.size} unknown test images, but {rec.dataset} split "
                f"{rec.split} has {sum(want_k)} and {want_u} (test images were removed or added)")
    return None


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
