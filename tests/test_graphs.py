"""osrbench.graphs: whole-step CUDA graphs (engine key cuda_graphs).

On the CPU the graph is ReplayBackend (replay = run the recorded Python again), which checks what
StepGraphs does around a graph: static inputs, warm-up, re-recording, eager partial batches and
loss terms copied out. The tests marked cuda record real graphs; benchmarks/gpu_check.sh runs them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from osrbench import cli, engine, graphs, plugins, records
from osrbench.errors import UserError
from osrbench.data.stream import TrainStream
from osrbench.method import Context, Method, MethodSpec, Prediction
from osrbench.training import OPTIM_DEFAULTS, make_optimizer, set_lr

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Linear(Method):
    """A linear classifier with dropout (draws from the global RNG inside the step)."""

    phases = ("a", "b")
    graph_safe = True

    def setup(self, ctx):
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.2),
                                       torch.nn.Linear(3 * 8 * 8, ctx.num_classes)).to(ctx.device)
        self.opt = make_optimizer(self.net.parameters(), ctx.config)

    def train_step(self, phase, x, y):
        self.net.train()
        loss = F.cross_entropy(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "scale": (x.mean() if phase == "a" else x.std()).detach()}

    def end_epoch(self, epoch):
        set_lr(self.opt, 0.01)

    @torch.no_grad()
    def predict(self, x):
        self.net.eval()
        z = self.net(x)
        return Prediction(z, z.double().max(1).values)

    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])


def _setup(seed=0):
    torch.manual_seed(seed)
    method = Linear()
    ctx = Context(num_classes=3, image_shape=(3, 8, 8), device=torch.device("cpu"),
                         config={**OPTIM_DEFAULTS, "lr": 0.05}, generator=torch.Generator(), epochs=2)
    method.setup(ctx)
    return method


def _stream(n=100, batch=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return TrainStream(x, torch.randint(0, 3, (n,), generator=g), batch, seed=0)


def _train(method, step, stream, epochs=2):
    """Every step's loss terms as numbers, read at once (a replay's terms live until the next step);
    a StepGraphs step gets the stream's full batches written into its static inputs, as the session does."""
    losses = []
    torch.manual_seed(1)  # dropout draws
    for epoch in range(epochs):
        for index, phase in enumerate(method.phases):
            into = step.input_buffer(phase) if isinstance(step, graphs.StepGraphs) else None
            for x, y in stream.batches(epoch, index, into):
                losses.append({k: v.item() for k, v in step(phase, x, y).items()})
        method.end_epoch(epoch)
    return losses


def test_step_graphs_train_exactly_as_eager_steps():
    stream = _stream()  # 100 images, batch 16: 6 full batches and one of 4 per pass
    eager = _setup()
    graphed = _setup()
    expected = _train(eager, eager.train_step, stream)
    steps = graphs.StepGraphs(graphed, 16, graphs.ReplayBackend())
    got = _train(graphed, steps, stream)
    assert got == expected
    for a, b in zip(eager.net.parameters(), graphed.net.parameters()):
        assert torch.equal(a, b)
    # Per phase: 3 warm-up steps, one recording under lr 0.05, one under 0.01 (epoch 1), the rest
    # replayed; the partial batches (one per pass) run eagerly.
    assert steps.counts == {"eager": 2 * 3 + 2 * 2, "captured": 2 * 2, "replayed": 2 * 2 + 2 * 5}


def test_a_replay_reads_the_new_batch_from_the_static_inputs():
    method = _setup()
    steps = graphs.StepGraphs(method, 16, graphs.ReplayBackend(), warmup=0)
    x = torch.rand(16, 3, 8, 8)
    y = torch.zeros(16, dtype=torch.long)
    first = steps("a", x, y)["scale"].item()
    losses = steps("a", 2 * x, y)
    second = losses["scale"].item()
    assert steps.counts == {"captured": 1, "replayed": 1}
    assert second == pytest.approx(2 * first) and first != second
    # The terms are views of the graph's one output tensor, which the sums add in one kernel.
    assert isinstance(losses, graphs.PackedLosses) and losses["scale"]._base is losses.packed


def test_the_stream_writes_full_batches_into_the_graphs_static_input():
    """The stream's ``into``: the same values as its own batches, in the phase's one buffer, which the
    recorded graph reads, so a replay copies no images (only the partial last batch is its own tensor)."""
    stream = _stream()
    method = _setup()
    steps = graphs.StepGraphs(method, 16, graphs.ReplayBackend(), warmup=0)
    into = steps.input_buffer("a")
    plain = [(x.clone(), y) for x, y in stream.batches(0)]
    written = []
    for (x, y), (want, _) in zip(stream.batches(0, 0, into), plain):
        assert torch.equal(x, want)
        written.append(x)
        steps("a", x, y)
    assert len({t.data_ptr() for t in written[:-1]}) == 1 and written[-1].data_ptr() != written[0].data_ptr()
    assert steps._graphs["a"].images is written[0]  # recorded on the buffer itself, not a copy
    assert steps.counts == {"captured": 1, "replayed": 5, "eager": 1}


def test_the_stream_writes_normalised_channels_last_inputs_with_the_same_values():
    stream = _stream()
    stream.normalize = "cifar"
    steps = graphs.StepGraphs(_setup(), 16, graphs.ReplayBackend(), channels_last=True)
    for (x, _), (want, _) in zip(stream.batches(0, 0, steps.input_buffer("a")), list(stream.batches(0))):
        assert torch.equal(x, want)
    assert steps._inputs["a"].is_contiguous(memory_format=torch.channels_last)


def test_only_graphs_of_the_current_hyperparameters_are_kept():
    method = _setup()
    steps = graphs.StepGraphs(method, 16, graphs.ReplayBackend(), warmup=0)
    x, y = torch.rand(16, 3, 8, 8), torch.zeros(16, dtype=torch.long)
    steps("a", x, y)
    steps("b", x, y)
    set_lr(method.opt, 0.001)
    steps("a", x, y)
    assert set(steps._graphs) == {"a"}  # b's graph bakes the old learning rate: dropped, never replayed
    steps("b", x, y)
    assert steps.counts == {"captured": 4}


def test_hyperparameters_see_every_group_setting_but_not_the_parameters():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    key = graphs.hyperparameters([opt])
    assert key == graphs.hyperparameters([opt]) and hash(key) is not None
    set_lr(opt, 0.01)
    assert graphs.hyperparameters([opt]) != key
    set_lr(opt, 0.1)
    opt.param_groups[0]["momentum"] = 0.5
    assert graphs.hyperparameters([opt]) != key


def test_make_capturable_switches_adam_and_leaves_sgd_alone():
    w = torch.nn.Parameter(torch.ones(3))
    adam, sgd = torch.optim.Adam([w], lr=1e-3), torch.optim.SGD([w], lr=0.1)
    w.grad = torch.ones(3)
    adam.step()
    graphs.make_capturable([adam, sgd])
    assert adam.param_groups[0]["capturable"] is True and "capturable" not in sgd.param_groups[0]
    step = adam.state[w]["step"]
    assert step.device == w.device and step.dtype == torch.float32 and step.item() == 1


def test_methods_find_their_optimisers_among_their_attributes():
    method = _setup()
    assert method.optimizers() == [method.opt]


# ------------------------------------------------------------------------------------ engine


def _registry_with(factory, name="linear"):
    reg = plugins.Plugins(entry_points=False)
    reg.methods[name] = MethodSpec(name, factory, defaults={**OPTIM_DEFAULTS})
    reg.origin[f"method:{name}"] = "osrbench"
    reg.datasets = dict(plugins.get().datasets)
    return reg


def _request(tmp_path, method, **kw):
    return engine.RunRequest(method=method, dataset="digits", epochs=1, out=tmp_path, progress=False,
                             overrides={"cuda_graphs": True}, **kw)


def test_cuda_graphs_are_refused_for_a_method_that_does_not_declare_graph_safe(tmp_path):
    undeclared = type("Undeclared", (Linear,), {"graph_safe": False})
    with pytest.raises(UserError, match="method 'linear' does not declare graph_safe"):
        engine.run(_request(tmp_path, "linear", device="cpu"), registry=_registry_with(undeclared))


def test_cuda_graphs_on_the_cpu_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(UserError, match="cuda_graphs=true needs a CUDA device, and this run is on cpu"):
        engine.run(_request(tmp_path, "linear", device="cpu"), registry=_registry_with(Linear))
    code = cli.main(["run", "--method", "softmax", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                     "--set", "cuda_graphs=true", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs a CUDA device" in err[0]
    assert not list(tmp_path.rglob("*.pt")), "nothing was trained"


# ------------------------------------------------------------------------------ real CUDA graphs


@cuda
@pytest.mark.parametrize("method", ["softmax", "arpl-cs", "dias"])
def test_cuda_graph_runs_train_replay_and_score_like_eager(tmp_path, method):
    reg = plugins.get()
    if method not in reg.methods:
        pytest.skip(f"{method} not installed")
    base = dict(method=method, dataset="digits", epochs=3, device="cuda", progress=False, deterministic=True)
    eager = engine.run(engine.RunRequest(**base, out=tmp_path / "eager")).record
    graphed = engine.run(engine.RunRequest(**base, out=tmp_path / "graphs", overrides={"cuda_graphs": True})).record
    steps = graphed.cuda_graph_steps
    assert steps["replayed"] > steps["captured"] > 0
    assert abs(graphed.metrics["auroc"] - eager.metrics["auroc"]) < 0.05


@cuda
def test_a_cuda_graphed_run_resumes_exactly(tmp_path):
    import numpy as np

    base = dict(method="dias", dataset="digits", device="cuda", progress=False, deterministic=True,
                overrides={"cuda_graphs": True}, checkpoint_every=1)
    whole = engine.run(engine.RunRequest(**base, epochs=2, out=tmp_path / "whole")).record
    engine.run(engine.RunRequest(**base, epochs=1, out=tmp_path / "parts"))
    resumed = engine.run(engine.RunRequest(**base, epochs=2, out=tmp_path / "parts", resume="yes")).record
    a = np.load(f"{whole.dir}/{records.SCORES}")
    b = np.load(f"{resumed.dir}/{records.SCORES}")
    assert np.array_equal(a["known_score"], b["known_score"]) and np.array_equal(a["unknown_score"], b["unknown_score"])


@cuda
@pytest.mark.parametrize("method", ["dias", "arpl-cs"])
def test_cuda_graphed_training_equals_eager_across_a_learning_rate_milestone(method):
    """Two epochs of the 32-px reference GAN with a milestone at epoch 1, so every phase's graph is
    recorded again under the new rate; the eager run's optimisers are made capturable as well (the
    graphed run's Adam math: its step count on the device). Parameters, buffers and optimiser state
    must agree after it."""
    from osrbench import config as configmod
    from osrbench import protocols, session

    reg = plugins.get()
    if method not in reg.methods:
        pytest.skip(f"{method} not installed")
    spec, ds = reg.method(method), reg.dataset("digits")
    split = protocols.get_split(ds, "auroc", 0)
    runs = {}
    for graphed in (False, True):
        _, cfg = configmod.resolve(spec, ds, None, 2, {"image_size": 32, "milestones": [1], "cuda_graphs": graphed})
        data = session.load_data(ds, split, 32)
        s = session.open_session(spec, cfg, data, num_classes=split.num_known, dataset="digits",
                                 device=torch.device("cuda"), seed=0, deterministic=True)
        assert s.method.adaptations().get("gan_mode") is None  # the release's G32/D
        s.build_step()
        if not graphed:
            graphs.make_capturable(s.method.optimizers())
        for epoch in range(2):
            s.run_epoch(epoch)
        runs[graphed] = s
    steps = runs[True].step.counts
    assert steps["captured"] == 2 * len(runs[True].phases) and steps["replayed"] > 0, dict(steps)

    def tensors(obj, prefix=""):
        if torch.is_tensor(obj):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from tensors(v, f"{prefix}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from tensors(v, f"{prefix}.{i}")

    eager, graphed = (dict(tensors(runs[g].method.state_dict())) for g in (False, True))
    assert list(eager) == list(graphed)
    worst = max(float((graphed[k].double() - v.double()).abs().max()) for k, v in eager.items() if v.is_floating_point())
    for key, value in eager.items():
        torch.testing.assert_close(graphed[key].to(value.device), value, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, key=key: f"{key}: {m} (largest difference of any tensor {worst:.3g})")


# ------------------------------------------------------------------------------ cuda_graphs=auto


@pytest.mark.parametrize("setting, safe, device, compile_, want", [
    ("auto", True, "cuda", False, True),  # the default where it pays: a graph_safe method on a GPU
    ("auto", True, "cpu", False, False),
    ("auto", False, "cuda", False, False),  # not graph_safe: eager, no error
    ("auto", True, "cuda", True, False),  # compile=true: auto leaves it eager until measured on a GPU
    (True, True, "cuda", True, True),  # ... and true records the compiled kernels
    (True, True, "cuda", False, True),
    (False, True, "cuda", False, False),
    (True, True, "cpu", False, "needs a CUDA device, and this run is on cpu"),
    (True, False, "cuda", False, "does not declare graph_safe"),
])
def test_cuda_graphs_resolves_auto_and_refuses_what_it_cannot_honour(setting, safe, device, compile_, want):
    from osrbench import session

    method = type("M", (Linear,), {"graph_safe": safe})()
    resolve = lambda: session.resolve_cuda_graphs(setting, method, "m", torch.device(device), compile_)  # noqa: E731
    if isinstance(want, str):
        with pytest.raises(UserError, match=want):
            resolve()
    else:
        assert resolve() is want


def test_the_default_is_auto_and_the_record_says_what_a_run_used(tmp_path, capsys):
    from osrbench import config as configmod

    reg = plugins.get()
    _, cfg = configmod.resolve(reg.method("softmax"), reg.dataset("digits"))
    assert cfg["cuda_graphs"] == "auto"
    rec = engine.run(engine.RunRequest(method="softmax", dataset="digits", epochs=1, device="cpu", out=tmp_path,
                                       progress=False)).record
    assert rec.cuda_graphs is False and rec.cuda_graph_steps is None  # auto on the CPU: eager
    assert records.read_record(rec.dir).to_json()["cuda_graphs"] is False
    eager = engine.run(engine.RunRequest(method="softmax", dataset="digits", epochs=1, device="cpu", out=tmp_path,
                                         progress=False, overrides={"cuda_graphs": False})).record
    assert eager.metrics == rec.metrics and eager.config_hash != rec.config_hash  # the setting is part of the config
    for bad in ("1", "yes please", "null"):
        code = cli.main(["run", "--method", "softmax", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                         "--set", f"cuda_graphs={bad}", "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "cuda_graphs" in err[0] and "auto, true, false" in err[0], err
