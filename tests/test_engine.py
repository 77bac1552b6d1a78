"""The engine: identical batches across methods, exact resume, records, failure handling."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from osrbench import checkpoints, engine, plugins, records, results
from osrbench.errors import MethodFailed, NonFiniteLoss
from osrbench.method import MethodSpec
from osrbench.testing.standins import recording_method


def _req(tmp_path, method="softmax", **kw):
    kw.setdefault("epochs", 2)
    return engine.RunRequest(method=method, dataset="digits", out=tmp_path, device="cpu", progress=False,
                             checkpoint_every=1, **kw)


def test_different_methods_receive_bit_identical_batches(tmp_path):
    reg = plugins.get()
    available = [m for m in ("dias", "arpl-cs", "arpl") if m in reg.methods]
    if not available:
        pytest.skip("only the softmax plugin is installed")
    logs = {"softmax": [], available[0]: []}
    for name, log in logs.items():
        recording_method(reg, f"rec-{name}", name, log)
        engine.run(_req(tmp_path, f"rec-{name}", epochs=2, overrides={"augment": "crop_flip"}), registry=reg)
    first_phase = reg.method(available[0]).factory().phases[0]
    soft = [digest for _, digest in logs["softmax"]]
    other = [digest for phase, digest in logs[available[0]] if phase == first_phase]
    assert len(soft) == len(other) > 10
    assert soft == other


def _weights(run_dir):
    ckpt = checkpoints.read(run_dir / checkpoints.CHECKPOINT)
    return ckpt["state"]["net"]


def test_two_epochs_plus_resume_equals_four_epochs(tmp_path):
    straight = engine.run(_req(tmp_path / "a", epochs=4)).record
    engine.run(_req(tmp_path / "b", epochs=2))
    outcome = engine.run(_req(tmp_path / "b", epochs=4, resume="yes"))
    assert outcome.trained and outcome.resumed_from == 2 and outcome.epochs_trained == 2
    resumed = outcome.record
    wa = _weights(Path(straight.dir))
    wb = _weights(Path(resumed.dir))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert straight.metrics == resumed.metrics
    assert straight.history == resumed.history
    sa = np.load(Path(straight.dir) / records.SCORES)
    sb = np.load(Path(resumed.dir) / records.SCORES)
    assert np.array_equal(sa["known_score"], sb["known_score"])
    assert np.array_equal(sa["unknown_logits"], sb["unknown_logits"])


def test_record_holds_what_a_reader_needs(tmp_path):
    rec = engine.run(_req(tmp_path, epochs=1)).record
    on_disk = results.read_json(Path(rec.dir) / records.RESULT)
    for key in ("method", "dataset", "protocol", "split", "seed", "metrics", "history", "config", "config_hash",
                "split_hash", "versions", "device", "wall_time_s", "known_classes", "counts", "peak_memory_mb",
                "plugin", "threads", "schema"):
        assert key in on_disk, key
    assert "_path" not in on_disk and "dir" not in on_disk  # the folder is where it lies, not what it says
    assert on_disk["plugin"] == {"name": "softmax", "distribution": "osrbench-softmax",
                                 "version": on_disk["versions"]["plugin"]["version"]}
    assert on_disk["schema"] == records.SCHEMA and on_disk["threads"] == on_disk["config"]["threads"] == 1
    assert records.read_record(rec.dir) == rec
    assert on_disk["counts"] == {"train": 722, "known": 358, "unknown": 238}
    assert set(on_disk["metrics"]) >= {"acc", "auroc", "oscr", "macro_f1", "fpr95_known", "fpr95_ood"}
    assert len(on_disk["history"]) == 1 and np.isfinite(on_disk["history"][0]["train/loss"])
    scores = np.load(Path(rec.dir) / records.SCORES)
    assert scores["known_score"].dtype == np.float64 and len(scores["unknown_score"]) == 238
    assert np.allclose(scores["known_score"], scores["known_score_msp"])


def test_a_finished_run_is_not_repeated(tmp_path):
    outcome = engine.run(_req(tmp_path, epochs=1))
    first = outcome.record
    assert outcome.trained and outcome.resumed_from is None and outcome.epochs_trained == 1
    path = Path(first.dir) / records.RESULT
    stamp = path.stat().st_mtime_ns
    reused = engine.run(_req(tmp_path, epochs=1))
    assert not reused.trained and reused.epochs_trained == 0
    again = reused.record
    assert again.created == first.created and again.metrics == first.metrics
    assert path.stat().st_mtime_ns == stamp


def _register_failing(reg, name, where):
    base = reg.method("softmax")

    def factory():
        method = base.factory()
        calls = {"n": 0}
        original = getattr(method, where)

        def broken(*args):
            calls["n"] += 1
            if calls["n"] >= 3 or where != "train_step":
                raise RuntimeError(f"boom in {where}")
            return original(*args)

        setattr(method, where, broken)
        return method

    reg.methods[name] = MethodSpec(name=name, factory=factory, defaults=base.defaults)
    reg.origin[f"method:{name}"] = "osrbench"


@pytest.mark.parametrize("where", ["setup", "train_step", "predict"])
def test_a_method_that_raises_fails_its_run_with_the_traceback_on_disk(tmp_path, where):
    reg = plugins.get()
    _register_failing(reg, "fragile", where)
    with pytest.raises(MethodFailed, match=f"boom in {where}"):
        engine.run(_req(tmp_path, "fragile", epochs=1), registry=reg)
    err = next(tmp_path.rglob(records.ERROR))
    doc = json.loads(err.read_text())
    assert "RuntimeError: boom" in doc["traceback"] and where in doc["stage"]
    assert not list(tmp_path.rglob(records.RESULT))


def test_nan_loss_stops_with_epoch_and_term_and_keeps_the_last_checkpoint(tmp_path):
    reg = plugins.get()
    base = reg.method("softmax")

    def factory():
        method = base.factory()
        step = method.train_step

        def train_step(phase, x, y):
            out = step(phase, x, y)
            if method.epoch >= 1:
                out["loss"] = out["loss"] * float("nan")
            return out

        method.train_step = train_step
        return method

    reg.methods["nanny"] = MethodSpec(name="nanny", factory=factory, defaults=base.defaults)
    reg.origin["method:nanny"] = "osrbench"
    with pytest.raises(NonFiniteLoss, match=r"'train/loss' became nan in epoch 1"):
        engine.run(_req(tmp_path, "nanny", epochs=3), registry=reg)
    ckpt_path = next(tmp_path.rglob(checkpoints.CHECKPOINT))
    assert checkpoints.read(ckpt_path)["epoch"] == 1


@pytest.mark.parametrize("method", ["softmax", "dias"])
def test_rescoring_from_the_checkpoint_reproduces_the_stored_scores_bit_for_bit(tmp_path, method):
    from osrbench.rescore import scores_from_checkpoint

    if method not in plugins.get().methods:
        pytest.skip(f"plugin of {method!r} not installed")
    rec = engine.run(_req(tmp_path, method, epochs=1)).record
    stored, again = records.read_scores(rec.dir), scores_from_checkpoint(rec, "cpu")
    assert again.main == stored.main and again.names == stored.names == list(rec.scores)
    for name, array in stored.to_arrays().items():
        assert np.array_equal(array, again.to_arrays()[name]), name
    assert again.metrics("score", rec.f1_rule) == rec.metrics


# --- the per-pass loss sums (issue 20): on the device, one stack and one add per step

def test_loss_sums_are_the_float32_running_sums_of_every_term():
    from osrbench.session import LossSums

    sums = LossSums(torch.device("cpu"))
    steps = [{"a": torch.tensor(0.1), "b": torch.tensor(2.0, dtype=torch.float64)}, {"a": torch.tensor(0.2), "b": 3},
             {"a": torch.tensor(0.3), "b": torch.tensor(4, dtype=torch.int64)}]
    for losses in steps:
        sums.add("p", losses)
    single = torch.tensor(1.5)
    sums.add("q", {"only": single})
    sums.add("q", {"only": torch.tensor(2.5)})
    assert float(single) == 1.5  # the method's tensor is not the accumulator
    want_a = float(torch.tensor(0.1) + torch.tensor(0.2) + torch.tensor(0.3))  # float32 additions in order
    got = sums.means(3)
    assert list(got) == ["p/a", "p/b", "q/only"]
    assert got["p/a"] == pytest.approx(want_a / 3, rel=1e-7)
    assert got["p/b"] == 3.0 and got["q/only"] == pytest.approx(4 / 3)


def test_loss_sums_keep_terms_that_change_between_steps():
    from osrbench.session import LossSums

    sums = LossSums(torch.device("cpu"))
    sums.add("p", {"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    sums.add("p", {"a": torch.tensor(3.0)})  # a partial last batch may report fewer terms
    assert sums.means(2) == {"p/a": 2.0, "p/b": 1.0}
    assert LossSums(torch.device("cpu")).means(3) == {}
