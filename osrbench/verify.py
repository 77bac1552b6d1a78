"""What a record proves, checked in one place: every reader of a metric calls :func:`check_record`.

A record's content hash (``sha256``) and its scores hash (``scores_sha256``) prove that the two
files are intact and belong together, and :func:`check_record` recomputes every metric from the
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

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from osrbench.errors import UserError

if TYPE_CHECKING:
    from osrbench.records import Record, Scores

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


def _corrupt() -> type:
    from osrbench.records import CorruptRecord

    return CorruptRecord


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


def check_record(rec: Record, scores: Scores | None = None, allow_unverified: bool | None = None) -> Record:
    """``rec`` if every metric it states is what its scores give and its scores are what its split
    fixes; ``rec`` marked ``unverified`` if it states no scores hash and those are allowed.

    Raises :class:`Unverified` for an unverified record that is not allowed, and
    :class:`osrbench.records.CorruptRecord` naming the file and the problem otherwise.
    """
    from osrbench import records

    path = Path(rec.dir) / records.RESULT if rec.dir is not None else "record"
    why = unverified_reason(rec)
    if why is not None:
        if allowed() if allow_unverified is None else allow_unverified:
            return rec.replace(unverified=True)
        raise Unverified(f"{path}: unverified, {why}; its metrics cannot be checked, so it is not used "
                         "(--allow-unverified includes it, marked)")
    if rec.dir is None:
        return rec
    if scores is None:
        try:
            scores = records.read_scores(rec.dir, rec)
        except UserError as exc:
            raise _corrupt()(f"{path}: its metrics cannot be verified ({exc}); {AGAIN}") from None
    problem = split_problem(rec, scores) or metrics_problem(rec, scores)
    if problem:
        raise _corrupt()(f"{path}: {problem}; {AGAIN}")
    return rec


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


def registry_split(rec: Record) -> Any:
    """The split the registry defines for ``rec`` (``None`` where it cannot say without data files)."""
    from osrbench import protocols, registry

    try:
        reg = registry.load()
        spec = next((d for d in registry.builtin_datasets(reg) if d.name == rec.dataset), None)
        if spec is None or protocols.reader_of(rec.protocol, reg) is not None:
            return None
        return protocols.get_split(spec, rec.protocol, rec.split, reg)
    except (UserError, KeyError, ValueError, TypeError, OSError):
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
    if reg is None or reg.hash != rec.split_hash:
        return None
    known, unknown = tuple(reg.known), tuple(reg.unknown)
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
