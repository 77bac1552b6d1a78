"""What the official files fix, and which runs ``osrbench verify`` stamped (issue 36, part 1).

A hand-made MNIST record (no training: a record and scores.npz written with records.py's own writers,
so every hash is right) is refused when its scores hold fewer test images than the official files
and its training count is the official one; the same record with a stand-in's training count (the
tests' small copies) is checked against its scores only. ``osrbench verify`` leaves a stamp that a
later edit makes stale; export, the leaderboard and the report page count the stamped runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from osrbench import cli, export, records, registry, results, verify

MNIST_TEST = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
MNIST_TRAIN = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)


def _mnist_run(folder: Path, per_class=MNIST_TEST, train: int | None = None) -> Path:
    """A record of MNIST osrci split 0 with ``per_class[c]`` test images of class ``c`` and random
    scores, written as a run writes one; ``train``: its stated training count (official by default)."""
    rec = records.Record(method="softmax", dataset="mnist", protocol="osrci", split=0, seed=0, config={"epochs": 1},
                         config_hash="0123456789", split_hash="", metrics={}, wall_time_s={"train": 1.0, "eval": 1.0},
                         plugin={"name": "softmax", "distribution": "osrbench", "version": "0"})
    known, unknown = verify.registry_split(rec)
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(per_class[c], i) for i, c in enumerate(known)]).astype(np.int64)
    ids = np.concatenate([np.full(per_class[c], c) for c in unknown]).astype(np.int64)
    logits_k, logits_u = rng.normal(size=(labels.size, len(known))), rng.normal(size=(ids.size, len(known)))
    scores = records.Scores(logits_k, logits_u, labels, ids, {"score": logits_k.max(1)}, {"score": logits_u.max(1)})
    rec = rec.replace(split_hash=verify.split_hash("mnist", known, unknown), known_classes=known, unknown_classes=unknown,
                      counts={"train": sum(MNIST_TRAIN[c] for c in known) if train is None else train,
                              "known": labels.size, "unknown": ids.size},
                      metrics={k: results.json_number(v) for k, v in scores.metrics().items()})
    folder.mkdir(parents=True)
    rec = rec.replace(scores_sha256=records.write_scores(folder, scores, rec.identity))
    records.write_record(folder, rec)
    return folder


def test_the_registry_counts_are_the_official_files():
    counts = verify.official_counts("mnist")
    assert counts["test"] == MNIST_TEST and sum(counts["test"]) == 10_000 and counts["train"] == MNIST_TRAIN
    assert sum(verify.official_counts("svhn")["test"]) == 26_032 and sum(verify.official_counts("svhn")["train"]) == 73_257
    assert verify.official_counts("cifar10")["test"] == (1000,) * 10
    plus = verify.official_counts("cifar+10")
    assert plus["test"] == (1000,) * 10 and plus["unknown_test"] == (100,) * 100  # CIFAR-10 knowns, CIFAR-100 unknowns
    assert verify.official_counts("tiny_imagenet")["test"] == (50,) * 200
    assert verify.official_counts("fashion-mnist")["test"] == (1000,) * 10
    sklearn_digits = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)  # sklearn's class sizes, 1,797 in all
    assert verify.official_counts("digits")["test"] == tuple(n // 3 for n in sklearn_digits)
    assert "test" not in verify.official_counts("imagenet")


def test_an_mnist_record_with_every_official_test_image_reads(tmp_path):
    rec = records.read_record(_mnist_run(tmp_path / "run"))
    assert rec.counts["known"] + rec.counts["unknown"] == 10_000


def test_an_mnist_forgery_with_half_the_test_images_is_refused(tmp_path):
    half = tuple(n // 2 for n in MNIST_TEST)
    with pytest.raises(records.CorruptRecord, match=r"but mnist split 0 has \d+ and \d+ in the official files: test "
                                                   r"images were removed or added"):
        records.read_record(_mnist_run(tmp_path / "run", half))


def test_a_stand_in_s_record_is_checked_against_its_scores_only(tmp_path):
    """The tests' small MNIST copies state their own training count: not refused for it."""
    rec = records.read_record(_mnist_run(tmp_path / "run", (7,) * 10, train=60))
    assert rec.counts["known"] == 42


def test_more_test_images_than_the_official_files_hold_is_refused_even_for_a_stand_in(tmp_path):
    more = (981, *MNIST_TEST[1:])
    with pytest.raises(records.CorruptRecord, match="more than there are of class"):
        records.read_record(_mnist_run(tmp_path / "run", more, train=60))


def test_a_registry_count_list_of_the_wrong_length_is_refused(tmp_path):
    doc = registry._read_yaml(registry.REGISTRY_PATH)
    doc["datasets"]["mnist"]["test_images_per_class"] = [1000] * 9
    with pytest.raises(registry.RegistryError, match=r"datasets.mnist.test_images_per_class: 9 counts for 10 classes"):
        registry.parse(doc, registry.REGISTRY_PATH.parent)
