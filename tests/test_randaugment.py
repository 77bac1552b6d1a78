"""The MLS release's RandAugment as batched tensor ops: op lists, magnitudes, exactness against the
release's PIL code, determinism and batch-size independence of the draws."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from osrbench.data.randaugment import (
    ALL_OPS,
    CUTOUT_FILL,
    DIGIT_OPS,
    SIGNED,
    RandAugmentDraws,
    _histograms,
    apply_op,
    op_value,
    ops_for,
)

RELEASE_16 = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "CutoutAbs", "TranslateXabs", "TranslateYabs",
)
RELEASE_13 = (
    "AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "CutoutAbs",
)


def _release_op(img, op, v, centre=None):
    """The release's op (data/augmentations/randaugment.py) with the sign and centre given."""
    if op == "ShearX":
        return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0))
    if op == "ShearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0))
    if op == "TranslateXabs":
        return img.transform(img.size, Image.AFFINE, (1, 0, v, 0, 1, 0))
    if op == "TranslateYabs":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v))
    if op == "Rotate":
        return img.rotate(v)
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Invert":
        return ImageOps.invert(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    if op == "Solarize":
        return ImageOps.solarize(img, v)
    if op == "SolarizeAdd":
        a = np.clip(np.array(img).astype(np.int64) + v, 0, 255).astype(np.uint8)
        return ImageOps.solarize(Image.fromarray(a), 128)
    if op == "Posterize":
        return ImageOps.posterize(img, max(1, int(v)))
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        return getattr(ImageEnhance, op)(img).enhance(v)
    if op == "CutoutAbs":
        w, h = img.size
        x0 = w + (1.0 - w) * float(centre[0])  # np.random.uniform(w), see test_cutout_centre_quirk
        y0 = h + (1.0 - h) * float(centre[1])
        x0 = int(max(0, x0 - v / 2.0))
        y0 = int(max(0, y0 - v / 2.0))
        xy = (x0, y0, min(w, x0 + v), min(h, y0 + v))
        img = img.copy()
        ImageDraw.Draw(img).rectangle(xy, CUTOUT_FILL if img.mode == "RGB" else CUTOUT_FILL[0])
        return img
    raise KeyError(op)


def _to_pil(x):
    a = x.numpy()
    return Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))


def _from_pil(img):
    a = torch.from_numpy(np.array(img))
    return a[None] if a.dim() == 2 else a.permute(2, 0, 1)


def _test_images(c):
    """Non-square images: uniform noise, a low-contrast one, few grey levels, a constant channel."""
    g = torch.Generator().manual_seed(c)
    h, w = 30, 26
    noise = torch.randint(0, 256, (c, h, w), generator=g)
    low = torch.randint(60, 130, (c, h, w), generator=g)
    levels = torch.randint(0, 4, (c, h, w), generator=g) * 70
    const = low.clone()
    const[0] = 90
    return torch.stack([noise, low, levels, const]).to(torch.uint8)


def test_op_lists_are_the_releases():
    assert ALL_OPS == RELEASE_16 and len(ALL_OPS) == 16
    assert DIGIT_OPS == RELEASE_13 and len(DIGIT_OPS) == 13
    assert set(ALL_OPS) - set(DIGIT_OPS) == {"Rotate", "TranslateXabs", "TranslateYabs"}
    assert SIGNED == {"Rotate", "ShearX", "ShearY", "TranslateXabs", "TranslateYabs"}
    assert ops_for("mnist") == ops_for("svhn") == "digits"
    assert {ops_for(d) for d in ("cifar10", "cifar+10", "cifar+50", "tiny_imagenet")} == {"all"}
    g = torch.Generator().manual_seed(0)
    assert RandAugmentDraws(5, 6, "digits", g).names == DIGIT_OPS


@pytest.mark.parametrize(
    ("op", "want"),  # values at M = 6, 15, 30
    [
        ("Rotate", (6, 15, 30)),
        ("Posterize", (0.8, 2, 4)),
        ("Solarize", (51.2, 128, 256)),
        ("SolarizeAdd", (22, 55, 110)),
        ("Color", (0.46, 1.0, 1.9)),
        ("Sharpness", (0.46, 1.0, 1.9)),
        ("ShearX", (0.06, 0.15, 0.3)),
        ("CutoutAbs", (8, 20, 40)),
        ("TranslateYabs", (20, 50, 100)),
    ],
)
def test_magnitude_formula(op, want):
    for m, v in zip((6, 15, 30), want):
        assert op_value(op, m) == pytest.approx(v, abs=1e-12)


@pytest.mark.parametrize("c", [3, 1])
def test_every_op_equals_the_release_pil_code(c):
    x = _test_images(c)
    centres = torch.tensor([[0.5, 0.5], [0.0, 0.999], [0.97, 0.03], [0.31, 0.62]], dtype=torch.float64)
    for op in ALL_OPS:
        for m in (6, 9, 18, 30):
            for sign in (1, -1) if op in SIGNED else (1,):
                v = sign * op_value(op, m)
                got = apply_op(x, op, v, centres)
                assert got.dtype == torch.uint8 and got.shape == x.shape
                for i in range(len(x)):
                    want = _from_pil(_release_op(_to_pil(x[i]), op, v, centres[i]))
                    assert torch.equal(got[i], want), (op, m, sign, i)


def test_direct_formulas_on_a_hand_made_image():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    i = x.int()
    assert torch.equal(apply_op(x, "Invert", 0.0), (255 - x))
    sol = apply_op(x, "Solarize", op_value("Solarize", 6))  # threshold 51.2: 0..51 kept
    assert torch.equal(sol, torch.where(i >= 52, 255 - i, i).to(torch.uint8))
    assert torch.equal(apply_op(x, "Solarize", op_value("Solarize", 30)), x)  # threshold 256: none
    for m, mask in ((6, 0x80), (15, 0xC0), (30, 0xF0)):  # 1 (min), 2 and 4 bits
        assert torch.equal(apply_op(x, "Posterize", op_value("Posterize", m)), x & mask)
    added = (i + 55).clamp(max=255)  # M = 15: add 55, then solarize at 128
    assert torch.equal(apply_op(x, "SolarizeAdd", op_value("SolarizeAdd", 15)), torch.where(added >= 128, 255 - added, added).to(torch.uint8))
    for m in (6, 30):
        f = np.float32(op_value("Brightness", m))
        want = np.floor(np.minimum(x.numpy().astype(np.float32) * f, 255)).astype(np.uint8)
        assert torch.equal(apply_op(x, "Brightness", op_value("Brightness", m)), torch.from_numpy(want))
    bright = apply_op(x, "Brightness", 1.9).flatten()
    assert bright[100] == 190 and bright[200] == 255 and bright[0] == 0
    assert torch.equal(apply_op(x, "Color", 0.46), x)  # grey: identity


def test_cutout_fill_size_and_clipping():
    x = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    centre = torch.tensor([[0.5, 0.5], [0.0, 0.0], [1 - 1e-12, 0.5]], dtype=torch.float64)
    out = apply_op(x, "CutoutAbs", op_value("CutoutAbs", 6), centre)  # v = 8
    for ch, fill in enumerate(CUTOUT_FILL):
        assert set(out[:, ch].unique().tolist()) == {0, fill}
    mask = out[:, 0] > 0
    # centre 16.5 -> x0 = 12, x1 = 20, inclusive: 9 px; centre 32 -> 28..31; centre ~1 -> 0..8
    assert mask[0, 12:21, 12:21].all() and mask[0].sum() == 81
    assert mask[1, 28:, 28:].all() and mask[1].sum() == 16
    assert mask[2, 12:21, 0:9].all() and mask[2].sum() == 81
    grey = apply_op(torch.zeros(1, 1, 32, 32, dtype=torch.uint8), "CutoutAbs", 8.0, centre[:1])
    assert set(grey.unique().tolist()) == {0, 125}


def test_histogram_paths_agree():
    """The accumulate-index path (used off the CPU, deterministic there) equals bincount."""
    x = _batch(n=6, c=3, h=9, w=11)
    assert torch.equal(_histograms(x, scatter=True), _histograms(x, scatter=False))
    assert torch.equal(_histograms(x).sum(2), torch.full((6, 3), 99))


def test_cutout_centre_quirk_is_numpys_uniform_of_width():
    """The release's np.random.uniform(w) is uniform(low=w, high=1) = w + (1 - w) * U."""
    rs1, rs2 = np.random.RandomState(5), np.random.RandomState(5)
    for _ in range(5):
        assert rs1.uniform(32) == 32 + (1.0 - 32) * rs2.random_sample()


def _draws(n=64, m=9, ops="all", seed=0):
    return RandAugmentDraws(n, m, ops, torch.Generator().manual_seed(seed))


def _batch(n=64, c=3, h=32, w=32, seed=1):
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("c", [3, 1])
def test_apply_equals_each_image_op_with_its_draws(c):
    x = _batch(c=c, h=20, w=24)
    before = x.clone()
    ra = _draws()
    out = ra.apply(x, slice(0, 64))
    assert torch.equal(x, before)  # input untouched
    assert out.dtype == torch.uint8 and out.shape == x.shape and out.device == x.device
    v = ra.signed_values()
    assert len(set(ra.op[:, 0].tolist())) >= 12
    for i in range(64):
        name = ra.names[int(ra.op[i, 0])]
        want = apply_op(x[i : i + 1], name, float(v[i, 0]), ra.centre[i])
        assert torch.equal(out[i : i + 1], want), (i, name)


def test_two_ops_per_image_apply_in_draw_order():
    x = _batch(n=24, h=12, w=12)
    ra = RandAugmentDraws(24, 15, "all", torch.Generator().manual_seed(7), num_ops=2)
    out = ra.apply(x, slice(0, 24))
    v = ra.signed_values()
    for i in range(24):
        want = x[i : i + 1]
        for j in range(2):
            want = apply_op(want, ra.names[int(ra.op[i, j])], float(v[i, j]), ra.centre[i, j : j + 1])
        assert torch.equal(out[i : i + 1], want)
    assert ra.apply(x[:0], slice(24, 40)).shape == (0, 3, 12, 12)


def test_one_image_at_its_own_size_equals_the_batch_of_it():
    """apply_one (the file feed's, one image of any size) equals apply on the batch of that image."""
    ra = RandAugmentDraws(40, 21, "all", torch.Generator().manual_seed(5), num_ops=2)
    assert len(set(ra.op.flatten().tolist())) == 16
    for i in range(40):
        x = _batch(n=1, h=9 + i, w=31 - i // 2, seed=i)
        out = ra.apply_one(x[0], i)
        assert out.shape == x.shape[1:] and torch.equal(out, ra.apply(x, slice(i, i + 1))[0]), i


def test_same_seed_same_output_and_batch_size_independent():
    x = _batch(n=50)
    whole = _draws(50, seed=3).apply(x, slice(0, 50))
    again = _draws(50, seed=3).apply(x, slice(0, 50))
    assert torch.equal(whole, again)
    ra = _draws(50, seed=3)
    parts = torch.cat([ra.apply(x[:17], slice(0, 17)), ra.apply(x[17:], slice(17, 17 + 64))])  # last slice overhangs n, as in the stream
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, _draws(50, seed=4).apply(x, slice(0, 50)))
    # the documented draw order: ops, then sign flips, then cutout centres
    g = torch.Generator().manual_seed(3)
    op, flip, centre = torch.randint(0, 16, (50, 1), generator=g), torch.rand(50, 1, generator=g) < 0.5, torch.rand(50, 1, 2, generator=g, dtype=torch.float64)
    ra = _draws(50, seed=3)
    assert torch.equal(ra.op, op) and torch.equal(ra.flip, flip) and torch.equal(ra.centre, centre)


def test_ops_drawn_uniformly_and_signs_flip_half_the_time():
    n = 32000
    for ops, k in (("all", 16), ("digits", 13)):
        ra = _draws(n, m=6, ops=ops, seed=11)
        counts = torch.bincount(ra.op[:, 0], minlength=k)
        assert len(counts) == k and (counts - n / k).abs().max() < 0.08 * n / k
        v = ra.signed_values()[:, 0]
        for j, name in enumerate(ra.names):
            vals = v[ra.op[:, 0] == j]
            if name in SIGNED:
                frac = float((vals < 0).double().mean())
                assert abs(frac - 0.5) < 0.05, (name, frac)
                assert set(vals.abs().tolist()) == {op_value(name, 6)}
            else:
                assert (vals >= 0).all()


def test_signs_reach_the_images():
    """TranslateXabs by +20 px moves content left, by -20 px right; both occur."""
    n = 400
    ra = _draws(n, m=6)
    x = torch.zeros(n, 1, 4, 50, dtype=torch.uint8)
    x[:, :, :, 25] = 255  # a vertical line at column 25
    out = ra.apply(x, slice(0, n))
    rows = torch.nonzero(ra.op[:, 0] == ra.names.index("TranslateXabs"))[:, 0]
    cols = [int(out[i, 0, 0].argmax()) for i in rows.tolist()]
    assert sorted(set(cols)) == [5, 45] and 0.3 < cols.count(5) / len(cols) < 0.7


def test_arguments_are_checked():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="ops must be"):
        RandAugmentDraws(4, 6, "svhn", g)
    with pytest.raises(ValueError, match=r"\[0, 30\]"):
        RandAugmentDraws(4, 31, "all", g)
    ra = RandAugmentDraws(4, 6, "all", g)
    with pytest.raises(ValueError, match="covers 2 images"):
        ra.apply(_batch(n=3), slice(2, 10))
    with pytest.raises(ValueError, match="uint8"):
        apply_op(torch.zeros(1, 3, 4, 4), "Invert", 0.0)


def test_stream_batches_do_not_depend_on_batch_size():
    from osrbench.data.stream import TrainStream

    x, y = _batch(n=40, h=16, w=16), torch.arange(40)
    a = [b for b in TrainStream(x, y, 40, seed=2, augment="crop_flip", randaugment=9).batches(0)]
    b = [b for b in TrainStream(x, y, 16, seed=2, augment="crop_flip", randaugment=9).batches(0)]
    assert torch.equal(a[0][0], torch.cat([xb for xb, _ in b])) and torch.equal(a[0][1], torch.cat([yb for _, yb in b]))
    plain = next(TrainStream(x, y, 40, seed=2, augment="crop_flip").batches(0))[0]
    assert not torch.equal(plain, a[0][0])
