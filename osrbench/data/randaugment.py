"""RandAugment of the MLS release as batched tensor ops (METHODS.md §4.2).

The MLS release (sgvaze/osr_closed_set_all_you_need, ``data/augmentations/randaugment.py``) copies
ildoonet/pytorch-randaugment and applies ``RandAugment(N=1, M)`` to each PIL image. This module
reproduces it on uint8 ``(B, C, H, W)`` batches on any device, pixel for pixel equal to the PIL
code for the same random draws (``tests/test_randaugment.py`` checks every op against PIL).

Spec (METHODS.md §4.2): N ops drawn uniformly with replacement from :data:`ALL_OPS` (16 ops) or,
for MNIST and SVHN, :data:`DIGIT_OPS` (13 ops: no Rotate, TranslateXabs, TranslateYabs); magnitude
``v = (M/30)·(max − min) + min`` with the ranges in :data:`RANGES`; Rotate, Shear and Translate
negate ``v`` with probability 0.5.

Where the spec is silent this module follows the release's code (and the Pillow it calls):

- **Names** are the release's function names; the absolute translations are ``TranslateXabs`` /
  ``TranslateYabs`` (the spec's "TranslateX/TranslateY 0–100 px absolute").
- **Sign flip**: the release negates ``v`` when ``random.random() > 0.5``; here a uniform draw
  ``< 0.5`` (same probability).
- **Geometric ops** use PIL's ``Image.transform`` / ``Image.rotate`` semantics exactly: nearest
  neighbour, inverse map from output pixel centres, **fill 0** (the release passes no
  ``fillcolor``, so PIL's default black; *not* 128 as in torchvision's RandAugment).
  ShearX samples ``(x + v·y, y)`` and ShearY ``(x, y + v·x)`` with the origin at the top-left
  corner (not the centre); TranslateXabs/YAbs sample ``(x + v, y)`` / ``(x, y + v)`` (positive v
  moves the content left/up); Rotate turns counter-clockwise by ``v`` degrees about
  ``(W/2, H/2)``. Rotations and shears use PIL's 16.16 fixed-point coordinate arithmetic and
  translations its double arithmetic, so sampled pixels match PIL bit for bit.
- **Posterize** keeps ``max(1, int(v))`` bits. **Solarize** inverts pixels ``>= v``.
  **SolarizeAdd** is ``trunc(clip(x + v, 0, 255))`` then inverts pixels ``>= 128``.
- **AutoContrast** / **Equalize** are PIL's ``ImageOps`` algorithms per channel (cutoff 0; a
  constant channel is left unchanged; Equalize's step is ``(pixels − count of the top value) // 255``
  and its LUT is clipped to 255 as PIL's ``point`` does).
- **Color / Contrast / Brightness / Sharpness** are PIL's ``ImageEnhance``:
  ``Image.blend(degenerate, image, v)`` evaluated as PIL does, in float32
  ``deg + v·(img − deg)``, clipped to [0, 255] and truncated. Degenerates: Color the ITU-R 601
  grey ``(19595 R + 38470 G + 7471 B + 32768) >> 16`` (PIL's ``convert("L")``); Contrast a flat
  image at ``int(mean(grey) + 0.5)``; Brightness black; Sharpness PIL's SMOOTH filter
  (3×3 kernel of ones with centre 5, /13, rounded; border pixels unchanged).
- **CutoutAbs** copies the release literally: centre ``cx = np.random.uniform(W)``, which is
  ``uniform(low=W, high=1)``, i.e. in ``(1, W]`` (likewise ``cy`` in ``(1, H]``); then
  ``x0 = int(max(0, cx − v/2))``, ``x1 = min(W, x0 + v)`` and PIL's ``ImageDraw.rectangle``
  fills columns ``x0 .. int(x1)`` *inclusive* (so an unclipped square is ``int(v) + 1`` pixels
  wide), clipped at the image border. Fill (125, 123, 114).
- **Grey images** (C = 1) are processed on their single channel, as PIL mode ``L``: Color is the
  identity and Cutout fills 125 (the first fill value).
- ``M`` must lie in [0, 30] (the release's ops assert their ranges).

Random draws are made up front from the caller's CPU generator, in this fixed order:
op indices ``randint(0, K, (n, N))``, sign flips ``rand(n, N) < 0.5``, cutout centre uniforms
``rand(n, N, 2, float64)`` (x then y). Every image gets every draw whatever its op, so image
``i``'s augmentation depends only on the seed and ``i``: never on the batch size or device.
``apply`` sorts the batch by (op, sign) and runs each op once on its whole group.
"""

from __future__ import annotations

import functools
import math

import torch

#: The release's ``augment_list()`` (16 ops), in its order.
ALL_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "CutoutAbs",
    "TranslateXabs",
    "TranslateYabs",
)
#: The release's ``augment_list_svhn()`` (13 ops), used for MNIST and SVHN.
DIGIT_OPS: tuple[str, ...] = tuple(op for op in ALL_OPS if op not in ("Rotate", "TranslateXabs", "TranslateYabs"))
OP_LISTS: dict[str, tuple[str, ...]] = {"all": ALL_OPS, "digits": DIGIT_OPS}

#: (min, max) of each op's magnitude, as in the release.
RANGES: dict[str, tuple[float, float]] = {
    "AutoContrast": (0, 1),
    "Equalize": (0, 1),
    "Invert": (0, 1),
    "Rotate": (0, 30),
    "Posterize": (0, 4),
    "Solarize": (0, 256),
    "SolarizeAdd": (0, 110),
    "Color": (0.1, 1.9),
    "Contrast": (0.1, 1.9),
    "Brightness": (0.1, 1.9),
    "Sharpness": (0.1, 1.9),
    "ShearX": (0.0, 0.3),
    "ShearY": (0.0, 0.3),
    "CutoutAbs": (0, 40),
    "TranslateXabs": (0.0, 100),
    "TranslateYabs": (0.0, 100),
}
#: Ops whose magnitude is negated with probability 0.5.
SIGNED = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXabs", "TranslateYabs"})
CUTOUT_FILL = (125, 123, 114)


def ops_for(dataset: str) -> str:
    """The op list of a dataset: ``digits`` (13 ops) for MNIST and SVHN, ``all`` otherwise.

    Mirrors the release, which switches lists on ``args.dataset in ('svhn', 'mnist')``.
    """
    return "digits" if dataset.lower() in ("mnist", "svhn") else "all"


def op_value(op: str, m: float) -> float:
    """``v = (M/30)·(max − min) + min``, computed as the release does (Python floats)."""
    lo, hi = RANGES[op]
    return (float(m) / 30) * float(hi - lo) + lo


# --------------------------------------------------------------------------------------------
# Sampling maps of the geometric ops (built on the CPU in Python, cached per device)


def _affine_data(op: str, v: float, w: int, h: int) -> list[float]:
    """The 6-tuple the release hands to PIL's ``Image.transform`` (inverse map)."""
    if op == "ShearX":
        return [1, v, 0, 0, 1, 0]
    if op == "ShearY":
        return [1, 0, 0, v, 1, 0]
    if op == "TranslateXabs":
        return [1, 0, v, 0, 1, 0]
    if op == "TranslateYabs":
        return [1, 0, 0, 0, 1, v]
    if op == "Rotate":  # PIL Image.rotate(v), expand=False, centre (w/2, h/2), no translation
        angle = v % 360.0
        cx, cy = w / 2, h / 2
        angle = -math.radians(angle)
        a = [
            round(math.cos(angle), 15),
            round(math.sin(angle), 15),
            0.0,
            round(-math.sin(angle), 15),
            round(math.cos(angle), 15),
            0.0,
        ]
        a[2] = a[0] * -cx + a[1] * -cy + a[2] + cx
        a[5] = a[3] * -cx + a[4] * -cy + a[5] + cy
        return a
    raise KeyError(op)


def _coord(v: float) -> int:  # PIL's COORD: -1 for negatives, else truncation
    return -1 if v < 0.0 else int(v)


def _source_index(a: list[float], w: int, h: int) -> torch.Tensor:
    """(H·W,) long: flat source index (or -1: outside, filled with 0) of each output pixel, as PIL
    computes it in ImagingTransformAffine with NEAREST resampling (Geometry.c).

    The per-row and per-column coordinates are PIL's own scalar arithmetic in Python; the H·W grid
    is integer tensor arithmetic, exact, in int32 as PIL's INT32 fixed point (int64 beyond 16384
    px), so images of any size (the file feed's) cost no Python loop per pixel.
    """
    dt = torch.int32 if max(w, h) < 16384 else torch.int64
    if a[1] == 0 and a[3] == 0:  # ImagingScaleAffine: double accumulation, one coordinate per row/column
        xin, xo = [], a[2] + a[0] * 0.5
        for _ in range(w):
            xin.append(_coord(xo))
            xo += a[0]
        yin, yo = [], a[5] + a[4] * 0.5
        for _ in range(h):
            yin.append(_coord(yo))
            yo += a[4]
        xi = torch.tensor(xin, dtype=torch.int64).clamp(-1, w).to(dt)[None, :]
        yi = torch.tensor(yin, dtype=torch.int64).clamp(-1, h).to(dt)[:, None]
    else:
        fits = all(abs(x * a[0] + y * a[1] + a[2]) < 32768.0 and abs(x * a[3] + y * a[4] + a[5]) < 32768.0
                   for x, y in ((0, 0), (w, h), (0, h), (w, 0)))
        if not fits:
            raise ValueError(f"image {w}x{h} too large for PIL's fixed-point affine path")

        def fix(t: float) -> int:  # FLOOR(t * 65536 + 0.5)
            return math.floor(t * 65536.0 + 0.5)

        a0, a1, a3, a4 = fix(a[0]), fix(a[1]), fix(a[3]), fix(a[4])
        a2 = fix(a[2] + a[0] * 0.5 + a[1] * 0.5)
        a5 = fix(a[5] + a[3] * 0.5 + a[4] * 0.5)
        ys = torch.arange(h, dtype=dt)[:, None]
        xs = torch.arange(w, dtype=dt)[None, :]
        xi = torch.add(xs * a0, ys * a1 + a2).bitwise_right_shift_(16)  # arithmetic shift, as C's >>
        yi = torch.add(xs * a3, ys * a4 + a5).bitwise_right_shift_(16)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    return torch.where(inside, yi * w + xi, -1).reshape(-1).long()


#: Sampling maps of at most this many pixels are cached (the stream's fixed sizes); a file-backed
#: dataset's images each have their own size, so theirs are made per image and not kept.
CACHED_MAP_PIXELS = 128 * 128


def _sampling_map(op: str, v: float, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(H·W,) long: source index of each output pixel; H·W points at an appended zero pixel."""
    if h * w <= CACHED_MAP_PIXELS:
        return _cached_sampling_map(op, v, h, w, device)
    src = _source_index(_affine_data(op, v, w, h), w, h)
    return torch.where(src < 0, h * w, src).to(device)


@functools.lru_cache(maxsize=256)
def _cached_sampling_map(op: str, v: float, h: int, w: int, device: torch.device) -> torch.Tensor:
    src = _source_index(_affine_data(op, v, w, h), w, h)
    return torch.where(src < 0, h * w, src).to(device)


# --------------------------------------------------------------------------------------------
# Batched ops on uint8 (b, C, H, W)


def _solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """PIL ``ImageOps.solarize``: invert the pixels ``>= threshold``."""
    t = max(0, math.ceil(threshold))  # x >= threshold <=> x >= ceil(threshold) for integer x
    if t > 255:  # (a uint8 comparison with 256 would wrap)
        return x.clone()
    return torch.where(x >= t, x.bitwise_not(), x)


def _per_channel_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Apply a (b, C, 256) uint8 table to each image channel."""
    b, c, h, w = x.shape
    return torch.gather(lut, 2, x.reshape(b, c, h * w).long()).view(b, c, h, w)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3)).double()[..., None]  # (b, C, 1)
    hi = x.amax(dim=(2, 3)).double()[..., None]
    scale = torch.full_like(lo, 255.0) / (hi - lo).clamp(min=1)  # not 255.0 / t: that is 255 * (1 / t)
    offset = -lo * scale
    ix = torch.arange(256, device=x.device, dtype=torch.float64)
    lut = torch.trunc(ix * scale + offset).clamp(0, 255)
    lut = torch.where(hi > lo, lut, ix).to(torch.uint8)
    return _per_channel_lut(x, lut)


def _histograms(x: torch.Tensor, scatter: bool | None = None) -> torch.Tensor:
    """(b, C, 256) int64 pixel counts per image channel (exact integers on every device)."""
    b, c, h, w = x.shape
    if not (x.device.type != "cpu" if scatter is None else scatter):  # int32 bins: 4x less memory traffic
        idx = (x.int() + torch.arange(b * c, dtype=torch.int32, device=x.device).view(b, c, 1, 1) * 256).reshape(-1)
        hist = torch.bincount(idx, minlength=b * c * 256)
    else:  # index_put_ with accumulate is deterministic under torch.use_deterministic_algorithms
        idx = (x.long() + torch.arange(b * c, device=x.device).view(b, c, 1, 1) * 256).reshape(-1)
        ones = torch.ones(1, dtype=torch.long, device=x.device).expand(idx.numel())
        hist = torch.zeros(b * c * 256, dtype=torch.long, device=x.device).index_put_((idx,), ones, accumulate=True)
    return hist.view(b, c, 256)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    hist = _histograms(x)
    last = hist.gather(2, x.amax(dim=(2, 3)).long()[..., None])  # count of the top value
    step = (h * w - last) // 255  # (b, C, 1)
    before = hist.cumsum(2) - hist  # pixels strictly below each value
    lut = ((step // 2 + before) // step.clamp(min=1)).clamp(0, 255)
    ident = torch.arange(256, device=x.device).expand_as(lut)
    lut = torch.where(step > 0, lut, ident).to(torch.uint8)
    return _per_channel_lut(x, lut)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """PIL ``convert("L")``: int32 (b, 1, H, W)."""
    if x.shape[1] == 1:
        return x.int()
    r, g, b = x.int().unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)[:, None]


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH: (3×3 ones, centre 5) / 13, rounded; border pixels kept."""
    h, w = x.shape[2:]
    if h < 3 or w < 3:
        return x
    xi = x.int()
    s = 4 * xi[:, :, 1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            s.add_(xi[:, :, dy : h - 2 + dy, dx : w - 2 + dx])  # in place: exact int32 sums, no temporaries
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = s.mul_(2).add_(13).floor_divide_(26)  # round(s / 13), never a tie
    return out


def _blend(degenerate: torch.Tensor, x: torch.Tensor, v: float) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, x, v)``: float32 ``deg + v·(x − deg)``, clipped, truncated."""
    deg = degenerate.float()
    alpha = torch.tensor(v, dtype=torch.float32, device=x.device)
    y = x.float().sub_(deg).mul_(alpha).add_(deg)  # the same float32 operations, in place
    return y.clamp_(0, 255).to(torch.uint8)


def _cutout(x: torch.Tensor, v: float, centre: torch.Tensor) -> torch.Tensor:
    """The release's CutoutAbs for per-image centre uniforms ``centre`` (b, 2) float64 (CPU)."""
    b, c, h, w = x.shape
    if v < 0:
        return x
    u = centre.to(torch.float64).cpu()
    cx = w + (1.0 - w) * u[:, 0]  # np.random.uniform(w) == uniform(low=w, high=1.0)
    cy = h + (1.0 - h) * u[:, 1]
    x0 = torch.trunc((cx - v / 2.0).clamp(min=0))
    y0 = torch.trunc((cy - v / 2.0).clamp(min=0))
    x1 = torch.trunc((x0 + v).clamp(max=w))  # ImageDraw.rectangle: inclusive of (int) x1, y1
    y1 = torch.trunc((y0 + v).clamp(max=h))
    box = torch.stack([x0, y0, x1, y1], 1).long().to(x.device)
    xs = torch.arange(w, device=x.device)
    ys = torch.arange(h, device=x.device)
    cols = (xs >= box[:, 0:1]) & (xs <= box[:, 2:3])  # (b, W)
    rows = (ys >= box[:, 1:2]) & (ys <= box[:, 3:4])  # (b, H)
    mask = rows[:, None, :, None] & cols[:, None, None, :]
    fill = torch.tensor(CUTOUT_FILL[:c], dtype=torch.uint8, device=x.device).view(1, c, 1, 1)
    return torch.where(mask, fill, x)


def apply_op(x: torch.Tensor, op: str, v: float, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one op with the signed value ``v`` to every image of the uint8 batch ``x``.

    ``centre`` (b, 2) holds the cutout centre uniforms in [0, 1) (CutoutAbs only).
    """
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 (B, 1|3, H, W), got {tuple(x.shape)} {x.dtype}")
    if op == "Invert":
        return x.bitwise_not()  # 255 - x
    if op == "Posterize":
        return x & ((0xFF << (8 - max(1, int(v)))) & 0xFF)
    if op == "Solarize":
        return _solarize(x, v)
    if op == "SolarizeAdd":
        if v < 0:
            raise ValueError(f"SolarizeAdd needs v >= 0, got {v}")
        add = min(math.floor(v), 255)  # trunc(min(x + v, 255)) == min(x + floor(v), 255) for v >= 0
        return _solarize(x.clamp(max=255 - add) + add, 128)
    if op == "AutoContrast":
        return _autocontrast(x)
    if op == "Equalize":
        return _equalize(x)
    if op == "Color":
        return x.clone() if x.shape[1] == 1 else _blend(_grey(x).expand_as(x), x, v)
    if op == "Contrast":
        grey = _grey(x)
        npix = grey.shape[2] * grey.shape[3]
        mean = (2 * grey.sum(dim=(1, 2, 3), dtype=torch.int64) + npix) // (2 * npix)  # int(mean + 0.5)
        return _blend(mean.view(-1, 1, 1, 1).expand_as(x), x, v)
    if op == "Brightness":
        return _blend(torch.zeros_like(x), x, v)
    if op == "Sharpness":
        return _blend(_smooth(x), x, v)
    if op == "CutoutAbs":
        if centre is None:
            raise ValueError("CutoutAbs needs the centre uniforms")
        return _cutout(x, v, centre)
    if op in SIGNED:
        b, c, h, w = x.shape
        src = _sampling_map(op, float(v), h, w, x.device)
        flat = torch.cat([x.reshape(b, c, h * w), x.new_zeros(b, c, 1)], 2)
        return torch.gather(flat, 2, src.expand(b, c, -1)).view(b, c, h, w)
    raise KeyError(f"unknown RandAugment op {op!r}")


# --------------------------------------------------------------------------------------------


class RandAugmentDraws:
    """The RandAugment draws of one pass of ``n`` images, applied batch by batch.

    :param n: images in the pass.
    :param magnitude: M in [0, 30].
    :param ops: ``all`` (16 ops) or ``digits`` (13 ops, MNIST and SVHN); see :func:`ops_for`.
    :param generator: CPU generator the draws come from (consumed here, in a fixed order).
    :param num_ops: N, ops per image (1 in every recipe).
    """

    def __init__(self, n: int, magnitude: float, ops: str, generator: torch.Generator, num_ops: int = 1) -> None:
        if ops not in OP_LISTS:
            raise ValueError(f"ops must be one of {sorted(OP_LISTS)}, got {ops!r}")
        if not 0 <= magnitude <= 30:
            raise ValueError(f"RandAugment magnitude must be in [0, 30], got {magnitude}")
        if num_ops < 1:
            raise ValueError(f"num_ops must be positive, got {num_ops}")
        self.n = n
        self.m = magnitude
        self.names = OP_LISTS[ops]
        self.num_ops = num_ops
        self.values = [op_value(name, magnitude) for name in self.names]
        k = len(self.names)
        self.op = torch.randint(0, k, (n, num_ops), generator=generator)
        self.flip = torch.rand(n, num_ops, generator=generator) < 0.5
        self.centre = torch.rand(n, num_ops, 2, generator=generator, dtype=torch.float64)
        self._signed = torch.tensor([name in SIGNED for name in self.names])

    def signed_values(self, sl: slice = slice(None)) -> torch.Tensor:
        """(len, N) float64: the value ``v`` each image's op is applied with (sign included)."""
        op = self.op[sl]
        v = torch.tensor(self.values, dtype=torch.float64)[op]
        return torch.where(self.flip[sl] & self._signed[op], -v, v)

    def apply(self, x: torch.Tensor, sl: slice) -> torch.Tensor:
        """Augment the uint8 batch ``x`` holding images ``sl`` of the pass; same shape and device."""
        op, flip, centre = self.op[sl], self.flip[sl], self.centre[sl]
        if op.shape[0] != x.shape[0]:
            raise ValueError(f"slice {sl} covers {op.shape[0]} images, batch has {x.shape[0]}")
        if not len(x):
            return x.clone()
        for j in range(self.num_ops):
            x = self._layer(x, op[:, j], flip[:, j], centre[:, j])
        return x

    def apply_one(self, image: torch.Tensor, i: int) -> torch.Tensor:
        """Augment one uint8 (C, H, W) image, image ``i`` of the pass, at its own size: its ops in
        turn (equal to :meth:`apply` of a batch of it, without the grouping a batch needs)."""
        values = self.signed_values(slice(i, i + 1))[0].tolist()
        x = image[None]
        for j in range(self.num_ops):
            x = apply_op(x, self.names[int(self.op[i, j])], values[j], self.centre[i, j][None])
        return x[0]

    def _layer(self, x: torch.Tensor, op: torch.Tensor, flip: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        key = op * 2 + (flip & self._signed[op]).long()  # group by (op, sign)
        order = torch.argsort(key, stable=True)
        counts = torch.bincount(key, minlength=2 * len(self.names)).tolist()
        xs = x.index_select(0, order.to(x.device))
        centre = centre[order]
        parts, start = [], 0
        for k, count in enumerate(counts):
            if not count:
                continue
            name, v = self.names[k // 2], self.values[k // 2]
            part = apply_op(xs[start : start + count], name, -v if k % 2 else v, centre[start : start + count])
            parts.append(part)
            start += count
        inverse = torch.argsort(order).to(x.device)
        return torch.cat(parts).index_select(0, inverse)  # a gather: no scatter on the device
