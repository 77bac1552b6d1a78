"""Backbones (``--set backbone=resnet50|vit_b16``, ``backbone_weights``) and ``evaluate --layout mls-release``.

ResNet-50 and ViT-B/16 run at random init on the conformance suite's toy problem at 32 px (48
training images, one step per epoch): the sizes are what keeps them fast on two CPU cores. The
weights files are written by the tests, in torchvision's, timm's and MoCo's key layouts; the MLS
release checkpoint in its own (``module.`` keys, plain BNs, the unused ``bn10``, fc without bias),
as ``pretrained_weights/tinyimagenet_<i>.pth`` holds it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from osrbench import cli, engine, layouts, plugins, records, testing
from osrbench.models import Classifier32, backbones
from osrbench.models.backbones import BackboneNet, load_weights, make_backbone, make_network, timm_vit_to_torchvision

TOY = testing.TOY_DATASET
SIZE = 32
RUN_SIZE = 16  # the runs: ViT-B/16 sees one patch (and its class token), ResNet-50 ends at 1x1
K = 6  # known classes of the toy's split table (mnist's)
SETS = {"image_size": RUN_SIZE, "batch_size": 48}  # 48 training images: one step per epoch


@pytest.fixture
def toy(monkeypatch):
    """The conformance suite's toy problem registered as a dataset, for the command line."""
    reg = plugins.get()
    monkeypatch.setitem(reg.datasets, TOY, testing.toy_dataset_spec())
    monkeypatch.setitem(reg.origin, f"dataset:{TOY}", "osrbench")
    return reg


def _run(out: Path, method: str, *sets: str) -> int:
    return cli.main(["run", "--method", method, "--dataset", TOY, "--device", "cpu", "--epochs", "1", "--quiet",
                     "--out", str(out), *(a for k, v in SETS.items() for a in ("--set", f"{k}={v}")), *sets])


def _record(out: Path) -> records.Record:
    (path,) = list(out.rglob(records.RESULT))
    return records.read_record(path)


# ------------------------------------------------------------------------------ the factory


def test_classifier32_is_built_exactly_as_before():
    torch.manual_seed(3)
    a = make_network("classifier32", 5, in_channels=3, image_size=32)
    torch.manual_seed(3)
    b = Classifier32(5, in_channels=3)
    assert type(a) is Classifier32
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.manual_seed(3)  # and it leaves the global RNG where Classifier32 leaves it
    make_network("classifier32", 5)
    after_a = torch.randn(4)
    torch.manual_seed(3)
    Classifier32(5)
    assert torch.equal(after_a, torch.randn(4))


@pytest.mark.parametrize("name, dim", [("resnet50", 2048), ("vit_b16", 768)])
def test_backbone_features_and_head(name, dim):
    torch.manual_seed(0)
    net = make_network(name, 4, image_size=SIZE)
    assert isinstance(net, BackboneNet) and net.feat_dim == dim and net.fc.weight.shape == (4, dim)
    assert backbones.FEATURE_DIMS[name] == dim
    net.eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        f = net.pooled(x)
        assert f.shape == (2, dim)
        assert torch.equal(net(x), net.fc(f))
        grey = net.pooled(x[:, :1])  # grey replicated to three channels
        assert torch.equal(grey, net.pooled(x[:, :1].expand(-1, 3, -1, -1)))
    assert not any(k.startswith(("fc.", "heads.")) for k in net.features_net.state_dict())
    with pytest.raises(ValueError, match="one BN branch"):
        net.pooled(x, 1)


def test_resnet50_extractor_is_torchvisions_without_fc():
    import torchvision

    torch.manual_seed(1)
    ext, dim = make_backbone("resnet50")
    torch.manual_seed(1)
    ref = torchvision.models.resnet50(zero_init_residual=True)  # timm's zero_init_last
    ref_state = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert dim == 2048 and list(ext.state_dict()) == list(ref_state)
    ext.eval(), ref.eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pooled = torch.flatten(ref.avgpool(ref.layer4(ref.layer3(ref.layer2(ref.layer1(
            ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))), 1)
        assert torch.equal(ext(x), pooled)


def test_bad_names_and_sizes_are_one_line():
    with pytest.raises(backbones.BackboneError, match=r"unknown backbone 'resnet5' \(valid: classifier32, resnet50"):
        make_network("resnet5", 3)
    with pytest.raises(backbones.BackboneError, match="multiple of 16.*got 40"):
        make_network("vit_b16", 3, image_size=40)
    with pytest.raises(backbones.BackboneError, match="classifier32 trains from scratch"):
        make_network("classifier32", 3, weights="x.pth")


# ------------------------------------------------------------------------------ weights files
# ResNet-50 and ViT-B/16 files are 100 and 350 MB: each is built and written once per module.


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def resnet_state():
    """A torchvision ResNet-50 state dict with its 1000-way fc (what torchvision and timm save)."""
    import torchvision

    torch.manual_seed(7)
    return torchvision.models.resnet50().state_dict()


@pytest.fixture(scope="module")
def resnet_file(files, resnet_state):
    path = files / "resnet50.pth"
    torch.save(resnet_state, path)
    return path


@pytest.fixture(scope="module")
def resnet_ext():
    """One extractor for the loading tests (a strict load overwrites every tensor of it)."""
    return make_backbone("resnet50")[0]


def _body(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _equal_to(ext: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    mine = ext.state_dict()
    return all(torch.equal(mine[k], state[k]) for k in mine)


def test_resnet50_torchvision_file_loads_and_its_head_is_dropped_and_reported(resnet_file, resnet_state, resnet_ext):
    info = load_weights("resnet50", resnet_ext, resnet_file)
    assert _equal_to(resnet_ext, resnet_state)
    assert info["format"] == "torchvision" and list(info["dropped"]) == ["fc.*"]


def test_a_head_less_file_loads_with_nothing_dropped(files, resnet_state, resnet_ext):
    body = {k: v - 1 for k, v in _body(resnet_state).items()}
    path = files / "headless.pth"
    torch.save({"state_dict": body}, path)  # wrapped, as training scripts save
    info = load_weights("resnet50", resnet_ext, path)
    assert _equal_to(resnet_ext, body) and info["dropped"] == {} and info["notes"] == ["read the file's 'state_dict' entry"]


def test_resnet50_moco_places_file_as_the_mls_release_reads_it(files, resnet_state, resnet_ext):
    """``models/model_utils.py``: ``torch.load(places_moco_path)`` is the state dict, ``module.`` stripped,
    the MoCo MLP head ``fc.0`` (2048x2048) / ``fc.2`` (128x2048) in place of fc."""
    body = {k: v + 1 for k, v in _body(resnet_state).items()}  # other values than the other tests load
    moco = {f"module.{k}": v for k, v in body.items()}
    moco.update({"module.fc.0.weight": torch.randn(2048, 2048), "module.fc.0.bias": torch.randn(2048),
                 "module.fc.2.weight": torch.randn(128, 2048), "module.fc.2.bias": torch.randn(128)})
    path = files / "moco_v2_places.pth"
    torch.save(moco, path)
    info = load_weights("resnet50", resnet_ext, path)
    assert _equal_to(resnet_ext, body) and info["format"] == "moco" and "fc.*" in info["dropped"]


def test_moco_v2_checkpoint_reads_the_query_encoder(files, resnet_state, resnet_ext):
    body = {k: v + 2 for k, v in _body(resnet_state).items()}
    sd = {f"module.encoder_q.{k}": v for k, v in body.items()}
    sd.update({f"module.encoder_k.{k}": v + 1 for k, v in list(body.items())[:3]})
    sd.update({"module.encoder_q.fc.0.weight": torch.randn(2048, 2048), "module.encoder_q.fc.0.bias": torch.randn(2048),
               "module.encoder_q.fc.2.weight": torch.randn(128, 2048), "module.encoder_q.fc.2.bias": torch.randn(128),
               "module.queue": torch.randn(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    path = files / "moco_v2_800ep_pretrain.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": sd}, path)
    info = load_weights("resnet50", resnet_ext, path)
    assert _equal_to(resnet_ext, body) and info["format"] == "moco"
    assert any("encoder_k" in k for k in info["dropped"]) and "fc.*" in info["dropped"]


#: timm's ``VisionTransformer`` names of one block's tensors -> torchvision's (timm/models/vision_transformer.py:
#: Block.norm1, Attention.qkv/proj, Block.norm2, Mlp.fc1/fc2), written out here independently of the module's map.
TIMM_BLOCK = {
    "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
    "attn.qkv.weight": "self_attention.in_proj_weight", "attn.qkv.bias": "self_attention.in_proj_bias",
    "attn.proj.weight": "self_attention.out_proj.weight", "attn.proj.bias": "self_attention.out_proj.bias",
    "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.0.weight", "mlp.fc1.bias": "mlp.0.bias",
    "mlp.fc2.weight": "mlp.3.weight", "mlp.fc2.bias": "mlp.3.bias",
}


@pytest.fixture(scope="module")
def vit_224():
    """A torchvision ViT-B/16 state dict at 224 px (a 14x14 patch grid), with its 1000-way head."""
    import torchvision

    torch.manual_seed(5)
    return torchvision.models.vit_b_16().state_dict()


@pytest.fixture(scope="module")
def vit_timm_file(files, vit_224):
    """``vit_224`` saved in timm's key layout."""
    tv = vit_224
    timm = {"cls_token": tv["class_token"], "pos_embed": tv["encoder.pos_embedding"],
            "patch_embed.proj.weight": tv["conv_proj.weight"], "patch_embed.proj.bias": tv["conv_proj.bias"],
            "norm.weight": tv["encoder.ln.weight"], "norm.bias": tv["encoder.ln.bias"],
            "head.weight": tv["heads.head.weight"], "head.bias": tv["heads.head.bias"]}
    for i in range(12):
        for t, v in TIMM_BLOCK.items():
            timm[f"blocks.{i}.{t}"] = tv[f"encoder.layers.encoder_layer_{i}.{v}"]
    assert len(timm) == len(tv)  # every tensor of the model, once
    path = files / "vit_timm.pth"
    torch.save(timm, path)
    return path


def test_vit_timm_file_at_224_loads_through_the_key_map_resized_as_torchvision_does(vit_timm_file, vit_224):
    from torchvision.models.vision_transformer import interpolate_embeddings

    ext, _ = make_backbone("vit_b16", image_size=SIZE)
    info = load_weights("vit_b16", ext, vit_timm_file, SIZE)
    assert info["format"] == "timm" and list(info["dropped"]) == ["head.*"] and "14x14 to a 2x2" in info["notes"][0]
    pos = "encoder.pos_embedding"
    want = interpolate_embeddings(SIZE, 16, {pos: vit_224[pos]})[pos]
    got = ext.state_dict()
    assert got[pos].shape == (1, 5, 768) and torch.equal(got[pos], want)
    assert torch.equal(got[pos][:, :1], vit_224[pos][:, :1])  # the class token's is kept
    assert all(torch.equal(got[k], vit_224[k]) for k in got if k != pos)


def test_vit_timm_model_gives_the_same_features_as_the_loaded_torchvision_one(tmp_path):
    """Against timm itself (when installed): the mapped file gives timm's own pre-logits features."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(8)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10, img_size=SIZE)
    path = tmp_path / "timm.pth"
    torch.save(model.state_dict(), path)
    ext, _ = make_backbone("vit_b16", image_size=SIZE)
    load_weights("vit_b16", ext, path, SIZE)
    model.eval(), ext.eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(ext(x), want, atol=1e-5, rtol=1e-5)
    assert set(timm_vit_to_torchvision(model.state_dict())) - {"head.weight", "head.bias"} == set(ext.state_dict())


def test_timm_resnet50_keys_equal_torchvisions(tmp_path, resnet_ext):
    timm = pytest.importorskip("timm")
    torch.manual_seed(9)
    model = timm.create_model("resnet50", pretrained=False, num_classes=7)
    path = tmp_path / "timm_r50.pth"
    torch.save(model.state_dict(), path)
    load_weights("resnet50", resnet_ext, path)
    model.eval(), resnet_ext.eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(resnet_ext(x), want, atol=1e-5)


def test_a_mismatched_or_unreadable_file_is_one_line(files, resnet_state, resnet_ext):
    extra = files / "extra.pth"
    torch.save({**resnet_state, "extra_key": torch.zeros(1)}, extra)
    with pytest.raises(layouts.LayoutError) as info:
        load_weights("resnet50", resnet_ext, extra)
    assert "\n" not in str(info.value) and "1 unexpected key(s): extra_key" in str(info.value)
    c32 = files / "c32.pth"
    torch.save(Classifier32(3).state_dict(), c32)
    with pytest.raises(layouts.LayoutError, match=r"resnet50\) does not fit: 317 missing key\(s\): bn1.weight.*; "
                                                   r"53 unexpected key\(s\): conv2.weight.*conv1.weight \[64, 3, 3, 3\]"):
        load_weights("resnet50", resnet_ext, c32)
    wide = files / "wide.pth"
    torch.save({**resnet_state, "conv1.weight": torch.zeros(64, 3, 5, 5)}, wide)
    with pytest.raises(layouts.LayoutError, match=r"shape mismatch\(es\): conv1.weight \[64, 3, 5, 5\]"):
        load_weights("resnet50", resnet_ext, wide)
    junk = files / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(layouts.LayoutError, match="not a weights file torch.load"):
        load_weights("resnet50", resnet_ext, junk)
    with pytest.raises(layouts.LayoutError, match="no such file"):
        backbones.pin_weights_file({"backbone_weights": str(files / "missing.pth")})


# ------------------------------------------------------------------------------ runs


def test_resnet50_run_records_and_hashes_its_weights_and_scores_features(toy, tmp_path, capsys, resnet_file):
    path = Path(shutil.copy(resnet_file, tmp_path / resnet_file.name))
    out = tmp_path / "runs"
    assert _run(out, "softmax", "--set", "backbone=resnet50", "--set", f"backbone_weights={path}") == 0
    rec = _record(out)
    assert rec.config["backbone"] == "resnet50" and rec.config["backbone_weights"] == str(path.resolve())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec.config["backbone_weights_file"] == {"name": path.name, "sha256": digest}
    assert rec.adaptations["backbone_weights"]["format"] == "torchvision"
    assert 0.0 <= rec.metrics["auroc"] <= 1.0
    # other weights at the same path: another config hash and another run folder
    plan_a = engine.plan(engine.RunRequest("softmax", TOY, epochs=1, out=out,
                                           overrides={**SETS, "backbone": "resnet50", "backbone_weights": str(path)}))
    assert plan_a.config_hash == rec.config_hash
    with open(path, "ab") as fh:  # the same file name and path, other bytes
        fh.write(b"\0")
    plan_b = engine.plan(engine.RunRequest("softmax", TOY, epochs=1, out=out,
                                           overrides={**SETS, "backbone": "resnet50", "backbone_weights": str(path)}))
    assert plan_b.config_hash != plan_a.config_hash and plan_b.dir != plan_a.dir
    # a post-hoc scorer that needs features, on the run rebuilt from its checkpoint
    capsys.readouterr()
    assert cli.main(["score", "--runs", str(out), "--scorer", "knn", "--no-tune"]) == 0
    assert "knn" in capsys.readouterr().out


def test_vit_run_and_evaluate_of_its_checkpoint(toy, tmp_path, capsys):
    out = tmp_path / "runs"
    assert _run(out, "arpl", "--set", "backbone=vit_b16", "--set", "momentum=0") == 0  # no momentum: half the checkpoint
    rec = _record(out)
    assert rec.config["backbone"] == "vit_b16" and "backbone_weights_file" not in rec.config
    ckpt = next(out.rglob("checkpoint.pt"))
    assert cli.main(["evaluate", "--method", "arpl", "--dataset", TOY, "--device", "cpu", "--layout", "osrbench",
                     "--weights", str(ckpt), "--out", str(tmp_path / "ext"), "--set", f"image_size={RUN_SIZE}",
                     "--set", "batch_size=48", "--set", "epochs=1", "--set", "backbone=vit_b16", "--set", "momentum=0",
                     "--scorer", "mahalanobis"]) == 0
    ext = _record(tmp_path / "ext")
    assert ext.external_weights["layout"] == "osrbench"
    assert ext.metrics["auroc"] == rec.metrics["auroc"]


def test_bad_backbone_settings_are_one_line_before_anything_is_written(toy, tmp_path, capsys):
    assert _run(tmp_path / "runs", "softmax", "--set", "backbone=resnet50",
                "--set", f"backbone_weights={tmp_path / 'nope.pth'}") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope.pth: no such file" in err
    assert _run(tmp_path / "runs", "softmax", "--set", f"backbone_weights={tmp_path / 'nope.pth'}") == 2
    assert "backbone_weights is for backbone resnet50 or vit_b16; this run's backbone classifier32" in capsys.readouterr().err
    assert _run(tmp_path / "runs", "cac", "--set", "backbone=vit_b16", "--set", "image_size=24") == 2
    assert "vit_b16 needs an image size that is a multiple of 16" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused when planned: nothing read, nothing written


def test_methods_without_a_backbone_refuse_it_in_one_line(toy, tmp_path, capsys):
    assert _run(tmp_path / "runs", "dias", "--set", "backbone=resnet50") == 2
    assert "unknown config key 'backbone' for method 'dias'" in capsys.readouterr().err
    assert _run(tmp_path / "runs", "arpl-cs", "--set", "backbone=resnet50") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "arpl-cs trains the two-branch-BN classifier32 only" in err


# ------------------------------------------------------------------------------ evaluate --layout mls-release


class ReleaseVGG32(nn.Module):
    """The MLS release's ``models/classifier32.py`` module structure: conv1..9, bn1..bn10 (bn10 unused),
    ``fc = Linear(feat_dim, K, bias=False)``."""

    def __init__(self, k: int, feat_dim: int = 128) -> None:
        super().__init__()
        widths = [(3, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2),
                  (128, 128, 1), (128, 128, 1), (128, feat_dim, 2)]
        for i, (cin, cout, stride) in enumerate(widths, 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, stride, 1, bias=False))
        for i, c in enumerate([64, 64, 128, 128, 128, 128, 128, 128, feat_dim, 128], 1):
            setattr(self, f"bn{i}", nn.BatchNorm2d(c))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(feat_dim, k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 10):
            x = nn.functional.leaky_relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)), 0.2)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _mls_checkpoint(path: Path, k: int = K, feat_dim: int = 128) -> ReleaseVGG32:
    torch.manual_seed(21)
    net = ReleaseVGG32(k, feat_dim)
    for m in net.modules():  # trained-looking BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(1000)
    torch.save(nn.DataParallel(net).state_dict(), path)  # what the release saves: 'module.' keys
    return net


def test_mls_release_checkpoint_evaluates_to_the_release_networks_logits(toy, tmp_path, capsys):
    path = tmp_path / "tinyimagenet_0.pth"
    net = _mls_checkpoint(path)
    keys = list(torch.load(path, weights_only=True))
    assert keys[0] == "module.conv1.weight" and "module.bn10.running_var" in keys and keys[-1] == "module.fc.weight"
    out = tmp_path / "ext"
    assert cli.main(["evaluate", "--method", "softmax", "--dataset", TOY, "--device", "cpu", "--layout", "mls-release",
                     "--weights", str(path), "--out", str(out), "--set", "score=mls"]) == 0
    rec = _record(out)
    assert rec.external_weights["layout"] == "mls-release"
    assert list(rec.external_weights["dropped"]) == ["module.bn10.*"]  # declared, never used by forward
    scores = records.read_scores(out.rglob(records.RESULT).__next__().parent, rec)
    data = testing.toy_dataset_spec().load(None, engine.plan(engine.RunRequest("softmax", TOY)).split, 8)
    net.eval()
    with torch.no_grad():
        z = net(data.known_x.float() / 255)
    assert torch.allclose(torch.from_numpy(scores.known_logits).float(), z, atol=1e-5)
    assert torch.allclose(torch.from_numpy(scores.known["score"]).float(), z.max(1).values, atol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("feat_dim", r"shape mismatch\(es\): conv9.weight \[64, 128, 3, 3\]"),
    ("criterion", "hold an ARPL criterion"),
    ("backbone", "this run's backbone is resnet50"),
])
def test_mls_release_bad_files_are_one_line(toy, tmp_path, capsys, case, message):
    path = tmp_path / "tinyimagenet_1.pth"
    _mls_checkpoint(path, feat_dim=64 if case == "feat_dim" else 128)
    if case == "criterion":
        state = torch.load(path, weights_only=True)
        torch.save({**state, "points": torch.zeros(K, 128), "radius": torch.zeros(1)}, path)
    extra = ("--set", "backbone=resnet50", "--set", f"image_size={SIZE}") if case == "backbone" else ()
    assert cli.main(["evaluate", "--method", "softmax", "--dataset", TOY, "--device", "cpu", "--layout", "mls-release",
                     "--weights", str(path), "--out", str(tmp_path / "ext"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(message, err), err


# ------------------------------------------------------------------------------ conformance

#: The suite's checks with a backbone set: every contract but ``graphs``, whose replay promises are the
#: method's step code, unchanged by the network (it replays every step eagerly: ~30 s with ResNet-50), and
#: ``register`` / ``spec`` / ``fit``, which do not build a network.
BACKBONE_CHECKS = ("train", "predict", "sign", "determinism", "state", "features", "engine")


@pytest.mark.parametrize("check", BACKBONE_CHECKS)
@pytest.mark.parametrize("method", ["softmax", "arpl"])
def test_methods_with_a_resnet50_backbone_conform(method, check):
    # resnet50 at the toy's 8 px (the cheapest backbone setting: ViT needs a multiple of 16); lr 0.01: at the
    # default 0.1 ARPL's distances over 2048-d features do not learn the toy in its 12 steps
    assert testing.run_check(method, check, overrides={"backbone": "resnet50", "lr": 0.01}).ok


# ------------------------------------------------------------------------------ every method with a backbone


def _session(method: str, **overrides):
    from osrbench import config as configmod
    from osrbench import protocols, session

    reg = plugins.get()
    spec, ds = reg.method(method), testing.toy_dataset_spec()
    split = protocols.get_split(ds, "auroc", 0)
    _, cfg = configmod.resolve(spec, ds, None, 1, {**SETS, **overrides})
    data = ds.load(None, split, cfg["image_size"])
    return session.open_session(spec, cfg, data, num_classes=split.num_known, dataset=ds.name,
                                device=torch.device("cpu"), seed=0), data


@pytest.mark.parametrize("method, points", [("softmax", None), ("openmax", None), ("arpl", (K, 2048)),
                                            ("gcpl", (K, 2048)), ("rpl", (K, 2048)), ("cac", None)])
def test_every_backbone_method_puts_its_head_on_the_features(method, points):
    s, data = _session(method, backbone="resnet50", lr=0.01)  # ARPL's 2048-d distances overflow at 0.1
    m = s.method
    x = data.train_x[:8].float() / 255
    assert all(torch.isfinite(v) for v in m.train_step(m.phases[0], x, data.train_y[:8]).values())
    if points:
        assert tuple(m.rp.points.shape) == points  # the points live in the backbone's feature space
    images = data.known_x[:4].float() / 255
    with torch.no_grad():
        f = m.features(images)
        pred = m.predict(images)
        assert f.penultimate.shape == (4, 2048) and torch.isfinite(f.logits).all()
        assert torch.allclose(m.head(f.penultimate), f.logits) and torch.allclose(f.logits.double(), pred.logits.double())


def test_cac_anchored_layer_on_a_backbone_and_its_release_encoder_unchanged():
    from osrbench_cac.network import BackboneOpenSetClassifier, OpenSetClassifier

    s, _ = _session("cac", backbone="resnet50")
    net = s.method.net
    assert isinstance(net, BackboneOpenSetClassifier) and net.classify.weight.shape == (K, 2048)
    assert torch.equal(net.classify.bias, torch.zeros(K)) and 0.005 < float(net.classify.weight.detach().std()) < 0.015
    assert "backbone" in s.method.adaptations()
    assert type(_session("cac")[0].method.net) is OpenSetClassifier  # the default: the release's encoder


def test_arpl_cs_mls_release_gan_is_the_64_px_pair_for_any_size_of_64_and_above():
    """The MLS release's osr.py 163-168: Generator/Discriminator (64 px) when image_size >= 64; the fakes reach D
    and the classifier at 64 px while the real batch stays at the run's size (train_cs resizes nothing)."""
    s, data = _session("arpl-cs", gan_mode="mls-release", image_size=72, batch_size=8)
    m = s.method
    fake = m.G(m.noise(2))
    assert fake.shape == (2, 3, 64, 64) and m.gan_mode == "mls-release"
    x = data.train_x[:8].float() / 255
    assert x.shape[-1] == 72
    losses = m.train_step("cs", x, data.train_y[:8])
    assert all(torch.isfinite(v) for v in losses.values())
    assert m.adaptations()["gan_image_size"] == [64, 64]
    small, _ = _session("arpl-cs", gan_mode="mls-release", image_size=48, batch_size=8)
    assert small.method.G(small.method.noise(1)).shape[-1] == 32  # Generator32 below 64 px
    same, _ = _session("arpl-cs", gan_mode="mls-release", image_size=32, batch_size=8)
    ref, _ = _session("arpl-cs", gan_mode="reference", image_size=32, batch_size=8)
    assert same.method.gan_mode == "reference" and "gan_mode" not in same.method.adaptations()
    a, b = same.method.state_dict(), ref.method.state_dict()  # the same networks, drawn the same
    assert all(torch.equal(a[n][k], b[n][k]) for n in ("G", "D") for k in a[n])
