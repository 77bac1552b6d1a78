"""A misbehaving method fails only its own run, and no work is lost quietly (issue 15, findings 3
and 5): everything a method does runs inside the guard, what it returns is checked, compare goes
on, checkpoints come every epoch, an interrupt says what it kept."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from osrbench import checkpoints, cli, engine, plugins, records
from osrbench.method import MethodSpec, Prediction

BASE = ["--dataset", "digits", "--epochs", "1", "--device", "cpu", "--quiet"]


def _patched(name: str, **methods):
    """Register ``name``: softmax with some of its methods replaced by ``methods[attr](method, original)``."""
    reg = plugins.get()
    base = reg.method("softmax")

    def factory():
        method = base.factory()
        for attr, make in methods.items():
            setattr(method, attr, make(method, getattr(method, attr)))
        return method

    reg.methods[name] = MethodSpec(name=name, factory=factory, defaults=base.defaults, options=base.options)
    reg.origin[f"method:{name}"] = "osrbench"


def _run(tmp_path, method, capsys, *extra):
    code = cli.main(["run", "--method", method, *BASE, "--out", str(tmp_path), *extra])
    return code, capsys.readouterr().err


def _shape_of(out, **changes):
    return Prediction(**{"logits": out.logits, "score": out.score, "scores": out.scores, **changes})


CASES = {
    "exit-0-in-setup": dict(setup=lambda m, f: lambda ctx: (_ for _ in ()).throw(SystemExit(0))),
    "loss-not-0d": dict(train_step=lambda m, f: lambda *a: {"loss": torch.ones(2)}),
    "loss-not-a-dict": dict(train_step=lambda m, f: lambda *a: [f(*a)["loss"]]),
    "score-wrong-shape": dict(predict=lambda m, f: lambda x: _shape_of(f(x), score=f(x).score[:, None])),
    "logits-1d": dict(predict=lambda m, f: lambda x: _shape_of(f(x), logits=f(x).logits[:, 0])),
    "nan-named-score": dict(predict=lambda m, f: lambda x: _shape_of(
        f(x), scores={**f(x).scores, "msp": f(x).scores["msp"] * float("nan")})),
    "bad-f1-rule": dict(f1_rule=lambda m, f: lambda: ("msp", "high")),
    "numpy-state": dict(state_dict=lambda m, f: lambda: {**f(), "extra": np.arange(3)}),
}
MESSAGES = {
    "exit-0-in-setup": "raised in setup(ctx): SystemExit: 0",
    "loss-not-0d": "returned loss 'loss' of shape (2,), expected a 0-d tensor",
    "loss-not-a-dict": "returned list; it must return a dict of named loss terms",
    "score-wrong-shape": "score has shape (358, 1), expected (358,)",
    "logits-1d": "logits have shape (358,), expected (358, 6)",
    "nan-named-score": "score 'msp' contain 358 non-finite value(s)",
    "bad-f1-rule": "f1_rule() returned ('msp', 'high')",
    "numpy-state": "cannot be read back by safe loading",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_misbehaving_method_fails_its_run_in_one_line_with_an_error_file(tmp_path, capsys, case):
    _patched("rogue", **CASES[case])
    code, err = _run(tmp_path, "rogue", capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("osrbench: run failed: "), err
    assert MESSAGES[case] in err and "Traceback" not in err
    (error,) = tmp_path.rglob(records.ERROR)
    assert json.loads(error.read_text())["method"] == "rogue"
    assert not list(tmp_path.rglob(records.RESULT))


def test_compare_goes_on_after_a_plugin_that_exits_and_says_so(tmp_path, capsys):
    _patched("quitter", setup=CASES["exit-0-in-setup"]["setup"])
    code = cli.main(["compare", "quitter", "softmax", *BASE, "--splits", "0-1", "--out", str(tmp_path),
                     "--metrics", "auroc"])
    cap = capsys.readouterr()
    assert code == 1 and "2 run(s) failed or missing" in cap.err and "SystemExit" in cap.err
    assert "softmax" in cap.out and len(list(records.iter_records(tmp_path))) == 2


# -------------------------------------------------------------------------------- 5: no work lost


def _interrupting(at_epoch: int):
    def make(method, original):
        def train_step(phase, x, y):
            if method.epoch >= at_epoch:
                raise KeyboardInterrupt
            return original(phase, x, y)

        return train_step

    return make


@pytest.mark.parametrize("at_epoch", [0, 1])
def test_an_interrupt_says_which_checkpoint_is_kept(tmp_path, capsys, at_epoch):
    _patched("stoppable", train_step=_interrupting(at_epoch))
    code = cli.main(["run", "--method", "stoppable", *BASE[:2], "--epochs", "3", *BASE[4:], "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1
    if at_epoch == 0:
        assert "no checkpoint had been written yet" in err and not list(tmp_path.rglob(checkpoints.CHECKPOINT))
    else:  # the default checkpoints every epoch: epoch 1 is kept
        assert "the checkpoint of epoch 1 in" in err and "--resume" in err
        (ckpt,) = tmp_path.rglob(checkpoints.CHECKPOINT)
        assert checkpoints.read(ckpt)["epoch"] == 1


@pytest.mark.parametrize(("every", "interval", "saved"), [(None, 60.0, [1, 4]), (None, 0.0, [1, 2, 3, 4]),
                                                          (2, 60.0, [2, 4]), (3, 0.0, [3, 4])])
def test_when_checkpoints_are_written(tmp_path, monkeypatch, every, interval, saved):
    epochs = []
    real = checkpoints.save
    monkeypatch.setattr(checkpoints, "save", lambda folder, payload: (epochs.append(payload["epoch"]),
                                                                      real(folder, payload)))
    engine.run(engine.RunRequest("softmax", "digits", epochs=4, out=tmp_path, device="cpu", progress=False,
                                 checkpoint_every=every, checkpoint_interval=interval))
    assert epochs == saved  # default: the first epoch, then every 60 s (digits epochs take ~1 s), the last
    args = cli.build_parser().parse_args(["run", "--method", "softmax", "--dataset", "digits"])
    assert args.checkpoint_every is None and args.checkpoint_interval == 60.0


def test_a_folder_holding_only_the_previous_checkpoint_is_an_unfinished_run(tmp_path, capsys):
    req = engine.RunRequest("softmax", "digits", epochs=2, out=tmp_path / "a", device="cpu", progress=False)
    straight = engine.run(req).record
    folder = engine.plan(req).dir
    (folder / records.RESULT).unlink()
    (folder / checkpoints.CHECKPOINT).unlink()  # a kill between the rotation and the write
    survivor = (folder / checkpoints.PREVIOUS).read_bytes()
    argv = ["run", "--method", "softmax", *BASE[:2], "--epochs", "2", *BASE[4:], "--out", str(tmp_path / "a")]
    assert cli.main(argv) == 2
    assert "unfinished run; pass --resume" in capsys.readouterr().err
    assert (folder / checkpoints.PREVIOUS).read_bytes() == survivor  # not rotated away
    assert cli.main([*argv, "--resume"]) == 0
    assert records.read_record(folder).metrics == straight.metrics


def _save_many(folder: str, k: int) -> None:
    # the fields checkpoints.read checks a payload for
    rest = {"identity": {}, "history": [], "elapsed": 0.0, "rng": checkpoints.rng_state(torch.Generator())}
    for i in range(10):
        checkpoints.save(folder, {**rest, "epoch": i, "writer": k, "state": {"w": torch.full((64,), float(k))}})


def test_processes_saving_checkpoints_in_one_folder_do_not_race(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_many, args=(str(tmp_path), k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert checkpoints.read(tmp_path / checkpoints.CHECKPOINT)["epoch"] == 9
    assert checkpoints.read(tmp_path / checkpoints.PREVIOUS)["epoch"] in range(10)


def test_a_temporary_file_left_by_a_killed_writer_is_removed_by_the_next_run(tmp_path):
    import subprocess
    import sys

    from osrbench import results

    req = engine.RunRequest("softmax", "digits", epochs=1, out=tmp_path, device="cpu", progress=False)
    folder = engine.plan(req).dir
    folder.mkdir(parents=True)
    # A writer that dies between creating its temporary file and renaming it (as a kill -9 would).
    code = ("import sys, tempfile; from osrbench import results; "
            "tempfile.mkstemp(prefix=f'.result.json.{results._WRITER}.', suffix='.tmp', dir=sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
    (orphan,) = folder.glob(".*.tmp")
    live = results.tempfile.mkstemp(prefix=f".scores.npz.{results._WRITER}.", suffix=".tmp", dir=folder)[1]
    logs = []
    engine.run(req, log=logs.append)
    assert not orphan.exists() and any(orphan.name in line for line in logs)
    assert Path(live).exists()  # this process is alive: its file may still be being written
