"""Faults and hostile input: kill -9 then resume, damaged files, safe loading, concurrent writers."""

import hashlib
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from osrbench import checkpoints, engine, records, results

RUN = [sys.executable, "-m", "osrbench.cli", "run", "--method", "softmax", "--dataset", "digits", "--device", "cpu",
       "--epochs", "4", "--checkpoint-every", "1", "--quiet", "--deterministic"]


def _scores(out):
    path = next(out.rglob(records.SCORES))
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_is_exact(tmp_path, capsys):
    ref = tmp_path / "ref"
    subprocess.run([*RUN, "--out", str(ref)], check=True, capture_output=True)
    want = _scores(ref)
    rng = random.Random(0)
    tried = exact = 0
    for attempt in range(3):
        out = tmp_path / f"kill{attempt}"
        proc = subprocess.Popen([*RUN, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120  # wait for a checkpoint to exist, then kill at a random later moment
        while time.time() < deadline and proc.poll() is None and not list(out.rglob(checkpoints.CHECKPOINT)):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        tried += 1
        resume = subprocess.run([*RUN, "--out", str(out), "--resume"], capture_output=True, text=True)
        assert resume.returncode == 0, resume.stderr
        got = _scores(out)
        exact += all(np.array_equal(got[k], want[k]) for k in want)
    with capsys.disabled():  # shown in every run's output, not only on failure
        print(f"\n[fault test] kill -9 points tried: {tried}, runs resumed exactly: {exact}")
    assert exact == tried == 3


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path):
    req = engine.RunRequest("softmax", "digits", epochs=3, out=tmp_path, device="cpu", progress=False, checkpoint_every=1)
    straight = engine.run(req).record
    folder = Path(straight.dir)
    assert checkpoints.read(folder / checkpoints.PREVIOUS)["epoch"] == 2
    blob = bytearray((folder / checkpoints.CHECKPOINT).read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte
    (folder / checkpoints.CHECKPOINT).write_bytes(bytes(blob))
    ckpt, problems = checkpoints.load_latest(folder)
    assert ckpt["epoch"] == 2
    assert len(problems) == 1 and "content hash mismatch" in problems[0] and "checkpoint.pt" in problems[0]
    # Resuming from the older checkpoint retrains the last epoch to the same result.
    (folder / records.RESULT).unlink()
    warnings = []
    resumed = engine.run(engine.RunRequest(**{**req.__dict__, "resume": "yes"}), log=warnings.append).record
    assert resumed.metrics == straight.metrics
    assert len(warnings) == 2 and "content hash mismatch" in warnings[0] and "epoch 2" in warnings[0]
    assert warnings[1].startswith("resuming softmax")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    blob = pickle.dumps({"epoch": 1, "state": _Exploit()})  # valid hash trailer, hostile payload
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(blob + checkpoints._TRAILER + hashlib.sha256(blob).hexdigest().encode())
    with pytest.raises(checkpoints.CorruptCheckpoint, match="refused by safe loading"):
        checkpoints.read(path)
    assert not marker.exists()


def test_result_records_detect_damage(tmp_path):
    path = tmp_path / "result.json"
    results.write_json(path, {"metrics": {"auroc": 0.9}})
    assert results.read_json(path)["metrics"]["auroc"] == 0.9
    path.write_text(path.read_text().replace("0.9", "0.99"))
    with pytest.raises(results.CorruptJSON, match="content hash mismatch"):
        results.read_json(path)
    path.write_text(path.read_text()[:20])
    with pytest.raises(results.CorruptJSON, match="unreadable"):
        results.read_json(path)
    errors = []
    assert list(records.iter_records(tmp_path, errors.append)) == [] and len(errors) == 1


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "result.json"
    results.write_json(path, {"v": 1})

    def failing(fh):
        fh.write(b"{half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(path, failing)
    assert results.read_json(path)["v"] == 1
    assert os.listdir(tmp_path) == ["result.json"]  # no temporary file left behind


def test_concurrent_runs_share_a_results_folder(tmp_path):
    procs = [subprocess.Popen([*RUN[:-4], "--epochs", "1", "--quiet", "--split", str(i), "--out", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in (0, 1)]
    for p in procs:
        assert p.wait() == 0, p.stderr.read()
    recs = list(records.iter_records(tmp_path))
    assert sorted(r.split for r in recs) == [0, 1]
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_compare_goes_on_after_a_failing_run_and_exits_non_zero(tmp_path, capsys):
    from osrbench import cli, plugins
    from osrbench.method import MethodSpec

    reg = plugins.get()
    base = reg.method("softmax")

    def factory():
        method = base.factory()

        def broken(*args):
            raise RuntimeError("plugin bug")

        method.train_step = broken
        return method

    reg.methods["fragile"] = MethodSpec(name="fragile", factory=factory, defaults=base.defaults)
    reg.origin["method:fragile"] = "osrbench"
    code = cli.main(["compare", "fragile", "softmax", "--dataset", "digits", "--splits", "0-1", "--epochs", "1",
                     "--device", "cpu", "--quiet", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 run(s) failed or missing" in captured.err and "plugin bug" in captured.err
    assert "softmax" in captured.out  # the good method's results are still printed
    assert len(list(records.iter_records(tmp_path))) == 2
    assert len(list(tmp_path.rglob(records.ERROR))) == 2
