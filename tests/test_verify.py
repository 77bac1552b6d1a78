"""A record is verified or it is not counted (issue 36, part 1).

Each forgery the issue found is made on a copy of one trained 1-epoch digits run and given to every
reader: ``report``, ``compare --no-run``, ``export``, ``run`` (its "already finished" check),
``rescore`` and ``verify``. A record without a scores hash (deleted, null, schema 1) is refused in one
line, or shown marked UNVERIFIED with ``--allow-unverified``; a record whose scores hold fewer test
images than its split fixes is refused; a consistent forgery (scores, metrics and both hashes redone)
passes every check a file can make, and ``osrbench verify`` names it from the checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from osrbench import cli, records, results, verify

FORGED = 0.999  # the AUROC a forger writes; shown as "99.90"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "runs"
    assert cli.main(["run", "--method", "softmax", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                     "--quiet", "--out", str(out)]) == 0
    return out


def _copy(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs)
    return runs, next(runs.rglob(records.RESULT)).parent


def _rewrite(run: Path, change) -> None:
    """``change(doc)`` on the record, then its content hash recomputed with osrbench's own function."""
    doc = results.read_json(run / records.RESULT)
    change(doc)
    results.write_json(run / records.RESULT, doc)


def _deleted(doc):
    doc["metrics"]["auroc"] = FORGED
    del doc["scores_sha256"]


def _nulled(doc):
    doc["metrics"]["auroc"] = FORGED
    doc["scores_sha256"] = None


def _schema1(doc):
    doc["metrics"]["auroc"] = FORGED
    doc["schema"] = 1
    del doc["scores_sha256"]


UNHASHED = {"deleted": _deleted, "nulled": _nulled, "schema1": _schema1}


def _forge_scores(run: Path, keep=None) -> None:
    """A consistent forgery: every known score raised above every unknown one (AUROC 1), or only the
    test images ``keep`` selects kept, then the metrics and both hashes recomputed."""
    rec = records.read_record(run)
    arrays = dict(np.load(run / records.SCORES, allow_pickle=False))
    arrays.pop("identity"), arrays.pop("sha256")
    for k in list(arrays):
        if k == "main":
            continue
        if keep is not None:
            arrays[k] = arrays[k][keep(len(arrays[k]))]
        elif k.startswith("known_score"):
            arrays[k] = arrays[k] + 1e3
    scores = records.Scores.from_arrays(arrays)
    digest = records.write_scores(run, scores, rec.identity)

    def change(doc):
        doc["metrics"] = {k: results.json_number(v) for k, v in scores.metrics("score", rec.f1_rule).items()
                          if k in doc["metrics"]}
        doc["scores_sha256"] = digest
        doc["counts"] = {**doc["counts"], "known": len(scores.known["score"]), "unknown": len(scores.unknown["score"])}
    _rewrite(run, change)


def _argv(runs: Path, command: str) -> list[str]:
    common = ["softmax", "--dataset", "digits", "--splits", "0", "--epochs", "1", "--out", str(runs)]
    return {"report": ["report", "--runs", str(runs), "--format", "md"],
            "compare": ["compare", *common, "--no-run", "--metrics", "auroc", "--quiet"],
            "export": ["export", *common, "--output", str(runs.parent / "bundle.json")],
            "rescore": ["rescore", "--runs", str(runs), "--score", "msp"]}[command]


@pytest.mark.parametrize("shape", sorted(UNHASHED))
def test_a_record_without_a_scores_hash_is_refused_by_every_reader_in_one_line(trained, tmp_path, capsys, shape):
    runs, run = _copy(trained, tmp_path)
    _rewrite(run, UNHASHED[shape])
    with pytest.raises(verify.Unverified, match=r"unverified, .*--allow-unverified includes it"):
        records.read_record(run)
    for command in ("report", "compare", "export", "rescore"):
        capsys.readouterr()
        assert cli.main(_argv(runs, command)) != 0, command
        out, err = capsys.readouterr()
        assert "99.90" not in out and "unverified" in err, (command, err)
        assert sum("unverified" in line for line in err.splitlines()) == 1, (command, err)


def test_allow_unverified_includes_the_record_marked_in_every_output(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    _rewrite(run, _deleted)
    capsys.readouterr()
    assert cli.main([*_argv(runs, "compare"), "--allow-unverified"]) == 0
    out = capsys.readouterr().out
    assert "99.90" in out and "UNVERIFIED: 1 record(s)" in out and "softmax split 0 seed 0" in out
    assert cli.main([*_argv(runs, "report"), "--allow-unverified"]) == 0
    out = capsys.readouterr().out
    assert "99.90" in out and out.startswith("**UNVERIFIED: 1 record(s)")
    assert cli.main([*_argv(runs, "export"), "--allow-unverified"]) == 0
    bundle = json.loads((runs.parent / "bundle.json").read_text())
    assert bundle["methods"]["softmax"]["runs"][0]["unverified"] is True
    # the flag lasts one command: the next one refuses the record again
    assert cli.main(_argv(runs, "report")) == 2


def test_run_evaluates_an_unverified_record_again_instead_of_calling_it_finished(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    true_auroc = records.read_record(run).metrics["auroc"]
    _rewrite(run, _nulled)
    capsys.readouterr()
    assert cli.main(["run", "--method", "softmax", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                     "--quiet", "--out", str(runs)]) == 0
    out, err = capsys.readouterr()
    assert "unverified" in err and "99.90" not in out
    again = records.read_record(run)
    assert again.scores_sha256 and again.metrics["auroc"] == pytest.approx(true_auroc, abs=1e-12)


def test_half_the_test_images_is_refused_although_every_hash_and_metric_agrees(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    _forge_scores(run, keep=lambda n: np.arange(n) % 2 == 0)
    with pytest.raises(records.CorruptRecord, match=r"scores hold 179 known and 119 unknown test images, but digits "
                                                   r"split 0 has 358 and 238 \(test images were removed"):
        records.read_record(run)
    for command in ("report", "compare", "export"):
        capsys.readouterr()
        assert cli.main(_argv(runs, command)) != 0, command
        assert "test images were removed or added" in capsys.readouterr().err, command
    assert cli.main(["verify", str(runs)]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().out


def test_verify_names_a_consistent_forgery_and_rescore_from_the_checkpoint_fails(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    assert cli.main(["verify", str(runs)]) == 0
    assert "1 of 1 run(s) verified" in capsys.readouterr().out
    _forge_scores(run)
    assert records.read_record(run).metrics["auroc"] == 1.0  # every check a file allows passes
    assert cli.main(["verify", str(runs)]) == 1
    out = capsys.readouterr().out
    assert f"NOT VERIFIED {run}: the checkpoint does not reproduce the stored scores: {verify.MISMATCH}" in out
    assert "0 of 1 run(s) verified" in out
    assert cli.main(["rescore", "--runs", str(runs), "--score", "msp", "--from-checkpoint"]) == 2
    err = capsys.readouterr().err
    assert verify.MISMATCH in err and "state_dict() leaves out" in err  # the edit named first, a new method's bug second


def test_rescore_from_the_checkpoint_exits_1_when_a_stored_metric_is_not_the_checkpoint_s(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    _rewrite(run, _deleted)
    capsys.readouterr()
    assert cli.main(["rescore", "--runs", str(runs), "--score", "msp", "--from-checkpoint"]) == 1
    out, err = capsys.readouterr()
    assert "99.90 ->" in out  # the table shows both numbers ...
    assert f"error: {run}: the record is not what its checkpoint gives (metric 'auroc' is {FORGED}" in err
    assert verify.MISMATCH in err  # ... and the exit code and one line say which is wrong
    assert cli.main(["verify", str(runs)]) == 1
    assert f"metric 'auroc' is {FORGED}" in capsys.readouterr().out


def test_a_record_whose_classes_are_not_its_split_s_is_refused(trained, tmp_path):
    _, run = _copy(trained, tmp_path)
    rec = records.read_record(run)
    swapped = list(rec.unknown_classes[:1]) + list(rec.known_classes[1:])

    def change(doc):
        doc["known_classes"] = swapped
    _rewrite(run, change)
    with pytest.raises(records.CorruptRecord, match="its classes are not those of digits/auroc split 0"):
        records.read_record(run)


def test_the_split_the_record_checks_use_is_the_protocols_split():
    """verify.registry_split and verify.split_hash restate protocols' split tables and split hash for
    the records layer (which cannot import protocols): they must agree on every table split."""
    from osrbench import plugins, protocols

    reg = plugins.get()
    for dataset, protocol in (("digits", "auroc"), ("digits", "f1"), ("mnist", "osrci"), ("cifar10", "auroc")):
        spec = reg.dataset(dataset)
        for k in range(protocols.num_splits(spec, protocol)):
            split = protocols.get_split(spec, protocol, k)
            rec = records.Record(method="m", dataset=dataset, protocol=protocol, split=k, seed=0, config={"epochs": 1},
                                 config_hash="h", split_hash=split.hash, metrics={})
            assert verify.registry_split(rec) == (split.known, split.unknown)
            assert verify.split_hash(dataset, split.known, split.unknown) == split.hash


def test_the_leaderboard_marks_an_entry_exported_with_unverified_runs(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    _rewrite(run, _deleted)
    assert cli.main([*_argv(runs, "export"), "--allow-unverified"]) == 0
    site = tmp_path / "site"
    assert cli.main(["leaderboard", str(runs.parent / "bundle.json"), "--out", str(site)]) == 0
    page = next(p for p in site.iterdir() if p.name.startswith("digits-auroc-")).read_text()
    assert "softmax (UNVERIFIED: 1 of 1 runs)" in page


def test_run_with_allow_unverified_keeps_the_record_and_marks_it(trained, tmp_path, capsys):
    runs, run = _copy(trained, tmp_path)
    _rewrite(run, _nulled)
    capsys.readouterr()
    assert cli.main(["run", "--method", "softmax", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                     "--quiet", "--out", str(runs), "--allow-unverified"]) == 0
    out = capsys.readouterr().out
    assert "99.90" in out and "UNVERIFIED: this record states no scores hash" in out
