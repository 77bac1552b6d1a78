"""The ImageNet SSB as the MLS release runs it (``methods/tests/openset_test_imagenet.py``): a pretrained
ImageNet-1K classifier, not trained here, scored on ImageNet-1K val (known) against the Easy / Hard
ImageNet-21K-P classes with the model's own test transform (timm ``resnet50``: Resize(256, bicubic) +
CenterCrop(224) + ImageNet mean / std), read through ``osrbench evaluate --layout torchvision``.

The transform is held pixel for pixel against torchvision's transforms on PIL images (the release's
``get_imagenet_standard_transform``); the end-to-end test writes a stand-in of the ImageNet trees (1000
class folders, a few images, the SSB's wnid folders) and a random-init ResNet-50 classifier in
torchvision's key layout, and checks that the record's logits are torchvision's ``resnet50`` forward on
the release's transform of the same files, at 32 px."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from osrbench import cli, plugins, records, registry
from osrbench import config as configmod
from osrbench.data import feed
from osrbench.data.stream import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, to_input
from osrbench.layouts import LayoutError
from osrbench.metrics import auroc
from osrbench.models import backbones
from osrbench.testing.standins import picture

transforms = pytest.importorskip("torchvision.transforms")
BICUBIC, BILINEAR = transforms.InterpolationMode.BICUBIC, transforms.InterpolationMode.BILINEAR


def release_transform(size: int, crop_pct: float = 0.875, interpolation=BICUBIC):
    """The release's ``get_imagenet_standard_transform`` (openset_test_imagenet.py), verbatim."""
    return transforms.Compose([
        transforms.Resize(int(size / crop_pct), interpolation),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(mean=torch.tensor(IMAGENET_MEAN), std=torch.tensor(IMAGENET_STD)),
    ])


def _pil(path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")  # torchvision's default_loader


# (h, w): portrait, landscape, square, a shorter side that is already the target (256: kept), odd
# margins whose half rounds to even (289 - 224 = 65: offset round(32.5) = 32), and grey.
SIZES = [(300, 231), (187, 402), (97, 97), (256, 311), (289, 256)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    paths = []
    for i, (h, w) in enumerate(SIZES):
        p = root / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(picture(h, w, i)).save(p)
        paths.append(str(p))
    grey = root / "grey.jpg"
    Image.fromarray(picture(203, 150, 9)[..., 0]).save(grey)
    return [*paths, str(grey)]


@pytest.mark.parametrize("size", [224, 32])
def test_crop_pct_transform_equals_the_releases(images, size):
    for path in images:
        want = np.asarray(transforms.CenterCrop(size)(transforms.Resize(int(size / 0.875), BICUBIC)(_pil(path))))
        got = feed.test_image(path, size, 0.875, "bicubic")
        assert got.dtype == torch.uint8 and tuple(got.shape) == (3, size, size)
        assert np.array_equal(got.permute(1, 2, 0).numpy(), want), path
        # the whole transform, ToTensor and Normalize included, as the network receives it
        assert torch.equal(to_input(got[None], "imagenet")[0], release_transform(size)(_pil(path))), path
    # torchvision's own classifiers: the same crop, bilinear (the script's *_torch branch)
    want = transforms.CenterCrop(size)(transforms.Resize(int(size / 0.875), BILINEAR)(_pil(images[0])))
    assert np.array_equal(feed.test_image(images[0], size, 0.875, "bilinear").permute(1, 2, 0).numpy(), np.asarray(want))


def test_default_test_transform_is_unchanged(images):
    for path in images:
        squash = np.asarray(transforms.Resize((48, 48), BILINEAR)(_pil(path)))
        assert np.array_equal(feed.test_image(path, 48).permute(1, 2, 0).numpy(), squash)
        assert torch.equal(feed.test_image(path, 48), feed.resize(feed.decode(path), 48))
        bicubic = np.asarray(transforms.Resize((48, 48), BICUBIC)(_pil(path)))
        assert np.array_equal(feed.test_image(path, 48, 0.0, "bicubic").permute(1, 2, 0).numpy(), bicubic)
    # ImageSet reads the same images, the default transform and the crop alike
    assert torch.equal(feed.ImageSet(images, 40, workers=0)[:], torch.stack([feed.test_image(p, 40) for p in images]))
    cropped = feed.ImageSet(images, 40, workers=2, crop_pct=0.875, interpolation="bicubic")
    assert torch.equal(torch.cat(list(cropped.split(4))),
                       torch.stack([feed.test_image(p, 40, 0.875, "bicubic") for p in images]))


def test_shorter_side_and_center_crop_semantics():
    x = torch.arange(3 * 5 * 9, dtype=torch.uint8).view(3, 5, 9)
    assert feed.resize_shorter(x, 5) is x  # shorter side already the size: kept, as torchvision
    assert tuple(feed.resize_shorter(x, 7).shape) == (3, 7, int(7 * 9 / 5))  # 12: truncated, not rounded
    assert tuple(feed.resize_shorter(x.transpose(1, 2), 7).shape) == (3, 12, 7)
    assert torch.equal(feed.center_crop(x, 4), x[:, 0:4, 2:6])  # (5-4)/2 = 0.5 -> 0, (9-4)/2 = 2.5 -> 2
    assert torch.equal(feed.center_crop(x, 3), x[:, 1:4, 3:6])
    with pytest.raises(ValueError, match="smaller than"):
        feed.center_crop(x, 6)


def test_imagenet_normalisation_equals_torchvision_and_cifar_is_unchanged():
    x = torch.randint(0, 256, (4, 3, 7, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for name, (mean, std) in (("imagenet", (IMAGENET_MEAN, IMAGENET_STD)), ("cifar", (CIFAR_MEAN, CIFAR_STD))):
        norm = transforms.Normalize(mean=torch.tensor(mean), std=torch.tensor(std))
        want = torch.stack([norm(transforms.ToTensor()(Image.fromarray(i.permute(1, 2, 0).numpy()))) for i in x])
        assert torch.equal(to_input(x, name), want), name
        assert torch.equal(feed.inputs(x, name), want), name  # the file feed's per-image path
        out = torch.empty(x.shape)
        assert torch.equal(to_input(x, name, out=out), want) and torch.equal(out, want)
    with pytest.raises(ValueError, match="normalize must be one of none, cifar, imagenet"):
        to_input(x, "places")


def test_config_keys_and_recipe():
    reg = plugins.get()
    spec, inet, cifar = reg.method("softmax"), reg.dataset("imagenet-ssb"), reg.dataset("cifar10")
    recipe, cfg = configmod.resolve(spec, inet, recipe="imagenet-eval")
    assert {k: cfg[k] for k in ("backbone", "image_size", "normalize", "crop_pct", "test_interpolation", "score")} == {
        "backbone": "resnet50", "image_size": 224, "normalize": "imagenet", "crop_pct": 0.875,
        "test_interpolation": "bicubic", "score": "mls"}
    _, plain = configmod.resolve(spec, cifar)
    assert (plain["crop_pct"], plain["test_interpolation"]) == (0.0, "bilinear")
    # at their defaults the new keys leave the config hash of every earlier run as it was
    older = {k: v for k, v in plain.items() if k not in configmod.LATER_KEYS}
    assert configmod.config_hash("softmax", plain) == configmod.config_hash("softmax", older)
    assert configmod.config_hash("softmax", {**plain, "crop_pct": 0.875}) != configmod.config_hash("softmax", plain)
    with pytest.raises(configmod.ConfigError, match="'crop_pct' is the test transform of a dataset read from image "
                                                    "files .* drop crop_pct \\(set by --set\\)"):
        configmod.resolve(spec, cifar, overrides={"crop_pct": 0.875})
    with pytest.raises(configmod.ConfigError, match="crop_pct"):
        configmod.resolve(spec, inet, overrides={"crop_pct": 1.5})
    too_small = r"'crop_pct': 0.01 is out of range \(0 = Resize\(\(S, S\)\), else in \[0.5, 1\]"
    with pytest.raises(configmod.ConfigError, match=too_small):
        configmod.resolve(spec, inet, overrides={"crop_pct": 0.01})
    with pytest.raises(configmod.ConfigError, match="test_interpolation"):
        configmod.resolve(spec, inet, overrides={"test_interpolation": "nearest"})


# ----------------------------------------------------------------------------- end to end

def _tree(root, files):
    """``{folder: [(name, image) or None, ...]}``: class folders, with the images given (None: empty)."""
    for folder, items in files.items():
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in items:
            Image.fromarray(image).save(folder / name, quality=90)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """The MLS release's trees (data/imagenet.py): ImageNet-1K train and val as ImageFolders of the 1000
    sorted wnids (one training image each, never decoded by an evaluation; val images in 4 classes) and
    the ImageNet-21K-P val folders of every Easy and Hard wnid (images in 3 of each: ImageFolder lists
    the rest as empty classes)."""
    root = tmp_path_factory.mktemp("imagenet")
    wnids = [f"n{9000000 + i:08d}" for i in range(1000)]
    tiny = root / "tiny.JPEG"
    Image.fromarray(picture(6, 5, 0)).save(tiny)
    data = tiny.read_bytes()
    for w in wnids:
        (root / "imagenet" / "train" / w).mkdir(parents=True)
        (root / "imagenet" / "train" / w / f"{w}_0.JPEG").write_bytes(data)
        (root / "imagenet" / "val" / w).mkdir(parents=True)
    known = {3: 2, 500: 1, 998: 1, 0: 1}  # class index -> val images
    _tree(root, {root / "imagenet" / "val" / wnids[c]: [(f"v{c}_{j}.JPEG", picture(40 + 7 * j + c % 13, 50 - c % 11, c + j))
                                                       for j in range(n)] for c, n in known.items()})
    table = registry.load().named_splits["ssb"]["imagenet"]
    val21k = root / "imagenet21k_resized_new" / "val"
    for diff, seed in (("Easy", 100), ("Hard", 200)):
        wn = table.unknown[diff]
        for w in wn:
            (val21k / w).mkdir(parents=True, exist_ok=True)
        _tree(root, {val21k / w: [(f"{w}_{j}.JPEG", picture(33 + 9 * i, 61 - 5 * j, seed + 3 * i + j)) for j in range(2)]
                     for i, w in enumerate(wn[:3])})
    return root, wnids, known


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A ResNet-50 ImageNet classifier at random init in torchvision's key layout (head included), its BN
    running statistics those of a batch of noise (cumulative, one pass), so that its logits vary with
    the image at their own scale."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    net.eval()
    path = tmp_path_factory.mktemp("weights") / "resnet50_in1k.pth"
    torch.save(net.state_dict(), path)
    return net, path


def _evaluate(root, weights, out, split, *extra):
    return cli.main(["evaluate", "--method", "softmax", "--dataset", "imagenet-ssb", "--split", split,
                     "--recipe", "imagenet-eval", "--set", "image_size=32", "--weights", str(weights),
                     "--layout", "torchvision", "--data-root", str(root), "--out", str(out), "--device", "cpu", *extra])


def test_pretrained_resnet50_on_imagenet_ssb_easy_and_hard(imagenet, classifier, tmp_path, capsys):
    root, wnids, known = imagenet
    net, weights = classifier
    out = tmp_path / "runs"
    assert _evaluate(root, weights, out, "easy") == 0
    assert _evaluate(root, weights, out, "hard") == 0
    printed = capsys.readouterr().out
    assert printed.count("layout torchvision (resnet50_in1k.pth)") == 2 and "auroc" in printed and "oscr" in printed

    docs = {json.loads(p.read_text())["split"]: p.parent for p in out.rglob(records.RESULT)}
    assert set(docs) == {0, 1}  # easy, hard
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    table = registry.load().named_splits["ssb"]["imagenet"]
    transform = release_transform(32)  # Resize(int(32 / 0.875) = 36, bicubic) + CenterCrop(32) + Normalize
    torch.set_num_threads(1)  # the run's thread count (config threads: 1)
    for index, diff in ((0, "Easy"), (1, "Hard")):
        folder = docs[index]
        rec = records.read_record(folder)
        assert rec.external_weights["layout"] == "torchvision"
        assert rec.external_weights["files"] == [{"name": weights.name, "sha256": sha}]
        assert rec.config["external_weights"]["sha256"] == [sha]  # the weights are in the config hash
        assert (rec.config["crop_pct"], rec.config["test_interpolation"], rec.config["normalize"]) == (
            0.875, "bicubic", "imagenet")
        assert rec.wall_time_s["train"] == 0.0 and rec.history == ()
        scores = records.read_scores(folder, rec)
        # known: ImageNet val in ImageFolder's order, labelled by the sorted wnid index = the head's row
        val = [(root / "imagenet" / "val" / wnids[c] / f"v{c}_{j}.JPEG", c) for c in sorted(known) for j in range(known[c])]
        assert scores.known_labels.tolist() == [c for _, c in val]
        unknown = sorted((root / "imagenet21k_resized_new" / "val" / w / f"{w}_{j}.JPEG")
                         for w in table.unknown[diff][:3] for j in range(2))
        with torch.no_grad():
            want_known = net(torch.stack([transform(_pil(p)) for p, _ in val])).double().numpy()
            want_unknown = net(torch.stack([transform(_pil(p)) for p in unknown])).double().numpy()
        assert scores.known_logits.shape == (5, 1000) and scores.unknown_logits.shape == (6, 1000)
        assert want_known.std(0).mean() > 0.3  # the logits depend on the image, at their own scale
        np.testing.assert_allclose(scores.known_logits, want_known, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(scores.unknown_logits, want_unknown, rtol=1e-4, atol=1e-4)
        assert (scores.known_pred == want_known.argmax(1)).all()
        # MLS: the maximum logit, scored as the release scores it
        known_mls, unknown_mls = scores.pick("mls")
        np.testing.assert_allclose(known_mls, want_known.max(1), rtol=1e-5, atol=1e-5)
        assert rec.metrics["auroc"] == pytest.approx(auroc(want_known.max(1), want_unknown.max(1)))
    assert records.read_record(docs[0]).metrics["acc"] == records.read_record(docs[1]).metrics["acc"]


def test_torchvision_layout_refusals(imagenet, classifier, tmp_path):
    root, _, _ = imagenet
    net, weights = classifier
    from osrbench import external

    with pytest.raises(LayoutError, match="backbone is classifier32"):  # no recipe, no --set backbone
        external.evaluate(external.EvaluateRequest(
            method="softmax", dataset="imagenet-ssb", weights=(weights,), layout="torchvision", protocol="ssb",
            split=0, overrides={"image_size": 32}, device="cpu", out=tmp_path / "runs", data_root=root))
    # a head of another width, and a file without a head (a backbone_weights file)
    with torch.device("meta"):  # init skipped: the loads fill every weight
        body = backbones.make_network("resnet50", 10, image_size=32)
        body10 = backbones.make_network("resnet50", 1000, image_size=32)
    body10 = body10.to_empty(device="cpu")
    with pytest.raises(LayoutError, match="has 1000 classes; this split has 10 known classes"):
        backbones.load_classifier(body, dict(net.state_dict()))
    # a timm training checkpoint wraps the network: {"state_dict": ..., "epoch": ...}, keys read under it
    wrapped = {f"state_dict.{k}": v for k, v in net.state_dict().items()}
    assert backbones.load_classifier(body10, wrapped)["notes"] == ["read the file's 'state_dict' entry"]
    assert torch.equal(body10.fc.weight, net.fc.weight)
    headless = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    with pytest.raises(LayoutError, match=r"no classifier head \(fc.weight\).*--set backbone_weights"):
        backbones.load_classifier(body, headless)


def test_vit_classifier_in_timm_and_torchvision_names():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):  # torchvision's init of 86M weights costs seconds: random values instead
        ref = torchvision.models.vit_b_16(weights=None, image_size=32, num_classes=7)
    ref = ref.to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in ref.state_dict().values():
            t.copy_(0.05 * torch.randn(t.shape, generator=g))
    tv_state = ref.state_dict()
    # the same weights in timm's names, through the inverse of the host's timm -> torchvision map
    timm_like = {"head." + k[len("heads.head."):]: v for k, v in tv_state.items() if k.startswith("heads.head.")}
    timm_of = backbones.timm_vit_to_torchvision({t: t for t in _timm_names(len(ref.encoder.layers))})  # tv -> timm
    timm_like.update({timm_of[k]: v for k, v in tv_state.items() if not k.startswith("heads.")})
    assert len(timm_like) == len(tv_state) and "blocks.0.attn.qkv.weight" in timm_like
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.device("meta"):  # the host's network with its init skipped: the load fills every weight
        net = backbones.make_network("vit_b16", 7, image_size=32)
    net = net.to_empty(device="cpu").eval()
    for state, fmt in ((tv_state, "torchvision"), (timm_like, "timm")):
        torch.nn.init.zeros_(net.fc.weight)  # each load fills the head again
        assert backbones.load_classifier(net, dict(state))["format"] == fmt
        with torch.no_grad():
            assert torch.equal(net(x), ref(x))


def _timm_names(blocks: int) -> list[str]:
    names = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"]
    for i in range(blocks):
        names += [f"blocks.{i}.{n}" for n in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                              "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                              "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")]
    return names
