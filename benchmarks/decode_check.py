"""Decode + augment images/s per CPU core: the MLS release's own PIL pipeline against osrbench's file feed.

Side by side in one process, alternated round by round, on synthetic JPEGs of CUB-200-2011's size
(about 500 x 375, landscape and portrait) trained at 448 px as the release trains CUB
(``bash_scripts/osr_finegrained_train.sh``: ``--transform=rand-augment --rand_aug_n=2
--rand_aug_m=30 --image_size=448 --batch_size=32``):

(a) the release: an ImageFolder-style ``Dataset`` (``default_loader``: PIL ``open().convert('RGB')``)
    through its 'rand-augment' train transform (``data/augmentations/__init__.py:99-114``) with a
    replica of its RandAugment (``data/augmentations/randaugment.py``, MIT), batched by a torch
    ``DataLoader`` with ``num_workers=0`` (the main process: one core);
(b) osrbench's :class:`~osrbench.data.feed.FileStream` with no decoding threads (one core), the
    same transform on the same files, batches of the same float tensors.

Torch runs one thread. Both sides are timed in wall time and in this process's CPU time (images
per CPU-second: the per-core rate even where a library spreads work over threads). Also printed:
the two JPEG decoders alone (PIL and torchvision.io, whose pixels are equal: ``tests/test_feed.py``).

Run: ``python benchmarks/decode_check.py [--images 96] [--rounds 3] [--size 448]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageEnhance, ImageOps  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osrbench.data.feed import FileStream, decode  # noqa: E402
from osrbench.data.stream import CIFAR_MEAN, CIFAR_STD  # noqa: E402


# --------------------------------------------------------------------------------------------
# The release's RandAugment (sgvaze/osr_closed_set_all_you_need, data/augmentations/randaugment.py,
# MIT, copied from ildoonet/pytorch-randaugment): its 16 ops with its own random draws. One change:
# SolarizeAdd's ``np.int`` (gone from numpy) is ``np.int64``.
def ShearX(img, v):
    if random.random() > 0.5:
        v = -v
    return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0))


def ShearY(img, v):
    if random.random() > 0.5:
        v = -v
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0))


def TranslateXabs(img, v):
    if random.random() > 0.5:
        v = -v
    return img.transform(img.size, Image.AFFINE, (1, 0, v, 0, 1, 0))


def TranslateYabs(img, v):
    if random.random() > 0.5:
        v = -v
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v))


def Rotate(img, v):
    if random.random() > 0.5:
        v = -v
    return img.rotate(v)


def AutoContrast(img, _):
    return ImageOps.autocontrast(img)


def Invert(img, _):
    return ImageOps.invert(img)


def Equalize(img, _):
    return ImageOps.equalize(img)


def Solarize(img, v):
    return ImageOps.solarize(img, v)


def SolarizeAdd(img, addition=0, threshold=128):
    img_np = np.array(img).astype(np.int64)
    img_np = np.clip(img_np + addition, 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(img_np), threshold)


def Posterize(img, v):
    return ImageOps.posterize(img, max(1, int(v)))


def Contrast(img, v):
    return ImageEnhance.Contrast(img).enhance(v)


def Color(img, v):
    return ImageEnhance.Color(img).enhance(v)


def Brightness(img, v):
    return ImageEnhance.Brightness(img).enhance(v)


def Sharpness(img, v):
    return ImageEnhance.Sharpness(img).enhance(v)


def CutoutAbs(img, v):
    if v < 0:
        return img
    w, h = img.size
    x0 = np.random.uniform(w)
    y0 = np.random.uniform(h)
    x0 = int(max(0, x0 - v / 2.0))
    y0 = int(max(0, y0 - v / 2.0))
    xy = (x0, y0, min(w, x0 + v), min(h, y0 + v))
    img = img.copy()
    ImageDraw.Draw(img).rectangle(xy, (125, 123, 114))
    return img


AUGMENT_LIST = [
    (AutoContrast, 0, 1), (Equalize, 0, 1), (Invert, 0, 1), (Rotate, 0, 30), (Posterize, 0, 4),
    (Solarize, 0, 256), (SolarizeAdd, 0, 110), (Color, 0.1, 1.9), (Contrast, 0.1, 1.9),
    (Brightness, 0.1, 1.9), (Sharpness, 0.1, 1.9), (ShearX, 0.0, 0.3), (ShearY, 0.0, 0.3),
    (CutoutAbs, 0, 40), (TranslateXabs, 0.0, 100), (TranslateYabs, 0.0, 100),
]


class RandAugment:
    def __init__(self, n, m):
        self.n, self.m = n, m

    def __call__(self, img):
        for op, minval, maxval in random.choices(AUGMENT_LIST, k=self.n):
            img = op(img, (float(self.m) / 30) * float(maxval - minval) + minval)
        return img


def release_transform(size: int, n: int, m: int):
    """data/augmentations/__init__.py:99-114: 'rand-augment', RandAugment inserted first."""
    import torchvision.transforms as T

    t = T.Compose([T.Resize((size, size)), T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(),
                   T.ToTensor(), T.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD)])
    t.transforms.insert(0, RandAugment(n, m))
    return t


class FolderDataset(torch.utils.data.Dataset):
    """What the release's CUB / Aircraft / Cars datasets do per item: default_loader, then transform."""

    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with open(self.paths[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img), self.labels[i]


# --------------------------------------------------------------------------------------------
def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[str]:
    """JPEGs of CUB's sizes (mostly 500 wide, 281-500 high; some portrait), photo-like content."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        long, short = 500, int(rng.integers(281, 501))
        h, w = (short, long) if i % 5 else (long, short)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / (7 + i % 13)) * 60 + 120, np.cos(yy / (9 + i % 7)) * 60 + 120,
                         (xx + yy) * 100 / (w + h) + 60], -1)
        a = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(a).save(path, quality=90)
        paths.append(str(path))
    return paths


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n", type=int, default=2, help="RandAugment N (CUB: 2)")
    ap.add_argument("--m", type=int, default=30, help="RandAugment M (CUB: 30)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    np.random.seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        labels = [i % 10 for i in range(len(paths))]
        loader = torch.utils.data.DataLoader(
            FolderDataset(paths, labels, release_transform(args.size, args.n, args.m)),
            batch_size=args.batch_size, shuffle=True, num_workers=0)
        stream = FileStream(paths, torch.tensor(labels), args.batch_size, seed=0, size=args.size,
                            augment="crop_flip", normalize="cifar", randaugment=args.m, randaugment_n=args.n,
                            workers=0)

        def release_pass():
            for x, _ in loader:
                assert x.shape[1:] == (3, args.size, args.size)

        def feed_pass(epoch=[0]):  # noqa: B006 - a new pass (new draws) each round
            for x, _ in stream.batches(epoch[0]):
                assert x.shape[1:] == (3, args.size, args.size)
            epoch[0] += 1

        release_pass(), feed_pass()  # warm-up: imports, allocator
        rel, fed = [], []
        for _ in range(args.rounds):
            rel.append(timed(release_pass))
            fed.append(timed(feed_pass))

        def decode_pil():
            for p in paths:
                with open(p, "rb") as f:
                    Image.open(f).convert("RGB").load()

        def decode_feed():
            for p in paths:
                decode(p)

        dec_pil = min(timed(decode_pil)[1] for _ in range(2))
        dec_tv = min(timed(decode_feed)[1] for _ in range(2))

    n = len(paths)
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    print(f"decode + RandAugment(N={args.n}, M={args.m}) + resize to {args.size} + crop/flip + normalize, "
          f"{n} JPEGs ~500x375, batch {args.batch_size}, torch threads 1, median of {args.rounds} alternated rounds")
    print(f"{'pipeline':48s} {'img/s (wall)':>13s} {'img/CPU-s':>10s}")
    rows = (("(a) release: PIL Dataset + DataLoader(workers=0)", rel), ("(b) osrbench FileStream(workers=0)", fed))
    for name, xs in rows:
        print(f"{name:48s} {n / med(xs, 0):13.1f} {n / med(xs, 1):10.1f}")
    print(f"ratio (b)/(a): {med(rel, 0) / med(fed, 0):.2f}x wall, {med(rel, 1) / med(fed, 1):.2f}x per CPU-second")
    print(f"JPEG decode alone, ms/image (CPU): PIL {dec_pil / n * 1e3:.2f}, torchvision.io {dec_tv / n * 1e3:.2f} "
          f"(equal pixels)")


if __name__ == "__main__":
    main()
