"""``osrbench evaluate``: weights in the ARPL and DIAS releases' layouts, and osrbench's own.

The release files are made here from small replicas of the releases' module structures (written
for these tests from the releases' layouts, see ``osrbench/layouts.py``): ``classifier32`` with
plain ``nn.BatchNorm2d`` layers and the unused ``bn10``, ``classifier32ABN`` with ``MultiBatchNorm``
layers holding an ``nn.ModuleList`` ``bns``, both wrapped in ``nn.DataParallel`` (``module.`` keys);
the ARPLoss criterion (``points`` and ``radius``, ``points`` a second time as ``Dist.centers``); the
DIAS checkpoint dict (two classifiers, G, D, optimiser states, epoch). Their tensors are seeded
random values, saved with ``torch.save``.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from osrbench import cli, compare, devices, engine, external, layouts, plugins, protocols, records, rescore, session
from osrbench import config as configmod
from osrbench.commands import evaluate as evaluate_command
from osrbench.data.stream import to_input
from osrbench.evaluation import BATCH

K = 6  # known classes of digits' auroc splits
DIGITS = ("--dataset", "digits", "--device", "cpu")


# ------------------------------------------------------------------------------ release replicas


class MultiBatchNorm(nn.Module):
    """The releases' ``MultiBatchNorm``: an ``nn.ModuleList`` ``bns``; one branch per batch."""

    def __init__(self, c: int, n: int = 2) -> None:
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(n))

    def forward(self, x: torch.Tensor, branch: int = 0) -> torch.Tensor:
        return self.bns[branch](x)


class ReleaseClassifier32(nn.Module):
    """``classifier32`` (``abn=False``) / ``classifier32ABN``: conv1..9, bn1..bn10 (bn10 unused), fc."""

    def __init__(self, k: int, abn: bool = False) -> None:
        super().__init__()
        widths = [(3, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2),
                  (128, 128, 1), (128, 128, 1), (128, 128, 2)]
        for i, (cin, cout, stride) in enumerate(widths, 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, stride, 1, bias=False))
        for i, c in enumerate([64, 64, 128, 128, 128, 128, 128, 128, 128, 128], 1):
            setattr(self, f"bn{i}", MultiBatchNorm(c) if abn else nn.BatchNorm2d(c))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(128, k, bias=False)
        self.dr1, self.dr2, self.dr3 = nn.Dropout2d(0.2), nn.Dropout2d(0.2), nn.Dropout2d(0.2)
        self.abn = abn

    def forward(self, x: torch.Tensor, return_feature: bool = False):
        for i in range(1, 10):
            if i in (1, 4, 7):
                x = getattr(self, f"dr{(i + 2) // 3}")(x)
            x = getattr(self, f"conv{i}")(x)
            x = getattr(self, f"bn{i}")(x, 0) if self.abn else getattr(self, f"bn{i}")(x)
            x = nn.LeakyReLU(0.2)(x)
        f = torch.flatten(self.avgpool(x), 1)
        y = self.fc(f)
        return (f, y) if return_feature else y


class Dist(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(0.1 * torch.randn(k, 128))


class ARPLoss(nn.Module):
    """The ARPL release's criterion: ``points`` is ``Dist.centers`` (one parameter, two names), ``radius``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.Dist = Dist(k)
        self.points = self.Dist.centers
        self.radius = nn.Parameter(torch.zeros(1))

    def logits(self, f: torch.Tensor) -> torch.Tensor:  # dist_l2_p - dist_dot_p, as the release computes them
        dot = f @ self.points.t()
        l2 = (f.pow(2).sum(1, keepdim=True) - 2 * f @ self.points.t() + self.points.pow(2).sum(1, keepdim=True).t())
        return l2 / f.shape[1] - dot


def release_generator() -> nn.Module:
    g = nn.Module()
    g.main = nn.Sequential(
        nn.ConvTranspose2d(100, 512, 4, 1, 0, bias=False), nn.BatchNorm2d(512), nn.ReLU(True),
        nn.ConvTranspose2d(512, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(True),
        nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
        nn.ConvTranspose2d(128, 3, 4, 2, 1, bias=False), nn.Sigmoid())
    return g


def release_discriminator() -> nn.Module:
    d = nn.Module()
    d.main = nn.Sequential(
        nn.Conv2d(3, 128, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.LeakyReLU(0.2),
        nn.Conv2d(256, 512, 4, 2, 1, bias=False), nn.BatchNorm2d(512), nn.LeakyReLU(0.2),
        nn.Conv2d(512, 1024, 4, 1, 0, bias=False), nn.Sigmoid())
    d.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    d.classifier = nn.Sequential(nn.Linear(1024, 1), nn.Sigmoid())
    return d


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded random values in every parameter and buffer (running_var positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype == torch.int64:
                t.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.1 if "conv" in name else 0.5))
    return module.eval()


def wrapped(module: nn.Module) -> nn.DataParallel:
    return nn.DataParallel(module)  # as the releases save on a GPU: module.<key>


# ------------------------------------------------------------------------------ release files


def arpl_files(tmp: Path, abn: bool = False, criterion: str = "arpl", seed: int = 1, k: int = K):
    """The ARPL release's two files (``<name>_.pth``, ``<name>__criterion.pth``) and the replicas."""
    net = randomize_(ReleaseClassifier32(k, abn), seed)
    crit = ARPLoss(k)
    if criterion == "arpl":
        randomize_(crit, seed + 100)
    name = f"classifier32_{'ARPLoss' if criterion == 'arpl' else 'Softmax'}_0_{abn}"
    net_path, crit_path = tmp / f"{name}_.pth", tmp / f"{name}__criterion.pth"
    torch.save(wrapped(net).state_dict(), net_path)
    torch.save(crit.state_dict() if criterion == "arpl" else {}, crit_path)
    return net_path, crit_path, net, crit


def dias_file(tmp: Path, seed: int = 3, k: int = K) -> tuple[Path, dict[str, nn.Module]]:
    nets = {"net1": ReleaseClassifier32(k, abn=True), "net2": ReleaseClassifier32(k, abn=True),
            "netG": release_generator(), "netD": release_discriminator()}
    opts = {}
    for i, (key, net) in enumerate(nets.items()):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()  # momentum buffers, as a saved optimiser has
        opts[key] = opt
        randomize_(net, seed + i)
    ckpt = {"epoch": 199, **{f"{k_}_state_dict": wrapped(n).state_dict() for k_, n in nets.items()},
            "optimizer1": opts["net1"].state_dict(), "optimizer2": opts["net2"].state_dict(),
            "optimizerD": opts["netD"].state_dict(), "optimizerG": opts["netG"].state_dict()}
    path = tmp / "4_199_64_checkpoint.pth.tar"
    torch.save(ckpt, path)
    return path, nets


# ------------------------------------------------------------------------------ helpers


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("osrbench: error: ")
    return err[0]


def _evaluate(out: Path, method: str, layout: str, *files: Path, extra: tuple[str, ...] = ()) -> int:
    argv = ["evaluate", "--method", method, *DIGITS, "--out", str(out), "--layout", layout, *extra]
    for f in files:
        argv += ["--weights", str(f)]
    return cli.main(argv)


def _record(out: Path) -> records.Record:
    recs = list(records.iter_records(out))
    assert len(recs) == 1, [r.dir for r in recs]
    return recs[0]


def _images(image_size: int = 8, split: int = 0):
    reg = plugins.get()
    ds = reg.dataset("digits")
    data = session.load_data(ds, protocols.get_split(ds, "auroc", split), image_size)
    return data


def _replica_logits(images: torch.Tensor, forward) -> np.ndarray:
    """The replica's logits of uint8 images prepared as the evaluation prepares them (same chunks)."""
    out = []
    with devices.cpu_threads(1), torch.no_grad():
        for chunk in images.split(BATCH):
            out.append(forward(to_input(chunk, "none")).double())
    return torch.cat(out).numpy()


def _set_up(method: str, image_size: int = 8):
    """``method`` set up exactly as ``osrbench evaluate`` sets it up on digits split 0 (CPU)."""
    reg = plugins.get()
    spec, ds = reg.method(method), reg.dataset("digits")
    split = protocols.get_split(ds, "auroc", 0)
    _, cfg = configmod.resolve(spec, ds, overrides={"image_size": image_size})
    data = session.load_data(ds, split, cfg["image_size"])
    return session.open_session(spec, cfg, data, num_classes=split.num_known, dataset=ds.name,
                                device=torch.device("cpu"), seed=0).method


def _weights(*paths: Path) -> layouts.ExternalWeights:
    return layouts.ExternalWeights.from_files([(p.name, layouts.read_file(p)) for p in paths])


def _release_key(host_key: str, plain: bool) -> str:
    """The release key a host Classifier32 key comes from (without ``module.``)."""
    m = re.match(r"^(bn\d)\.bns\.0\.(.*)$", host_key)
    return f"{m[1]}.{m[2]}" if (plain and m) else host_key


def _assert_one_to_one(host: nn.Module, release: nn.Module, plain: bool) -> None:
    """Every host parameter and buffer equals its release tensor; every release key but bn10's is used."""
    rel = release.state_dict()
    got = host.state_dict()
    used = set()
    for key, value in got.items():
        src = _release_key(key, plain)
        assert src in rel, key
        assert value.shape == rel[src].shape and torch.equal(value, rel[src]), key
        used.add(src)
    assert sorted(set(rel) - used) == sorted(k for k in rel if k.startswith("bn10."))


# ------------------------------------------------------------------------------ layouts


def test_the_command_lists_the_layouts_of_the_library():
    assert evaluate_command.LAYOUT_NAMES == layouts.LAYOUTS == (
        "dias-release", "arpl-release", "mls-release", "cac-release", "medaf-release", "torchvision", "osrbench")


def test_strip_data_parallel_only_when_every_key_has_it():
    assert layouts.strip_data_parallel(["module.a", "module.b.c"]) == {"a": "module.a", "b.c": "module.b.c"}
    assert layouts.strip_data_parallel(["module.a", "b"]) == {"module.a": "module.a", "b": "b"}
    assert layouts.strip_data_parallel(["x.module.a", "y"], "x.") == {"a": "x.module.a"}


def test_classifier32_keys_map_onto_the_host_and_bn10_is_dropped_and_recorded():
    for abn in (False, True):
        sd = wrapped(ReleaseClassifier32(K, abn)).state_dict()
        w = layouts.ExternalWeights(sd)
        mapped = layouts.classifier32_state(w)
        host = _set_up("arpl-cs" if abn else "arpl").net.state_dict()
        assert set(mapped) == set(host)
        assert "bn1.bns.0.running_mean" in mapped and not any("bn10" in k for k in mapped)
        assert (w.used | set(w.dropped)) == set(sd)
        assert w.dropped_summary() == {"module.bn10.*": "bn10: declared by the release's classifier32 but never "
                                                         "used by its forward"}


def test_check_strict_names_every_kind_in_one_line():
    want = {f"k{i}": torch.zeros(2) for i in range(6)}
    got = {**{f"k{i}": torch.zeros(2) for i in range(1, 5)}, "k5": torch.zeros(3), "x": torch.zeros(1)}
    with pytest.raises(layouts.LayoutError) as exc:
        layouts.check_strict(got, want, "the net")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg == ("the net does not fit: 1 missing key(s): k0; 1 unexpected key(s): x; "
                   "1 shape mismatch(es): k5 [3] (expected [2])")
    many = {f"m{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(layouts.LayoutError, match=r"7 missing key\(s\): m0, m1, m2 \(\+4 more\)"):
        layouts.check_strict({}, many, "the net")


def test_flatten_refuses_what_is_not_a_state_dict():
    with pytest.raises(layouts.LayoutError, match="not a state dict .* but a list"):
        layouts.flatten([torch.zeros(1)], "f")
    with pytest.raises(layouts.LayoutError, match="not a state dict of tensors"):
        layouts.flatten({"a": 1, "b": "x"}, "f")
    tensors, others = layouts.flatten({"a": {"b": torch.ones(1)}, "epoch": 3}, "f")
    assert list(tensors) == ["a.b"] and others == {"epoch": 3}
    assert layouts.flatten({}, "f") == ({}, {})  # the ARPL release's Softmax criterion file


@pytest.mark.parametrize("method, abn, criterion", [("softmax", False, "softmax"), ("arpl", False, "arpl"),
                                                    ("arpl-cs", True, "arpl")])
def test_arpl_release_files_load_one_to_one(tmp_path, method, abn, criterion):
    net_path, crit_path, net, crit = arpl_files(tmp_path, abn, criterion)
    m = _set_up(method)
    w = _weights(crit_path, net_path)  # in any order
    m.load_external("arpl-release", w)
    assert w.unused() == []
    _assert_one_to_one(m.net, net, plain=not abn)
    if criterion == "arpl":
        assert torch.equal(m.rp.points, crit.points) and torch.equal(m.rp.radius, crit.radius)
        assert w.dropped_summary()["Dist.centers"].startswith("the same parameter as points")


@pytest.mark.parametrize("image_size, gan_loaded", [(32, True), (8, False)])
def test_dias_release_checkpoint_loads_one_to_one(tmp_path, image_size, gan_loaded):
    path, nets = dias_file(tmp_path)
    m = _set_up("dias", image_size)
    w = _weights(path)
    m.load_external("dias-release", w)
    assert w.unused() == [] and w.info["trained_epochs"] == 200
    _assert_one_to_one(m.net, nets["net2"], plain=False)
    _assert_one_to_one(m.copycat, nets["net1"], plain=False)
    for host, rel in ((m.G, nets["netG"]), (m.D, nets["netD"])):
        same = all(torch.equal(v, rel.state_dict()[k]) for k, v in host.state_dict().items()
                   if k in rel.state_dict() and v.shape == rel.state_dict()[k].shape)
        assert same == gan_loaded
    summary = w.dropped_summary()
    assert {"optimizer1.*", "optimizer2.*", "optimizerD.*", "optimizerG.*", "epoch",
            "net1_state_dict.module.bn10.*", "net2_state_dict.module.bn10.*"} <= set(summary)
    assert ("netG_state_dict.*" in summary) == (not gan_loaded)


def test_a_bare_dias_classifier_state_dict_loads(tmp_path):
    net = randomize_(ReleaseClassifier32(K, abn=True), 5)
    torch.save(wrapped(net).state_dict(), tmp_path / "net2.pth")
    m = _set_up("dias")
    m.load_external("dias-release", _weights(tmp_path / "net2.pth"))
    _assert_one_to_one(m.net, net, plain=False)


# ------------------------------------------------------------------------------ evaluate on digits


def _forward_of(method: str, net: nn.Module, crit: ARPLoss | None):
    if method in ("arpl", "arpl-cs"):
        return lambda x: crit.logits(net(x, return_feature=True)[0])
    return net


@pytest.mark.parametrize("method, layout", [("softmax", "arpl-release"), ("arpl", "arpl-release"),
                                            ("arpl-cs", "arpl-release"), ("dias", "dias-release")])
def test_evaluate_gives_the_release_networks_logits(capsys, tmp_path, method, layout):
    if layout == "dias-release":
        path, nets = dias_file(tmp_path)
        files, net, crit = (path,), nets["net2"], None
    else:
        net_path, crit_path, net, crit = arpl_files(tmp_path, abn=method == "arpl-cs",
                                                    criterion="softmax" if method == "softmax" else "arpl")
        files = (net_path,) if method == "softmax" else (net_path, crit_path)
    out = tmp_path / "runs"
    assert _evaluate(out, method, layout, *files) == 0
    text = capsys.readouterr().out
    assert "external weights" in text and "auroc" in text
    rec = _record(out)
    ext = rec.external_weights
    assert ext["layout"] == layout
    assert [f["name"] for f in ext["files"]] == [f.name for f in files]
    assert all(re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) for f in ext["files"])
    assert rec.config[external.CONFIG_KEY]["sha256"] == sorted(f["sha256"] for f in ext["files"])
    assert rec.history == () and rec.wall_time_s["train"] == 0.0
    assert ext["trained_epochs"] == (200 if layout == "dias-release" else None)
    assert any("bn10" in k for k in ext["dropped"])
    scores = records.read_scores(rec.dir, rec)
    data = _images()
    forward = _forward_of(method, net, crit)
    for logits, images in ((scores.known_logits, data.known_x), (scores.unknown_logits, data.unknown_x)):
        want = _replica_logits(images, forward)
        assert logits.shape == want.shape
        assert np.array_equal(logits, want), np.abs(logits - want).max()
    # The checkpoint holds the loaded state: the run is rebuilt from it unchanged.
    again = rescore.scores_from_checkpoint(rec)
    assert np.array_equal(again.known_logits, scores.known_logits)
    assert np.array_equal(again.unknown_logits, scores.unknown_logits)


def test_the_same_weights_again_are_the_stored_record_and_force_evaluates_them_again(capsys, tmp_path):
    net_path, crit_path, _, _ = arpl_files(tmp_path)
    out = tmp_path / "runs"
    assert _evaluate(out, "arpl", "arpl-release", net_path, crit_path) == 0
    first = _record(out)
    capsys.readouterr()
    assert _evaluate(out, "arpl", "arpl-release", crit_path, net_path) == 0  # the order does not matter
    assert "the stored record" in capsys.readouterr().out
    assert _record(out).sha256 == first.sha256
    assert _evaluate(out, "arpl", "arpl-release", net_path, crit_path, extra=("--force",)) == 0
    assert "evaluated in" in capsys.readouterr().out
    assert _record(out).config_hash == first.config_hash
    # Other weights are another record in another folder.
    (tmp_path / "b").mkdir()
    other, other_crit, _, _ = arpl_files(tmp_path / "b", seed=9)
    assert _evaluate(out, "arpl", "arpl-release", other, other_crit) == 0
    recs = list(records.iter_records(out))
    assert len(recs) == 2 and len({r.config_hash for r in recs}) == 2 and len({r.dir for r in recs}) == 2


def test_external_records_are_not_mixed_with_a_trained_run(capsys, tmp_path):
    out = tmp_path / "runs"
    run = ["run", "--method", "softmax", *DIGITS, "--epochs", "1", "--quiet", "--out", str(out)]
    assert cli.main(run) == 0
    net_path, _, _, _ = arpl_files(tmp_path, criterion="softmax")
    assert _evaluate(out, "softmax", "arpl-release", net_path) == 0
    recs = list(records.iter_records(out))
    assert len(recs) == 2
    trained = next(r for r in recs if r.external_weights is None)
    ext = next(r for r in recs if r.external_weights is not None)
    assert (trained.method, trained.split, trained.seed) == (ext.method, ext.split, ext.seed)
    assert trained.dir != ext.dir and trained.config_hash != ext.config_hash
    assert external.CONFIG_KEY not in trained.config
    groups = compare.group_records(recs)
    assert len(groups) == 2 and all(len(g) == 1 for g in groups.values())
    # The trained run is still the run's record: `run` again finds it, not the external one.
    capsys.readouterr()
    plan = engine.plan(engine.RunRequest("softmax", "digits", epochs=1, out=out))
    assert plan.existing_result().sha256 == trained.sha256


# ------------------------------------------------------------------------------ the osrbench layout


def test_osrbench_layout_round_trip_from_a_trained_runs_checkpoint(capsys, tmp_path):
    out = tmp_path / "runs"
    assert cli.main(["run", "--method", "arpl", *DIGITS, "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    trained = _record(out)
    ckpt_path = Path(trained.dir) / "checkpoint.pt"
    ext_out = tmp_path / "ext"
    assert _evaluate(ext_out, "arpl", "osrbench", ckpt_path, extra=("--set", "epochs=1")) == 0
    assert "external weights" in capsys.readouterr().out
    rec = _record(ext_out)
    assert rec.external_weights["layout"] == "osrbench" and rec.external_weights["trained_epochs"] == 1
    assert rec.external_weights["from_run"]["config_hash"] == trained.config_hash
    assert rec.config_hash != trained.config_hash
    a, b = records.read_scores(trained.dir, trained), records.read_scores(rec.dir, rec)
    assert np.array_equal(a.known_logits, b.known_logits) and np.array_equal(a.unknown_logits, b.unknown_logits)
    # A bare Method.state_dict() file gives the same network.
    from osrbench import checkpoints

    torch.save(checkpoints.read(ckpt_path)["state"], tmp_path / "state.pt")
    bare_out = tmp_path / "bare"
    assert _evaluate(bare_out, "arpl", "osrbench", tmp_path / "state.pt", extra=("--set", "epochs=1")) == 0
    c = records.read_scores(_record(bare_out).dir, _record(bare_out))
    assert np.array_equal(a.known_logits, c.known_logits)
    # rescore --from-checkpoint works on the external record unchanged.
    capsys.readouterr()
    assert cli.main(["rescore", "--runs", str(ext_out), "--score", "msp", "--from-checkpoint"]) == 0
    assert "checkpoint.pt" in capsys.readouterr().out


# ------------------------------------------------------------------------------ bad input


class NotWeights:
    pass


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    net_path, crit_path, net, _ = arpl_files(tmp)
    abn_path, abn_crit, _, _ = arpl_files(tmp, abn=True)
    soft_net, soft_crit, _, _ = arpl_files(tmp, criterion="softmax")
    sd = wrapped(net).state_dict()
    torch.save({k: v for k, v in sd.items() if not k.startswith("module.conv5.")}, tmp / "no_conv5.pth")
    wide = randomize_(ReleaseClassifier32(10), 2)
    torch.save(wrapped(wide).state_dict(), tmp / "ten_classes.pth")
    torch.save({**sd, "module.extra.weight": torch.zeros(3)}, tmp / "extra.pth")
    (tmp / "notes.txt").write_text("these are not weights\n")
    torch.save([torch.zeros(1)], tmp / "list.pth")
    torch.save({"epoch": 3, "name": "x"}, tmp / "no_tensors.pth")
    with open(tmp / "object.pkl", "wb") as fh:
        pickle.dump({"net": NotWeights()}, fh, protocol=2)
    torch.save(NotWeights(), tmp / "object.pth")
    dias_path, _ = dias_file(tmp)
    d = tmp

    def ev(method: str, layout: str, *files: Path, extra: tuple[str, ...] = ()) -> list[str]:
        argv = ["evaluate", *DIGITS, "--method", method, "--layout", layout, *extra]
        for f in files:
            argv += ["--weights", str(f)]
        return argv

    not_read = r"not a weights file torch.load\(weights_only=True\) reads"
    return {
        "unknown-layout": (ev("arpl", "arpl", net_path), r"unknown --layout 'arpl' \(valid: dias-release, "
                                                         r"arpl-release, mls-release, cac-release, medaf-release, torchvision, osrbench\); did you mean 'arpl-release'"),
        "layout-of-another-method": (ev("softmax", "dias-release", dias_path),
                                     r"method 'softmax' does not read --layout dias-release "
                                     r"\(it reads: arpl-release, mls-release, torchvision, osrbench\)"),
        "missing-file": (ev("arpl", "arpl-release", d / "nope.pth"), r"--weights .*nope.pth: no such file"),
        "same-file-twice": (ev("arpl", "arpl-release", net_path, net_path), r"is given twice"),
        "too-many-files": (ev("dias", "dias-release", dias_path, net_path),
                           r"--layout dias-release takes 1 --weights file"),
        "missing-keys": (ev("softmax", "arpl-release", d / "no_conv5.pth"),
                         r"the ARPL release network \(classifier32\) does not fit: 1 missing key\(s\): conv5.weight"),
        "wrong-shapes": (ev("softmax", "arpl-release", d / "ten_classes.pth"),
                         r"1 shape mismatch\(es\): fc.weight \[10, 128\] \(expected \[6, 128\]\)"),
        "unexpected-key": (ev("softmax", "arpl-release", d / "extra.pth"), r"1 unexpected key\(s\): extra.weight"),
        "one-bn-branch-for-arpl-cs": (ev("arpl-cs", "arpl-release", net_path, crit_path),
                                      r"45 missing key\(s\): bn1.bns.1.weight.*one BN branch, a plain classifier32"),
        "two-bn-branches-for-arpl": (ev("arpl", "arpl-release", abn_path, abn_crit),
                                     r"unexpected key\(s\): bn1.bns.1.weight.*two BN branches"),
        "arpl-without-criterion": (ev("arpl", "arpl-release", net_path), r"arpl needs the ARPL release's criterion"),
        "arpl-with-empty-criterion": (ev("arpl", "arpl-release", soft_net, soft_crit),
                                      r"arpl needs the ARPL release's criterion"),
        "softmax-with-arploss-criterion": (ev("softmax", "arpl-release", net_path, crit_path),
                                           r"hold an ARPLoss criterion \(points, radius\)"),
        "criterion-only": (ev("arpl", "arpl-release", crit_path), r"the ARPL release files hold no network"),
        "dias-checkpoint-as-arpl": (ev("arpl", "arpl-release", dias_path),
                                    r"a DIAS release checkpoint .*use --layout dias-release"),
        "arpl-network-as-dias": (ev("dias", "dias-release", net_path),
                                 r"the DIAS release classifier \(net2, classifier32ABN\) does not fit: "
                                 r"45 missing key\(s\): bn1.bns.1.weight"),
        "foreign-text-file": (ev("softmax", "arpl-release", d / "notes.txt"), "notes.txt: " + not_read),
        "not-a-state-dict": (ev("softmax", "arpl-release", d / "list.pth"),
                             r"list.pth: not a state dict \(a mapping of names to tensors\) but a list"),
        "no-tensors": (ev("softmax", "arpl-release", d / "no_tensors.pth"),
                       r"no_tensors.pth: not a state dict of tensors"),
        "pickled-object": (ev("softmax", "arpl-release", d / "object.pkl"), "object.pkl: " + not_read),
        "saved-object": (ev("softmax", "osrbench", d / "object.pth"), "object.pth: " + not_read),
        "release-file-as-osrbench": (ev("softmax", "osrbench", net_path),
                                     r"does not fit the method's state: 3 missing key\(s\): net, opt, epoch; "
                                     r"120 unexpected key\(s\): module.conv1"),
        "bad-seed": (ev("arpl", "arpl-release", net_path, extra=("--seed", "-1")), r"seed"),
        "bad-set": (ev("arpl", "arpl-release", net_path, crit_path, extra=("--set", "lr=fast")),
                    r"config key 'lr' expects float"),
    }


CASES = ("unknown-layout", "layout-of-another-method", "missing-file", "same-file-twice", "too-many-files",
         "missing-keys", "wrong-shapes", "unexpected-key", "one-bn-branch-for-arpl-cs", "two-bn-branches-for-arpl",
         "arpl-without-criterion", "arpl-with-empty-criterion", "softmax-with-arploss-criterion", "criterion-only",
         "dias-checkpoint-as-arpl", "arpl-network-as-dias", "foreign-text-file", "not-a-state-dict", "no-tensors",
         "pickled-object", "saved-object", "release-file-as-osrbench", "bad-seed", "bad-set")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    return _bad_cases(tmp)


def test_every_bad_case_is_tested(bad_files):
    assert set(CASES) == set(bad_files)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, bad_files, case):
    argv, expect = bad_files[case]
    out = tmp_path / "runs"
    assert cli.main([*argv, "--out", str(out)]) == 2
    line = _err(capsys)
    assert re.search(expect, line), line
    assert not out.exists()


def test_an_osrbench_checkpoint_of_another_method_is_refused(capsys, tmp_path):
    out = tmp_path / "runs"
    assert cli.main(["run", "--method", "softmax", *DIGITS, "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    ckpt = Path(_record(out).dir) / "checkpoint.pt"
    capsys.readouterr()
    ext = tmp_path / "ext"
    assert _evaluate(ext, "arpl", "osrbench", ckpt) == 2
    assert "a checkpoint of method 'softmax', not 'arpl'" in _err(capsys)
    assert _evaluate(ext, "softmax", "arpl-release", ckpt) == 2
    assert "an osrbench checkpoint.pt, not a arpl-release file: use --layout osrbench" in _err(capsys)
    assert not ext.exists()


def test_the_record_and_checkpoint_say_external(tmp_path, capsys):
    net_path, crit_path, _, _ = arpl_files(tmp_path, abn=True)
    out = tmp_path / "runs"
    assert _evaluate(out, "arpl-cs", "arpl-release", net_path, crit_path) == 0
    rec = _record(out)
    doc = json.loads((Path(rec.dir) / "result.json").read_text())
    assert doc["external_weights"]["layout"] == "arpl-release"
    from osrbench import checkpoints

    ckpt = checkpoints.read(Path(rec.dir) / "checkpoint.pt")
    assert ckpt["external_weights"] == doc["external_weights"]
    assert ckpt["epoch"] == rec.epochs and ckpt["history"] == []
    assert ckpt["identity"] == rec.identity.to_json()


def test_evaluate_applies_post_hoc_scorers_to_release_weights(capsys, tmp_path):
    """DIAS release weights scored with MLS and Mahalanobis right away: the MLS scorer equals the
    maximum of the stored logits, and the scores are stored bound to the external record."""
    path, _ = dias_file(tmp_path)
    out = tmp_path / "runs"
    assert _evaluate(out, "dias", "dias-release", path, extra=("--scorer", "mls,mahalanobis")) == 0
    text = capsys.readouterr().out
    rec = _record(out)
    ph = records.read_posthoc(rec.dir, rec)
    scores = records.read_scores(rec.dir, rec)
    assert ph.names == ["mls", "mahalanobis"]
    assert np.array_equal(ph.known["mls"], scores.known_logits.max(1))
    auroc = ph.metrics("mahalanobis", scores)["auroc"]
    assert "post-hoc scorers" in text and f"{100 * auroc:.2f}" in text
