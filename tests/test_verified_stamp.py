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
    assert verify.official_counts("digits")["train"] == tuple(n - n // 3 for n in sklearn_digits)
    assert "test" not in verify.official_counts("imagenet")


def test_an_mnist_record_with_every_official_test_image_reads(tmp_path):
    rec = records.read_record(_mnist_run(tmp_path / "run"))
    assert rec.counts["known"] + rec.counts["unknown"] == 10_000


def test_an_mnist_forgery_with_half_the_test_images_is_refused(tmp_path):
    half = tuple(n // 2 for n in MNIST_TEST)
    with pytest.raises(records.CorruptRecord, match=r"but mnist split 0 has 5899 and 4101 \(test images "
                                                   r"were removed or added\)"):
        records.read_record(_mnist_run(tmp_path / "run", half))


def test_a_stand_in_s_record_is_checked_against_its_scores_only(tmp_path):
    """The tests' small MNIST copies state their own training count: not refused for it."""
    rec = records.read_record(_mnist_run(tmp_path / "run", (7,) * 10, train=60))
    assert rec.counts["known"] == 42


def test_more_test_images_than_the_official_files_hold_is_refused_even_for_a_stand_in(tmp_path):
    more = (981, *MNIST_TEST[1:])
    with pytest.raises(records.CorruptRecord, match=r"\(class 0 has fewer in the official files: test images were added\)"):
        records.read_record(_mnist_run(tmp_path / "run", more, train=60))


def test_a_registry_count_list_of_the_wrong_length_is_refused(tmp_path):
    doc = registry._read_yaml(registry.REGISTRY_PATH)
    doc["datasets"]["mnist"]["test_images_per_class"] = [1000] * 9
    with pytest.raises(registry.RegistryError, match=r"datasets.mnist.test_images_per_class: 9 counts for 10 classes"):
        registry.parse(doc, registry.REGISTRY_PATH.parent)


# ------------------------------------------------------------------------- verify's stamp


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stamp") / "runs"
    assert cli.main(["run", "--method", "softmax", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                     "--quiet", "--out", str(out)]) == 0
    return out


def _copy(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs)
    return runs, next(runs.rglob(records.RESULT)).parent


def _forge(run: Path) -> None:
    """A consistent forgery: every known score raised above every unknown one, metrics and both
    hashes recomputed (tests/test_verify.py makes the same one)."""
    rec = records.read_record(run)
    arrays = dict(np.load(run / records.SCORES, allow_pickle=False))
    arrays.pop("identity"), arrays.pop("sha256")
    for k in [k for k in arrays if k.startswith("known_score")]:
        arrays[k] = arrays[k] + 1e3
    scores = records.Scores.from_arrays(arrays)
    digest = records.write_scores(run, scores, rec.identity)
    doc = results.read_json(run / records.RESULT)
    doc["metrics"] = {k: results.json_number(v) for k, v in scores.metrics("score", rec.f1_rule).items()
                      if k in doc["metrics"]}
    doc["scores_sha256"] = digest
    results.write_json(run / records.RESULT, doc)


def _export(runs: Path) -> dict:
    bundle = runs.parent / "bundle.json"
    assert cli.main(["export", "softmax", "--dataset", "digits", "--splits", "0", "--epochs", "1", "--out", str(runs),
                     "--output", str(bundle)]) == 0
    return json.loads(bundle.read_text())


def _stamps(doc: dict) -> list:
    return [r["verified_from_checkpoint"] for r in doc["methods"]["softmax"]["runs"]]


def test_verify_stamps_the_run_and_an_edit_of_its_scores_makes_the_stamp_stale(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    assert not (run / verify.STAMP).exists() and _stamps(_export(runs)) == [False]
    assert cli.main(["verify", str(runs)]) == 0
    stamp = results.read_json(run / verify.STAMP)
    for key, name in verify.STAMPED_FILES.items():
        assert stamp[key] == verify.file_sha256(run / name) and len(stamp[key]) == 64
    assert stamp["device"].startswith("cpu") and stamp["osrbench"] and stamp["verified"].endswith("Z")
    assert verify.stamped(records.read_record(run)) and _stamps(_export(runs)) == [True]

    _forge(run)  # every hash of the record and scores still agrees; the stamp's do not
    rec = records.read_record(run)
    assert rec.metrics["auroc"] == 1.0 and not verify.stamped(rec) and _stamps(_export(runs)) == [False]
    capsys.readouterr()
    assert cli.main(["verify", str(runs)]) == 1  # and verify, run again, takes the stale stamp away
    assert "NOT VERIFIED" in capsys.readouterr().out and not (run / verify.STAMP).exists()


def test_a_stamp_edited_by_hand_or_of_another_checkpoint_does_not_hold(trained, tmp_path):
    runs, run = _copy(trained, tmp_path)
    assert cli.main(["verify", str(runs)]) == 0
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes() + b"\0")
    assert not verify.stamped(records.read_record(run))
    runs2, run2 = _copy(trained, tmp_path / "b")
    assert cli.main(["verify", str(runs2)]) == 0
    doc = json.loads((run2 / verify.STAMP).read_text())
    doc["scores_sha256"] = "0" * 64  # an edit without the content hash redone is not a stamp
    (run2 / verify.STAMP).write_text(json.dumps(doc))
    assert not verify.stamped(records.read_record(run2))


def test_the_leaderboard_and_the_report_page_count_the_runs_verified_from_their_checkpoints(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    _export(runs)
    site = tmp_path / "site"
    assert cli.main(["leaderboard", str(runs.parent / "bundle.json"), "--out", str(site)]) == 0
    page = next(p for p in site.iterdir() if p.name.startswith("digits-auroc-")).read_text()
    assert "<td>0 of 1 runs</td>" in page and "verified from its checkpoint" in page
    assert cli.main(["verify", str(runs)]) == 0
    _export(runs)
    shutil.rmtree(site)
    assert cli.main(["leaderboard", str(runs.parent / "bundle.json"), "--out", str(site)]) == 0
    page = next(p for p in site.iterdir() if p.name.startswith("digits-auroc-")).read_text()
    assert "<td>1 of 1 runs</td>" in page
    html = tmp_path / "report.html"
    assert cli.main(["report", "--runs", str(runs), "--format", "html", "--output", str(html)]) == 0
    assert "verified from its checkpoint: 1 of 1 runs" in html.read_text()


@pytest.mark.parametrize("claim, why", [("yes", "must be true or false, not 'yes'"),
                                        (True, "verified_from_checkpoint without the record's sha256")])
def test_export_validate_checks_the_shape_of_a_run_s_stamp_claim(trained, tmp_path, capsys, claim, why):
    runs, _ = _copy(trained, tmp_path)
    doc = _export(runs)
    run = doc["methods"]["softmax"]["runs"][0]
    run["verified_from_checkpoint"] = claim
    if claim is True:
        del run["record_sha256"]
    doc.pop("sha256")
    bundle = tmp_path / "edited.json"
    export.write_export(bundle, doc)  # the content hash redone: only the claim's shape is wrong
    capsys.readouterr()
    assert cli.main(["export", "--validate", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert why in err and "split 0 seed 0" in err and len(err.strip().splitlines()) == 1


def test_cifar_plus_counts_its_knowns_in_cifar10_and_its_unknowns_in_cifar100_test():
    """CIFAR+10: 1,000 test images of each CIFAR-10 known class, 100 of each CIFAR-100 unknown class
    (by fine label, as osrbench.data.cifar numbers them)."""
    rec = records.Record(method="m", dataset="cifar+10", protocol="osrci", split=0, seed=0, config={"epochs": 1},
                         config_hash="h", split_hash="", metrics={}, counts={"train": 4 * 5000})
    known, unknown = verify.registry_split(rec)
    assert len(known) == 4 and len(unknown) == 10 and max(unknown) >= 10  # CIFAR-100 ids beyond CIFAR-10's
    labels = np.repeat(np.arange(4), 1000)
    ids = np.repeat(np.asarray(unknown), 100)
    assert verify.count_problem(rec, known, unknown, labels, ids) is None
    assert "has 4000 and 1000 (test images were removed" in verify.count_problem(rec, known, unknown, labels, ids[1:])
    stand_in = rec.replace(counts={"train": 40})
    assert verify.count_problem(stand_in, known, unknown, labels[::100], ids[::10]) is None
