"""``compile=true``: the method's networks are compiled (not the step) and train as eager does,
up to rounding. Compiling is slow on the CPU (tens of seconds per network), so these use a small
network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from osrbench import config as configmod
from osrbench import plugins, session
from osrbench.datasets import OpenSetData
from osrbench.errors import UserError
from osrbench.method import Method, MethodSpec, Prediction

K = 3


class Tiny(Method):
    """Conv -> BN -> ReLU -> Dropout2d -> pool -> Linear, SGD with momentum: the random, stateful and
    parametric pieces a real network has, small enough to compile in seconds."""

    def setup(self, ctx):
        self.net = ctx.place(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                           nn.Dropout2d(0.3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, K)))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train_step(self, phase, images, labels):
        self.net.train()
        loss = nn.functional.cross_entropy(self.net(images), labels)
        self.opt.zero_grad(set_to_none=True)
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


def _train(compile: bool):
    _, cfg = configmod.resolve(SPEC, plugins.get().dataset("digits"), overrides={"compile": compile, "image_size": 8})
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, K, (64,), generator=g)
    data = OpenSetData(x, y, x[:4], y[:4], x[:4], torch.zeros(4, dtype=torch.long))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = session.open_session(SPEC, cfg, data, num_classes=K, dataset="digits", device=torch.device("cpu"), seed=0)
        losses = []
        for epoch in range(2):
            s.run_epoch(epoch, lambda phase, i, out: losses.append(float(out["loss"])))
        return s.method, losses
    finally:
        torch.set_num_threads(threads)


def test_compiled_networks_train_as_eager_up_to_rounding():
    try:
        session.check_compiler(torch.device("cpu"))
    except UserError as exc:
        pytest.skip(str(exc))
    eager, eager_losses = _train(False)
    compiled, compiled_losses = _train(True)
    assert eager.net._compiled_call_impl is None and compiled.net._compiled_call_impl is not None
    assert torch._inductor.config.fallback_random  # dropout keeps torch's eager RNG on CUDA too
    assert list(compiled.net.state_dict()) == list(eager.net.state_dict())  # keys unchanged (compiled in place)
    assert len(compiled_losses) == 8 and compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    for (name, a), b in zip(eager.net.state_dict().items(), compiled.net.state_dict().values()):
        if a.is_floating_point():  # the same dropout masks: otherwise these differ by far more
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(a, b), name


def test_compile_without_a_cpu_compiler_is_one_clear_error(monkeypatch):
    from torch._inductor import cpp_builder

    def missing():
        raise RuntimeError("no g++")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    with pytest.raises(UserError, match="compile=true on the CPU needs a C\\+\\+ compiler"):
        session.check_compiler(torch.device("cpu"))


def test_compile_with_cuda_graphs_is_refused_in_one_line():
    _, cfg = configmod.resolve(SPEC, plugins.get().dataset("digits"), overrides={"compile": True, "cuda_graphs": True})
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    data = OpenSetData(x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), x,
                       torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match="compile=true and cuda_graphs=true together"):
        session.open_session(SPEC, cfg, data, num_classes=K, dataset="digits", device=torch.device("cpu"), seed=0)


def test_classifier32_compile_covers_every_entry_point():
    from osrbench.models import Classifier32

    net = Classifier32(K, bn_branches=2)
    net.compile()
    for name in Classifier32.ENTRY_POINTS:
        fn = getattr(net, name)
        assert hasattr(fn, "_torchdynamo_orig_callable"), name  # a torch.compile wrapper of the bound method
        assert fn._torchdynamo_orig_callable.__func__ is getattr(Classifier32, name)
