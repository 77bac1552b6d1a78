"""Records that cannot lie (issue 15, findings 1, 2 and 6): every file of a run carries the run's
identity and a content hash; a foreign or damaged file is reported and never used, and never a
dead end; the CPU thread count is part of the config."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from osrbench import checkpoints, cli, engine, records, rescore, results


def _req(out, split=0, **kw):
    kw.setdefault("epochs", 1)
    return engine.RunRequest("softmax", "digits", split=split, out=out, device="cpu", progress=False, **kw)


def _clean(tmp_path, split=0, **kw):
    """The same run in a folder of its own, outside ``tmp_path``."""
    return engine.run(_req(tmp_path.parent / f"{tmp_path.name}-clean{split}", split, **kw)).record


# ---------------------------------------------------------------------- 1: one hash, one set of numbers


def test_the_thread_count_is_a_config_key_and_the_global_setting_does_not_change_a_run(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = engine.run(_req(tmp_path / "a")).record
        torch.set_num_threads(1)
        b = engine.run(_req(tmp_path / "b")).record
    finally:
        torch.set_num_threads(before)
    assert a.config["threads"] == b.config["threads"] == a.threads == 1
    assert a.config_hash == b.config_hash and a.metrics == b.metrics and a.history == b.history
    c = engine.plan(_req(tmp_path, overrides={"threads": 2}))
    assert c.config_hash != a.config_hash and c.dir != engine.plan(_req(tmp_path)).dir


# ------------------------------------------------------------------------------------ 2: foreign files


def test_a_checkpoint_of_another_split_is_never_resumed(tmp_path, capsys):
    mine = engine.plan(_req(tmp_path, 0, epochs=2))
    engine.run(_req(tmp_path, 1, epochs=2, checkpoint_every=1))
    theirs = engine.plan(_req(tmp_path, 1, epochs=2))
    mine.dir.mkdir(parents=True)
    shutil.copy(theirs.dir / checkpoints.CHECKPOINT, mine.dir / checkpoints.CHECKPOINT)
    argv = ["run", "--method", "softmax", "--dataset", "digits", "--epochs", "2", "--device", "cpu", "--quiet",
            "--out", str(tmp_path), "--split", "0"]
    assert cli.main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "belongs to another run (split 1 (expected 0)" in err
    logs = []
    rec = engine.run(_req(tmp_path, 0, epochs=2, resume="auto"), log=logs.append).record
    assert any("belongs to another run" in line for line in logs)
    assert rec.metrics == _clean(tmp_path, 0, epochs=2).metrics  # trained from scratch, not from split 1


def test_a_record_of_another_split_is_never_returned(tmp_path):
    one = engine.run(_req(tmp_path, 1)).record
    zero = engine.plan(_req(tmp_path, 0))
    zero.dir.mkdir(parents=True)
    shutil.copy(one.dir / records.RESULT, zero.dir / records.RESULT)
    assert zero.existing_result() is None
    rec = engine.run(_req(tmp_path, 0)).record
    assert rec.split == 0 and rec.metrics == _clean(tmp_path, 0).metrics
    # A record copied into another folder is skipped (and said) by everything that scans runs.
    other = zero.dir.parent / "split3-seed0-copied"
    other.mkdir()
    shutil.copy(one.dir / records.RESULT, other / records.RESULT)
    problems = []
    found = list(records.iter_records(tmp_path, problems.append))
    assert sorted((r.split, r.dir.name) for r in found) == sorted([(0, zero.dir.name), (1, one.dir.name)])
    assert len(problems) == 1 and "lies in another run's folder" in problems[0]


def test_a_swapped_or_edited_scores_file_is_refused(tmp_path, capsys):
    zero, one = engine.run(_req(tmp_path, 0)).record, engine.run(_req(tmp_path, 1)).record
    assert rescore.rescore_record(zero, "mls")["metrics"]["auroc"] == pytest.approx(
        rescore.rescore_record(zero, "mls", from_checkpoint=True)["metrics"]["auroc"], abs=0)
    shutil.copy(one.dir / records.SCORES, zero.dir / records.SCORES)
    with pytest.raises(records.ForeignFile, match="not the scores file this run's record was written with"):
        rescore.rescore_record(zero, "mls")
    assert cli.main(["rescore", "--runs", str(tmp_path), "--score", "mls", "--method", "softmax"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # Edited values with the old identity and hash: the content hash says so.
    with np.load(one.dir / records.SCORES) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["known_score_mls"] = arrays["known_score_mls"] + 1.0
    results.write_npz(one.dir / records.SCORES, arrays)
    with pytest.raises(records.CorruptRecord, match="content hash mismatch"):
        records.read_scores(one.dir, one)


def test_rescore_from_a_foreign_checkpoint_is_refused(tmp_path):
    zero, one = engine.run(_req(tmp_path, 0)).record, engine.run(_req(tmp_path, 1)).record
    shutil.copy(one.dir / checkpoints.CHECKPOINT, zero.dir / checkpoints.CHECKPOINT)
    with pytest.raises(records.ForeignFile, match=r"belongs to another run \(split 1 \(expected 0\)"):
        rescore.scores_from_checkpoint(zero, "cpu")


def test_every_file_states_the_run_it_belongs_to(tmp_path):
    rec = engine.run(_req(tmp_path)).record
    identity = engine.plan(_req(tmp_path)).identity
    assert rec.identity == identity and identity.plugin_distribution == "osrbench-softmax"
    assert checkpoints.read(rec.dir / checkpoints.CHECKPOINT)["identity"] == identity.to_json()
    with np.load(rec.dir / records.SCORES) as z:
        assert json.loads(str(z["identity"])) == identity.to_json()
        assert str(z["sha256"]) == rec.scores_sha256
    assert records.read_scores(rec.dir, rec).names == list(rec.scores)


# --------------------------------------------------------------------- 6: damage is never a dead end


def test_a_damaged_record_does_not_block_compare(tmp_path, capsys):
    argv = ["compare", "softmax", "--dataset", "digits", "--splits", "0-1", "--epochs", "1", "--device", "cpu",
            "--quiet", "--out", str(tmp_path), "--metrics", "auroc"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    path = engine.plan(_req(tmp_path, 0)).result_path
    path.write_text(path.read_text()[:50])  # truncated
    assert cli.main(argv) == 0  # warned, resumed from the final checkpoint, evaluated again
    cap = capsys.readouterr()
    assert "unreadable result record" in cap.err and cap.out == first
    assert records.read_record(path).split == 0


def test_a_record_with_a_valid_hash_but_a_missing_field_is_skipped_not_a_traceback(tmp_path, capsys):
    rec = engine.run(_req(tmp_path)).record
    doc = results.read_json(rec.dir / records.RESULT)
    del doc["counts"]
    results.write_json(rec.dir / records.RESULT, doc)  # a fresh, valid content hash
    with pytest.raises(records.CorruptRecord, match="field 'counts' missing"):
        records.read_record(rec.dir)
    for argv in (["report", "--runs", str(tmp_path)], ["rescore", "--runs", str(tmp_path), "--score", "msp"]):
        assert cli.main(argv) == 2  # nothing else to show: one line, no traceback
        err = capsys.readouterr().err
        assert "Traceback" not in err and "field 'counts' missing" in err
    again = engine.run(_req(tmp_path)).record  # evaluated again from its final checkpoint
    assert again.counts["train"] == 722
