"""``compile=true``: the method's networks are compiled (not the step) and train as eager does,
up to rounding, alone and replayed from graphs (``cuda_graphs=true``: the replay backend on the
CPU, real CUDA graphs on a GPU). Compiling is slow on the CPU (tens of seconds per network), so
these use a small network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from osrbench import config as configmod
from osrbench import graphs, plugins, session, training
from osrbench.datasets import OpenSetData
from osrbench.errors import UserError
from osrbench.method import Method, MethodSpec, Prediction

K = 3


class Tiny(Method):
    """Conv -> BN -> ReLU -> Dropout2d -> pool -> Linear, SGD with momentum: the random, stateful and
    parametric pieces a real network has, small enough to compile in seconds."""

    graph_safe = True

    def setup(self, ctx):
        self.net = ctx.place(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                           nn.Dropout2d(0.3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, K)))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train_step(self, phase, images, labels):
        self.net.train()
        loss = nn.functional.cross_entropy(self.net(images), labels)
        training.zero_grad_in_place(self.opt)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def predict(self, images):
        self.net.eval()
        logits = self.net(images)
        return Prediction(logits=logits, score=logits.softmax(1).max(1).values)

    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])


SPEC = MethodSpec(name="tiny", factory=Tiny, defaults={"epochs": 1, "batch_size": 16})


def _open(compile: bool, replay: bool = False, device: str = "cpu", cuda_graphs="auto", seed: int = 0):
    """A session of 64 images in batches of 16; ``replay``: through the CPU's replay backend (as a pack on the CPU)."""
    _, cfg = configmod.resolve(SPEC, plugins.get().dataset("digits"),
                               overrides={"compile": compile, "image_size": 8, "cuda_graphs": cuda_graphs})
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, K, (64,), generator=g)
    data = OpenSetData(x, y, x[:4], y[:4], x[:4], torch.zeros(4, dtype=torch.long))
    return session.open_session(SPEC, cfg, data, num_classes=K, dataset="digits", device=torch.device(device),
                                seed=seed, graph_backend=graphs.ReplayBackend if replay else None)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(compile: bool, replay: bool = False, device: str = "cpu", cuda_graphs="auto", seed: int = 0):
    """Two epochs of 4 full batches: the session and its losses."""
    s = _open(compile, replay, device, cuda_graphs, seed)
    losses = []
    for epoch in range(2):
        s.run_epoch(epoch, lambda phase, i, out: losses.append(float(out["loss"])))
    return s, losses


def _assert_close_states(a, b, rtol=1e-5, atol=1e-6):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        if x.is_floating_point():  # the same dropout masks: otherwise these differ by far more
            torch.testing.assert_close(y, x, rtol=rtol, atol=atol, msg=name)
        else:
            assert torch.equal(x, y), name


def _needs_a_cpu_compiler():
    try:
        session.check_compiler(torch.device("cpu"))
    except UserError as exc:
        pytest.skip(str(exc))


def test_compiled_networks_train_as_eager_up_to_rounding():
    _needs_a_cpu_compiler()
    (eager, eager_losses), (compiled, compiled_losses) = _train(False), _train(True)
    eager, compiled = eager.method, compiled.method
    assert eager.net._compiled_call_impl is None and compiled.net._compiled_call_impl is not None
    assert torch._inductor.config.fallback_random  # dropout keeps torch's eager RNG on CUDA too
    assert list(compiled.net.state_dict()) == list(eager.net.state_dict())  # keys unchanged (compiled in place)
    assert len(compiled_losses) == 8 and compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    _assert_close_states(eager.net, compiled.net)


def test_compiled_networks_replayed_from_graphs_train_as_compiled_alone():
    """compile=true inside graphs: the warm-up steps compile, the recorded and replayed steps run
    the compiled code (here through the replay backend: the host logic a CUDA pack runs)."""
    _needs_a_cpu_compiler()
    (alone, alone_losses), (replayed, replayed_losses) = _train(True), _train(True, replay=True)
    assert replayed.step.counts == {"eager": 3, "captured": 1, "replayed": 4}
    assert replayed.method.net._compiled_call_impl is not None
    assert replayed_losses == alone_losses  # the same compiled code, step for step
    for (name, a), b in zip(alone.method.net.state_dict().items(), replayed.method.net.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_pack_of_compiled_runs_compiles_once_and_trains_each_run_as_alone():
    """Each run of a pack has its own networks: they share the compiled code (no recompiling per run,
    which would reach dynamo's cache limit and fall back to eager in a pack of 8)."""
    from torch._dynamo.utils import counters

    from osrbench import pack

    _needs_a_cpu_compiler()
    alone = [_train(True, seed=seed)[0] for seed in (0, 1)]
    compiled = counters["stats"]["unique_graphs"]
    lanes = pack.Lanes()
    runs = [lanes.open(torch.device("cpu"), lambda seed=seed: _open(True, replay=True, seed=seed)) for seed in (0, 1)]
    for epoch in range(2):
        steps = [(s.epoch_steps(epoch), lane) for s, lane in runs]
        for _ in range(5):  # 4 steps, then end_epoch
            for it, lane in steps:
                with lanes.on(lane):
                    next(it, None)
    assert counters["stats"]["unique_graphs"] == compiled
    for a, (b, _) in zip(alone, runs):
        assert b.step.counts == {"eager": 3, "captured": 1, "replayed": 4}
        for (name, x), y in zip(a.method.net.state_dict().items(), b.method.net.state_dict().values()):
            assert torch.equal(x, y), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_record_compiled_networks_and_train_as_compiled_alone():
    try:
        session.check_compiler(torch.device("cuda"))
    except UserError as exc:
        pytest.skip(str(exc))
    (alone, alone_losses), (graphed, graphed_losses) = (_train(True, device="cuda", cuda_graphs=False),
                                                       _train(True, device="cuda", cuda_graphs=True))
    assert graphed.cuda_graphs and graphed.step.counts == {"eager": 3, "captured": 1, "replayed": 4}
    assert graphed_losses == pytest.approx(alone_losses, rel=1e-4)
    _assert_close_states(alone.method.net, graphed.method.net, rtol=1e-4, atol=1e-5)


def test_compile_without_a_cpu_compiler_is_one_clear_error(monkeypatch):
    from torch._inductor import cpp_builder

    def missing():
        raise RuntimeError("no g++")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    with pytest.raises(UserError, match="compile=true on the CPU needs a C\\+\\+ compiler"):
        session.check_compiler(torch.device("cpu"))


def test_compile_on_cuda_without_triton_is_one_clear_error(monkeypatch):
    import torch.utils._triton as triton

    monkeypatch.setattr(triton, "has_triton", lambda: False)
    with pytest.raises(UserError, match="compile=true on a CUDA device needs Triton"):
        session.check_compiler(torch.device("cuda"))
    monkeypatch.setattr(triton, "has_triton", lambda: True)
    session.check_compiler(torch.device("cuda"))  # nothing to refuse


def test_classifier32_compile_covers_every_entry_point():
    from osrbench.models import Classifier32

    net = Classifier32(K, bn_branches=2)
    net.compile()
    for name in Classifier32.ENTRY_POINTS:
        fn = getattr(net, name)
        assert hasattr(fn, "_torchdynamo_orig_callable"), name  # a torch.compile wrapper of the bound method
        assert fn._torchdynamo_orig_callable.__func__ is getattr(Classifier32, name)
