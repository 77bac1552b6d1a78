"""The file feed (osrbench.data.feed): decoding, the release's transforms, identical batches for every
method, worker count and resume, and a file-backed run through engine, evaluation and rescore.

The stand-in dataset is ~30 small JPEGs of different sizes written per test (a grey one, a CMYK
one and a PNG among them), cut into a split with ``select_files`` as the SSB readers do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osrbench import config as configmod
from osrbench import engine, plugins, protocols, records, rescore, scoring
from osrbench.data import feed
from osrbench.data.feed import FileStream, ImageSet, decode, resize, test_image
from osrbench.data.imagefiles import OpenSetFiles, select_files
from osrbench.data.randaugment import RandAugmentDraws
from osrbench.data.stream import CIFAR_MEAN, CIFAR_STD, PAD, derive_seed
from osrbench.datasets import DataNotFound, DatasetSpec, OpenSetData
from osrbench.errors import UserError
from osrbench.testing.standins import picture, recording_method, write_cub

S = 32
NAME = "standin-files"
# pytest restores the warning filters per test, so the feed's own filter of this notice is gone here.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")


def _load_release_ops():
    """The release's ops with their draws given, as tests/test_randaugment.py replicates them
    (imported from there, one replica: pytest's importlib mode puts no test folder on sys.path)."""
    import importlib.util

    here = Path(__file__).with_name("test_randaugment.py")
    spec = importlib.util.spec_from_file_location("_randaugment_replica", here)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._release_op


_release_op = _load_release_ops()


def _write(folder: Path, i: int, h: int, w: int) -> str:
    img = Image.fromarray(picture(h, w, i))
    if i % 11 == 3:
        img, path = img.convert("L"), folder / f"{i:03d}.jpg"  # a grey JPEG: RGB by replication
    elif i % 11 == 7:
        img, path = img.convert("CMYK"), folder / f"{i:03d}.jpg"  # CMYK JPEGs exist in ImageNet
    elif i % 11 == 9:
        path = folder / f"{i:03d}.png"  # not a JPEG: PIL decodes it
    else:
        path = folder / f"{i:03d}.jpg"
    kw = {"quality": 85, "subsampling": i % 3} if path.suffix == ".jpg" else {}
    img.save(path, **kw)
    return str(path)


@pytest.fixture
def image_files(tmp_path):
    """10 classes (the mnist table's ids) x (2 train + 1 test) files of sizes from 21 to 60 px."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train, train_y, test, test_y = [], [], [], []
    i = 0
    for c in range(10):
        for part in ("train", "train", "test"):
            h, w = (int(v) for v in rng.integers(21, 61, 2))
            path = _write(folder, i, h, w)
            (train if part == "train" else test).append(path)
            (train_y if part == "train" else test_y).append(c)
            i += 1
    return train, train_y, test, test_y


def _split(image_files, size: int = S, known=(0, 1, 2, 4, 5, 9), unknown=(3, 6, 7, 8)) -> OpenSetFiles:
    return select_files(*image_files, known, unknown, size)


def _stream(data: OpenSetFiles, **kw) -> FileStream:
    args = dict(batch_size=5, seed=3, size=data.image_size, augment="crop_flip", normalize="cifar",
                randaugment=9, randaugment_n=2)
    args.update(kw)
    return FileStream(data.train.paths, data.train_y, **args)


def _all(stream: FileStream, epoch: int = 0, phase: int = 0):
    return [(x.clone(), y.clone()) for x, y in stream.batches(epoch, phase)]


# ------------------------------------------------------------------------------ decode, resize
def test_decode_gives_the_releases_rgb_pixels(image_files):
    """torchvision.io's JPEG decoder (and PIL for the rest) equal PIL's convert('RGB'), the
    release's default_loader, for RGB JPEGs of every chroma subsampling, grey, CMYK and PNG."""
    train, _, test, _ = image_files
    kinds = set()
    for path in train + test:
        with Image.open(path) as img:
            kinds.add((Path(path).suffix, img.mode))
            want = np.asarray(img.convert("RGB"))
        got = decode(path)
        assert got.dtype == torch.uint8 and got.shape == (3, *want.shape[:2])
        assert np.array_equal(got.permute(1, 2, 0).numpy(), want), path
    assert kinds == {(".jpg", "RGB"), (".jpg", "L"), (".jpg", "CMYK"), (".png", "RGB")}


def test_unreadable_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataNotFound, match="cannot decode image .*bad.jpg"):
        decode(str(bad))
    with pytest.raises(DataNotFound, match="cannot read image .*missing.jpg"):
        decode(str(tmp_path / "missing.jpg"))


def test_resize_is_pils_bilinear_resize_as_transforms_resize_makes_it(image_files):
    import torchvision.transforms as T

    for path in image_files[0][:8]:
        img = Image.open(path).convert("RGB")
        for size in (S, 17, 64):
            want = np.asarray(T.Resize((size, size))(img))
            assert np.array_equal(resize(decode(path), size).permute(1, 2, 0).numpy(), want)
    x = decode(image_files[0][0])
    assert resize(x, x.shape[1]).shape == x.shape if x.shape[1] == x.shape[2] else True


def test_one_image_crop_flip_and_inputs_equal_the_streams_batched_ones():
    from osrbench.data.stream import crop_flip, to_input

    x = torch.randint(0, 256, (6, 3, 13, 11), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [8, 8], [0, 8], [3, 5], [8, 1], [4, 4]])
    flips = torch.tensor([True, False, True, False, True, True])
    want = crop_flip(x, offsets, flips)
    got = torch.stack([feed.crop_flip_one(x[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]))
                       for i in range(6)])
    assert torch.equal(got, want)
    assert got[1, :, -PAD:].eq(0).all() and got[1, :, :, -PAD:].eq(0).all()  # offset 8: the padding shows
    for norm in ("none", "cifar"):
        assert torch.equal(feed.inputs(want, norm), to_input(want, norm))
    out = torch.empty(want.shape)
    assert feed.inputs(want, "cifar", out) is out and torch.equal(out, to_input(want, "cifar"))


# ------------------------------------------------------------- the release's pipeline, replicated
class _ReleaseRandAugment:
    """The release's RandAugment.__call__ (data/augmentations/randaugment.py:300-304, MIT): N ops of
    augment_list() applied in turn with val = (M/30)·(max − min) + min, here with the op, sign and
    cutout centre of each image taken from the feed's draws instead of Python's random module."""

    def __init__(self, draws: RandAugmentDraws, pos: int):
        self.draws, self.pos = draws, pos

    def __call__(self, img):
        values = self.draws.signed_values(slice(self.pos, self.pos + 1))[0]
        for j in range(self.draws.num_ops):
            op = self.draws.names[int(self.draws.op[self.pos, j])]
            img = _release_op(img, op, float(values[j]), self.draws.centre[self.pos, j])
        return img


class _CropAt:
    """transforms.RandomCrop(size, padding=4) with its (top, left) given: pad with 0, then crop."""

    def __init__(self, size, top, left):
        self.size, self.top, self.left = size, top, left

    def __call__(self, img):
        import torchvision.transforms.functional as F

        return F.crop(F.pad(img, PAD), self.top, self.left, self.size, self.size)


class _FlipIf:
    def __init__(self, flip):
        self.flip = flip

    def __call__(self, img):
        import torchvision.transforms.functional as F

        return F.hflip(img) if self.flip else img


def _release_train_transform(size, ra, top, left, flip):
    """The release's 'rand-augment' train transform (data/augmentations/__init__.py:99-114, MIT),
    RandAugment inserted first as on line 114, each random op given its draw."""
    import torchvision.transforms as T

    return T.Compose([ra, T.Resize((size, size)), _CropAt(size, top, left), _FlipIf(flip), T.ToTensor(),
                      T.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD)])


def _release_test_transform(size):
    """The release's test transform (data/augmentations/__init__.py:116-120)."""
    import torchvision.transforms as T

    return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD)])


def _release_pass(data: OpenSetFiles, seed: int, epoch: int, phase: int, m: int, n_ops: int, size: int):
    """The pass through the release's transforms, the draws made as the feed documents them."""
    n = len(data.train)
    g = torch.Generator().manual_seed(derive_seed(seed, 0, epoch, phase))
    perm = torch.randperm(n, generator=g)
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    draws = RandAugmentDraws(n, m, "all", g, num_ops=n_ops)
    xs = []
    for pos in range(n):
        img = Image.open(data.train.paths[int(perm[pos])]).convert("RGB")  # default_loader
        t = _release_train_transform(size, _ReleaseRandAugment(draws, pos), int(offsets[pos, 0]),
                                     int(offsets[pos, 1]), bool(flips[pos]))
        xs.append(t(img))
    return torch.stack(xs), data.train_y[perm], draws


def test_batches_equal_the_release_pipeline_pixel_for_pixel(image_files):
    data = _split(image_files)
    got = _all(_stream(data, batch_size=4))
    want_x, want_y, draws = _release_pass(data, seed=3, epoch=0, phase=0, m=9, n_ops=2, size=S)
    assert len(got) == 3 and [len(x) for x, _ in got] == [4, 4, 4]
    assert len(set(draws.op.flatten().tolist())) >= 10  # most ops reached the images
    x = torch.cat([b for b, _ in got])
    assert x.dtype == torch.float32 and x.shape == want_x.shape == (12, 3, S, S)
    assert torch.equal(x, want_x)
    assert torch.equal(torch.cat([y for _, y in got]), want_y)


def test_test_images_equal_the_release_test_transform(image_files):
    from osrbench.data.stream import to_input

    data = _split(image_files, size=24)
    want = torch.stack([_release_test_transform(24)(Image.open(p).convert("RGB")) for p in data.known.paths])
    assert torch.equal(to_input(data.known_x[:], "cifar"), want)
    assert torch.equal(data.known_x[:], torch.stack([test_image(p, 24) for p in data.known.paths]))


# ----------------------------------------------------------------- the contract of the stream
def test_batches_do_not_depend_on_workers_or_batch_size_and_change_with_epoch(image_files):
    data = _split(image_files)
    one = _all(_stream(data, workers=0))
    assert [len(x) for x, _ in one] == [5, 5, 2] and len(_stream(data)) == 3
    for workers in (1, 3):
        again = _all(_stream(data, workers=workers))
        assert all(torch.equal(a, b) and torch.equal(ya, yb) for (a, ya), (b, yb) in zip(one, again))
    whole = _all(_stream(data, batch_size=12, workers=2))
    assert torch.equal(whole[0][0], torch.cat([x for x, _ in one]))
    other = _all(_stream(data, workers=0), epoch=1)
    assert not torch.equal(other[0][0], one[0][0])
    assert not torch.equal(_all(_stream(data, workers=0), phase=1)[0][0], one[0][0])


def test_into_receives_each_full_batch_as_a_graphs_static_input(image_files):
    data = _split(image_files)
    plain = _all(_stream(data))
    buffers = []

    def into(xb):
        assert xb.dtype == torch.uint8 and xb.shape == (5, 3, S, S)
        buffers.append(torch.empty(xb.shape, dtype=torch.float32))
        return buffers[-1]

    fed = [(x, y) for x, y in _stream(data).batches(0, 0, into)]
    assert len(buffers) == 2  # the partial last batch is not written into a static input
    assert fed[0][0] is buffers[0] and fed[1][0] is buffers[1] and fed[2][0] is not None
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, fed))


def test_image_set_reads_like_a_tensor_kept_or_not(image_files):
    data = _split(image_files)
    kept = ImageSet(data.train.paths, S, workers=2, keep=True)
    lazy = ImageSet(data.train.paths, S, workers=0, keep=False)
    assert len(kept) == len(data.train) == 12 and kept.shape == (12, 3, S, S)
    idx = torch.tensor([7, 0, 3])
    assert torch.equal(kept[idx], lazy[idx]) and torch.equal(kept[2:9], lazy[2:9])
    assert torch.equal(lazy[np.array([5])], test_image(data.train.paths[5], S)[None])
    assert torch.equal(lazy[5], kept[5]) and torch.equal(lazy[-1], kept[-1]) and lazy[5].shape == (3, S, S)
    parts = list(lazy.split(5))
    assert [len(p) for p in parts] == [5, 5, 2] and torch.equal(torch.cat(parts), kept[:])
    assert all(torch.equal(a, b) for a, b in zip(kept.split(5), parts))


# ------------------------------------------------------------------- through engine and rescore
@pytest.fixture
def standin(image_files, monkeypatch):
    """The stand-in files registered as a file-backed dataset; the decoded paths are logged."""
    reg = plugins.get()
    reg.datasets[NAME] = DatasetSpec(
        name=NAME, load=lambda root, split, size: select_files(*image_files, split.known, split.unknown, size),
        table="mnist", num_classes=10, image_size=S, augment="crop_flip", files=True)
    reg.origin[f"dataset:{NAME}"] = "osrbench"
    decoded = []
    real = feed.decode
    monkeypatch.setattr(feed, "decode", lambda path: decoded.append(path) or real(path))
    return reg, decoded


SET = {"batch_size": 4, "randaugment": 9, "normalize": "cifar"}


def _req(out, method="softmax", **kw):
    kw.setdefault("epochs", 1)
    return engine.RunRequest(method=method, dataset=NAME, out=out, device="cpu", progress=False,
                             checkpoint_every=1, overrides=dict(SET), **kw)


def test_a_file_backed_run_trains_evaluates_from_the_files_and_rescores(standin, image_files, tmp_path):
    reg, decoded = standin
    rec = engine.run(_req(tmp_path), registry=reg).record
    split = protocols.get_split(reg.dataset(NAME), "auroc", 0)
    data = _split(image_files, known=split.known, unknown=split.unknown)
    assert rec.dataset == NAME and rec.image_shape == (3, S, S) and rec.config["image_size"] == S
    assert rec.counts == {"train": len(data.train), "known": len(data.known), "unknown": len(data.unknown)}
    assert 0.0 <= rec.metrics["auroc"] <= 1.0 and np.isfinite(rec.metrics["oscr"])
    assert set(data.known.paths) | set(data.unknown.paths) <= set(decoded)  # evaluation read the files
    assert decoded.count(data.train.paths[0]) == 1  # one augmented pass, no fit stage for softmax
    stored = records.read_scores(Path(rec.dir), rec)
    again = rescore.scores_from_checkpoint(rec)
    assert np.array_equal(stored.known_logits, again.known_logits)
    assert np.array_equal(stored.unknown["score"], again.unknown["score"])

    # post-hoc scorers read the training and test files through the same test transform: the same
    # scores as from the images decoded up front (features + fit, and tuned input gradients)
    odin = reg.scorer("odin")
    odin = dataclasses.replace(odin, grid={"noise": [odin.params["noise"], 0.0]})  # a short tuning: two candidates
    specs = [reg.scorer("mahalanobis"), odin]
    with rescore.rebuilt(rec) as (s, files, dev):
        from_files = scoring.score_run(specs, s.method, files, dev, "cifar", s.precision, rec.seed, True)
        held = OpenSetData(files.train_x[:], files.train_y, files.known_x[:], files.known_y, files.unknown_x[:],
                           files.unknown_ids)
        from_tensors = scoring.score_run(specs, s.method, held, dev, "cifar", s.precision, rec.seed, True)
    for name in ("mahalanobis", "odin"):
        a, b = from_files[name], from_tensors[name]
        assert a.known.shape == (len(data.known),) and np.isfinite(a.unknown).all()
        assert np.array_equal(a.known, b.known) and np.array_equal(a.unknown, b.unknown), name
    assert from_files["odin"].info["tuned"]


def test_every_method_and_a_resumed_run_see_the_same_file_batches(standin, tmp_path):
    reg, _ = standin
    others = [m for m in ("arpl", "gcpl", "openmax") if m in reg.methods]
    logs = {"softmax": [], "straight": [], "resumed": []}
    recording_method(reg, "rec-softmax", "softmax", logs["softmax"])
    engine.run(_req(tmp_path / "a", "rec-softmax", epochs=2), registry=reg)
    if others:
        recording_method(reg, "rec-other", others[0], logs["straight"])
        engine.run(_req(tmp_path / "b", "rec-other", epochs=2), registry=reg)
        assert [d for _, d in logs["straight"]] == [d for _, d in logs["softmax"]]
    recording_method(reg, "rec-resumed", "softmax", logs["resumed"])
    engine.run(_req(tmp_path / "c", "rec-resumed", epochs=1), registry=reg)
    out = engine.run(_req(tmp_path / "c", "rec-resumed", epochs=2, resume="yes"), registry=reg)
    assert out.resumed_from == 1
    assert len(logs["softmax"]) == 2 * 3 and logs["resumed"] == logs["softmax"]
    straight = engine.run(_req(tmp_path / "a", "rec-softmax", epochs=2), registry=reg).record
    assert out.record.metrics == straight.metrics


def test_the_fit_stage_gets_the_training_files_through_the_test_transform(standin, image_files):
    """Session.fit_batches (OpenMAX's, CAC's, MEDAF's fit stage): every training image once, in file
    order, unaugmented, as the release's test transform makes it, with its label."""
    from osrbench import session
    from osrbench.data.stream import to_input

    reg, _ = standin
    split = protocols.get_split(reg.dataset(NAME), "auroc", 0)
    data = _split(image_files, known=split.known, unknown=split.unknown)
    _, cfg = configmod.resolve(reg.method("softmax"), reg.dataset(NAME), overrides=dict(SET))
    s = session.open_session(reg.method("softmax"), cfg, data, num_classes=6, dataset=NAME,
                             device=torch.device("cpu"), seed=0)
    assert isinstance(s.stream, FileStream) and len(s.stream) == 3 and s.ctx.steps_per_epoch == 3
    assert s.ctx.image_shape == (3, S, S) and s.ctx.train_size == 12
    batches = list(s.fit_batches())
    want = to_input(torch.stack([test_image(p, S) for p in data.train.paths]), "cifar")
    assert torch.equal(torch.cat([x for x, _ in batches]), want)
    assert torch.equal(torch.cat([y for _, y in batches]), data.train_y)


def test_file_backed_datasets_are_exempt_from_the_in_memory_size_limit(standin):
    reg, _ = standin
    big = configmod.MAX_IMAGE_SIZE + 64
    _, cfg = configmod.resolve(reg.method("softmax"), reg.dataset(NAME), overrides={"image_size": big})
    assert cfg["image_size"] == big
    with pytest.raises(configmod.ConfigError, match=f"at most {configmod.MAX_FILE_IMAGE_SIZE} for dataset"):
        configmod.resolve(reg.method("softmax"), reg.dataset(NAME),
                          overrides={"image_size": configmod.MAX_FILE_IMAGE_SIZE + 1})
    with pytest.raises(configmod.ConfigError, match=f"at most {configmod.MAX_IMAGE_SIZE}: every image"):
        configmod.resolve(reg.method("softmax"), reg.dataset("digits"), overrides={"image_size": big})


def test_decode_workers_from_the_environment(monkeypatch):
    monkeypatch.setenv(feed.WORKERS_ENV, "3")
    assert feed.decode_workers() == 3
    for bad in ("many", "-1"):
        monkeypatch.setenv(feed.WORKERS_ENV, bad)
        with pytest.raises(UserError, match=f"OSRBENCH_DECODE_WORKERS='{bad}' must be a number"):
            feed.decode_workers()


def test_a_cub_run_of_the_ssb_protocol_trains_and_evaluates_from_the_files(tmp_path):
    """A softmax run of the mls-ssb recipe (RandAugment N=2, M=30, CIFAR normalisation) on CUB, SSB
    split Easy, at a small size: the CUB reader on CUB_200_2011's layout (200 classes, one training
    and one test image each, written here), the file feed, the one evaluation path, a record."""
    write_cub(tmp_path)
    reg = plugins.get()
    assert reg.dataset("cub").files
    req = engine.RunRequest(method="softmax", dataset="cub", protocol="ssb", split=0, recipe="mls-ssb", epochs=1,
                            overrides={"image_size": 16}, out=tmp_path / "runs", data_root=tmp_path, device="cpu",
                            progress=False)
    rec = engine.run(req, registry=reg).record
    split = protocols.get_split(reg.dataset("cub"), "ssb", 0)
    assert (rec.config["randaugment"], rec.config["randaugment_n"], rec.config["normalize"]) == (30, 2, "cifar")
    assert rec.counts == {"train": 100, "known": 100, "unknown": len(split.unknown)} and rec.image_shape == (3, 16, 16)
    assert len(rec.history) == 1 and np.isfinite(rec.history[0]["train/loss"])
    assert 0.0 <= rec.metrics["auroc"] <= 1.0 and np.isfinite(rec.metrics["oscr"])
