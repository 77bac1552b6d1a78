"""Packs (osrbench.pack): several runs trained at once in one process, one step each in turn.

On the CPU a pack replays every graph_safe step through graphs.ReplayBackend (the host logic of
CUDA graphs, run again in Python), so these tests exercise what a CUDA pack does around its
graphs; the records and scores must be bit-identical to the same runs trained alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from osrbench import checkpoints, engine, graphs, pack, plugins, records, sweep
from osrbench.method import MethodSpec

METHODS = ("softmax", "arpl-cs", "dias")
EPOCHS = 2


def _requests(out, methods=METHODS, device="cpu", **kw):
    return [engine.RunRequest(method=m, dataset="digits", epochs=EPOCHS, device=device, out=out, progress=False,
                              checkpoint_every=1, **kw) for m in methods]


def _assert_same(a, b):
    """One run's result, bit for bit: config, metrics, loss history and every stored score."""
    assert (a.method, a.split, a.seed) == (b.method, b.split, b.seed)
    for k in ("config_hash", "config", "metrics", "history", "cuda_graphs"):
        assert getattr(a, k) == getattr(b, k), (k, a.method)
    with np.load(Path(a.dir) / records.SCORES) as sa, np.load(Path(b.dir) / records.SCORES) as sb:
        assert sorted(sa.files) == sorted(sb.files)
        for name in sa.files:
            assert np.array_equal(sa[name], sb[name]), (name, a.method)


class Events(list):
    def __call__(self, ev):
        self.append(ev)

    def kinds(self, kind):
        return [e for e in self if e.kind == kind]

    @property
    def stats(self):
        (ev,) = self.kinds("summary")
        return ev.info["stats"]


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The reference: softmax, ARPL+CS and DIAS on digits, each trained alone (eager on the CPU)."""
    out = tmp_path_factory.mktemp("alone")
    return {r.method: engine.run(r).record for r in _requests(out)}


@pytest.fixture
def captures(monkeypatch):
    """How many step graphs the ReplayBackend recorded (a spy: the pack really went through it)."""
    seen = []
    original = graphs.ReplayBackend.capture
    monkeypatch.setattr(graphs.ReplayBackend, "capture", lambda self, step: (seen.append(1), original(self, step))[1])
    return seen


def test_a_pack_writes_the_records_and_scores_of_the_runs_trained_alone(tmp_path, alone, captures):
    events = Events()
    got, failures = sweep.execute(_requests(tmp_path), jobs=3, pack="yes", on_event=events)
    assert failures == []
    assert events.stats.packed and events.kinds("plan")[0].info["packed"]
    for rec in got:
        _assert_same(rec, alone[rec.method])
        assert rec.cuda_graphs is False and rec.cuda_graph_steps is None  # replayed in Python, not a CUDA graph
    assert len(captures) == 1 + 2 + 2  # one graph per phase: softmax 1, ARPL+CS 2, DIAS 2


def test_the_pack_swaps_each_runs_random_states(tmp_path, alone, monkeypatch):
    """Without the swap the runs draw from one another's sequences (the check above can fail)."""
    monkeypatch.setattr(pack.RandomStates, "enter", lambda self: None)
    got, failures = sweep.execute(_requests(tmp_path), jobs=3, pack="yes")
    assert failures == []
    assert any(rec.history != alone[rec.method].history for rec in got)


def test_a_rolling_pack_of_two_trains_three_runs(tmp_path, alone):
    """``jobs`` bounds the pack: the third run joins when the first leaves."""
    events = Events()
    got, failures = sweep.execute(_requests(tmp_path), jobs=2, pack="yes", on_event=events)
    assert failures == [] and len(got) == 3
    order = [(e.kind, e.request.method) for e in events if e.kind in ("start", "done")]
    assert order[:2] == [("start", "softmax"), ("start", "arpl-cs")]
    assert order.index(("start", "dias")) > order.index(("done", "softmax"))
    for rec in got:
        _assert_same(rec, alone[rec.method])


def _raising_in_epoch(name: str, epoch: int, exc: type[BaseException] = RuntimeError) -> None:
    """Register ``name``: softmax whose train_step raises ``exc`` in ``epoch``."""
    reg = plugins.get()
    base = reg.method("softmax")

    def factory():
        method = base.factory()
        step = method.train_step

        def train_step(phase, images, labels):
            if method.epoch == epoch:
                raise exc("boom in the pack")
            return step(phase, images, labels)

        method.train_step = train_step
        return method

    reg.methods[name] = MethodSpec(name=name, factory=factory, defaults=base.defaults, options=base.options,
                                   recipes=base.recipes, default_recipe=base.default_recipe)
    reg.origin[f"method:{name}"] = "osrbench"


def test_a_failing_run_in_a_pack_fails_alone_and_the_others_go_on(tmp_path, alone):
    _raising_in_epoch("raiser", 1)
    nan = engine.RunRequest(method="softmax", dataset="digits", split=1, epochs=EPOCHS, device="cpu", out=tmp_path,
                            progress=False, overrides={"lr": 1.0e10})
    (raiser,) = _requests(tmp_path, methods=("raiser",))
    events = Events()
    got, failures = sweep.execute([nan, raiser, *_requests(tmp_path, methods=("arpl-cs", "dias"))], jobs=4,
                                  pack="yes", on_event=events)
    assert [(f.request.method, f.kind) for f in failures] == [("softmax", "method"), ("raiser", "method")]
    assert "became nan" in failures[0].message
    assert "raised in train_step('train', ...) in epoch 1: RuntimeError: boom in the pack" in failures[1].message
    for req in (nan, raiser):  # each failure left its traceback in its own folder
        assert (engine.plan(req).dir / records.ERROR).exists()
    assert (engine.plan(raiser).dir / checkpoints.CHECKPOINT).exists()  # epoch 0's checkpoint is kept
    assert sorted(r.method for r in got) == ["arpl-cs", "dias"]
    for rec in got:  # the others as if nothing had happened
        _assert_same(rec, alone[rec.method])
    assert (events.stats.completed, events.stats.failed) == (2, 2)


def test_ctrl_c_stops_the_pack_and_says_what_every_run_keeps(tmp_path):
    from osrbench.errors import Interrupted

    _raising_in_epoch("interrupted", 1, KeyboardInterrupt)  # Ctrl-C arrives during its epoch 1
    reqs = _requests(tmp_path, methods=("softmax", "interrupted"))  # softmax steps first in each round
    with pytest.raises(Interrupted) as info:
        sweep.execute(reqs, jobs=2, pack="yes")
    message = str(info.value)
    assert message.startswith("interrupted; softmax split 0 seed 0: the checkpoint of epoch 1")
    assert "; interrupted split 0 seed 0: the checkpoint of epoch 1" in message
    for req in reqs:  # both kept their checkpoint for the resume
        assert checkpoints.read(engine.plan(req).dir / checkpoints.CHECKPOINT)["epoch"] == 1


@pytest.mark.slow
def test_a_killed_pack_resumes_every_run_exactly(tmp_path, alone):
    """kill -9 of a packed compare once DIAS has written its first checkpoint; the pack run again
    resumes each unfinished run from its checkpoint and ends with the records of the runs alone."""
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "osrbench.cli", "compare", *METHODS, "--dataset", "digits", "--splits", "0",
           "--epochs", str(EPOCHS), "--device", "cpu", "--checkpoint-every", "1", "--jobs", "3", "--pack", "yes",
           "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(out.glob(f"**/dias/*/{checkpoints.CHECKPOINT}")):
        time.sleep(0.02)
    assert proc.poll() is None, "the pack ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(out.glob(f"**/dias/*/{records.RESULT}"))
    events = Events()
    got, failures = sweep.execute(_requests(out), jobs=3, pack="yes", on_event=events)
    assert failures == []
    resumed = {e.request.method: e.info["epoch"] for e in events.kinds("resume")}
    assert resumed.get("dias") == 1, resumed
    for rec in got:
        _assert_same(rec, alone[rec.method])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_pack_trains_each_run_as_it_trains_alone(tmp_path):
    """Real CUDA graphs on a stream per run and a clone of the device's generator per run
    (benchmarks/gpu_check.sh runs it): each packed run as the same graphed run alone."""
    kw = dict(device="cuda", deterministic=True, overrides={"cuda_graphs": True})
    alone = {r.method: engine.run(r).record for r in _requests(tmp_path / "alone", **kw)}
    events = Events()
    got, failures = sweep.execute(_requests(tmp_path / "pack", **kw), jobs=3, pack="auto", on_event=events)
    assert failures == [] and events.stats.packed
    for rec in got:
        ref = alone[rec.method]
        assert rec.cuda_graphs is True and rec.cuda_graph_steps["replayed"] > 0
        assert rec.config_hash == ref.config_hash
        for a, b in zip(rec.history, ref.history):
            for key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (rec.method, key)
        assert abs(rec.metrics["auroc"] - ref.metrics["auroc"]) < 0.01, rec.method


def test_pack_auto_keeps_processes_on_the_cpu_and_packs_graphed_cuda_runs(tmp_path, monkeypatch):
    plans = [engine.plan(r) for r in _requests(tmp_path)]
    assert not pack.packable(plans)  # on the CPU: the process pool stays
    monkeypatch.setattr(pack.devices, "pick_device", lambda name: torch.device("cuda"))
    assert pack.packable(plans)  # softmax, ARPL+CS and DIAS are graph_safe classes
    eager = [engine.plan(r) for r in _requests(tmp_path, overrides={"cuda_graphs": False})]
    assert not pack.packable(eager)
    compiled = [engine.plan(r) for r in _requests(tmp_path, overrides={"compile": True})]
    assert not pack.packable(compiled)  # auto stays eager under compile=true
    compiled_graphs = [engine.plan(r) for r in _requests(tmp_path, overrides={"compile": True, "cuda_graphs": True})]
    assert pack.packable(compiled_graphs)
    _raising_in_epoch("raiser", 1)  # its factory is a function: graph_safe unknown before it runs
    assert not pack.packable([engine.plan(r) for r in _requests(tmp_path, methods=("raiser",))])


@pytest.mark.parametrize("argv, expect", [
    (["sweep", "--methods", "softmax", "--datasets", "digits", "--executor", "ray", "--pack", "yes"],
     "--pack yes applies to --executor local"),
    (["compare", "softmax", "dias", "--dataset", "digits", "--jobs", "2", "--pack", "maybe"],
     "invalid choice: 'maybe'"),
])
def test_bad_pack_options_are_one_line(tmp_path, capsys, argv, expect):
    from osrbench import cli

    try:
        code = cli.main([*argv, "--out", str(tmp_path)])
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and expect in err[-1]
    assert not list(tmp_path.rglob("*.pt"))


class FakeCudaGenerator:
    """The device's default CUDA generator as the lanes use it: named states, clones, the current one."""

    def __init__(self):
        self.current, self.clones = "the device's own", 0

    def graphsafe_get_state(self):
        return self.current

    def graphsafe_set_state(self, state):
        self.current = state

    def clone_state(self):
        self.clones += 1
        return f"clone {self.clones} of {self.current}"


def test_cuda_lanes_seed_each_run_in_the_devices_own_state_and_step_it_on_its_clone(monkeypatch):
    """The order a CUDA pack relies on, checked on the CPU with a stand-in generator: a new run is
    seeded (and restored) in the device's own state, then takes a clone of it that only its steps
    use and its graphs register; closing the pack puts the device's own state back."""
    gen = FakeCudaGenerator()
    monkeypatch.setattr(pack, "_default_cuda_generator", lambda device: gen)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: None)
    lanes, cuda = pack.Lanes(), torch.device("cuda")
    seeded_in = []
    _, a = lanes.open(cuda, lambda: seeded_in.append(gen.current))
    with lanes.on(a):  # run a steps: its own clone is current
        assert gen.current == "clone 1 of the device's own"
    _, b = lanes.open(cuda, lambda: seeded_in.append(gen.current))
    assert seeded_in == ["the device's own", "the device's own"]  # not a's clone
    assert (a.random.cuda[1], b.random.cuda[1]) == ("clone 1 of the device's own", "clone 2 of the device's own")
    with lanes.on(b):
        assert gen.current == b.random.cuda[1]
    lanes.close()
    assert gen.current == "the device's own"
