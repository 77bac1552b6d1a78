"""The file feed: training batches decoded from image files in every pass, the stream's contract.

A file-backed dataset (:class:`~osrbench.data.imagefiles.OpenSetFiles`: CUB, FGVC-Aircraft, Stanford
Cars, ImageNet) is too large to hold decoded at the run's size, and the MLS release augments each
image at its own size before resizing it. :class:`FileStream` keeps the contract of
:class:`~osrbench.data.stream.TrainStream`: each (epoch, phase) pass draws its permutation, crop
offsets, flips and RandAugment draws from a CPU generator seeded by ``(seed, epoch, phase)`` only,
in the stream's order, so every method and a resumed run see bit-identical batches. Each image is
then made as the release's ``rand-augment`` transform makes it
(``data/augmentations/__init__.py:99-118`` of sgvaze/osr_closed_set_all_you_need)::

    RandAugment(N, M) at the image's own size -> Resize((S, S)) -> RandomCrop(S, padding=4)
    -> RandomHorizontalFlip -> ToTensor -> Normalize(CIFAR mean, std)

on the RGB image its loaders give (torchvision's ``default_loader``: PIL ``convert('RGB')``);
RandAugment is :mod:`osrbench.data.randaugment` (pixel for pixel PIL's) and the crop and flip are
:func:`~osrbench.data.stream.crop_flip`'s, per image (:func:`crop_flip_one`). Test images (and the
training images of the fit stage and of post-hoc scorers) go through the release's test transform,
``Resize((S, S))``: :class:`ImageSet`; with the config's ``crop_pct`` > 0, through the ImageNet
evaluation's ``Resize(int(S / crop_pct))`` + ``CenterCrop(S)`` instead (:func:`test_image`), with the
``test_interpolation`` filter (bilinear, or bicubic as timm's ImageNet classifiers).

- **Decoding**: grey and colour JPEG files by ``torchvision.io.decode_jpeg`` (the same pixels as
  PIL's decoder, libjpeg-turbo with the same settings; ``tests/test_feed.py`` checks it, and it is
  faster), CMYK JPEGs and every other format by PIL (its own CMYK conversion).
- **Resize**: PIL's bilinear resize, as ``transforms.Resize`` runs on a PIL image. Torch's
  antialiased bilinear resize of uint8 (``F.interpolate(antialias=True)``) differs from it by 1 on
  some pixels, so it is not used.
- **Workers**: the per-image work (read, decode, RandAugment, resize, crop, flip) runs in a thread pool of
  :func:`decode_workers` threads, one batch ahead of the step; every image's result goes to its
  place in the batch, so the batches do not depend on the number of workers.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from osrbench.data.stream import NORMALIZE_CHOICES, NORMALIZE_STATS, PAD, check_stream_args, derive_seed, to_input
from osrbench.datasets import DataNotFound
from osrbench.errors import UserError

#: Environment variable: threads decoding images (default: the CPU cores this process may use).
WORKERS_ENV = "OSRBENCH_DECODE_WORKERS"
#: Batches prepared ahead of the one being trained.
AHEAD = 2
#: Share of the host's available memory an :class:`ImageSet` may keep decoded.
KEEP_SHARE = 0.25
_JPEG_MAGIC = b"\xff\xd8\xff"
# torchvision 0.29 warns at every decode that its decoders will move to TorchCodec; where they are
# gone, decode() falls back to PIL (the same pixels).
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
                        category=DeprecationWarning)


def decode_workers() -> int:
    """Threads the feed decodes with: ``$OSRBENCH_DECODE_WORKERS``, else the usable CPU cores (0: no pool)."""
    env = os.environ.get(WORKERS_ENV)
    if env is not None:
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n < 0:
            raise UserError(f"{WORKERS_ENV}={env!r} must be a number of threads >= 0 (0: decode in the main thread)")
        return n
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.lru_cache(maxsize=None)
def _jpeg_decoder() -> tuple[Callable[..., torch.Tensor], Any] | None:
    """torchvision's ``decode_jpeg`` and its mode that keeps the file's components, or ``None``
    where this torchvision has none."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    return decode_jpeg, ImageReadMode.UNCHANGED


def decode(path: str) -> torch.Tensor:
    """The RGB image of a file as uint8 (3, H, W), as the release's loader gives it (PIL ``convert('RGB')``)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataNotFound(f"cannot read image {path}: {exc.strerror or exc} (check the dataset's files)") from None
    if data[:3] == _JPEG_MAGIC and _jpeg_decoder() is not None:
        decode_jpeg, unchanged = _jpeg_decoder()
        try:
            image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=unchanged)
        except RuntimeError:
            image = None  # a JPEG libjpeg-turbo refuses through torchvision: PIL says what it makes of it
        if image is not None and image.shape[0] == 3:  # YCbCr (or RGB) decoded to RGB, as PIL's
            return image
        if image is not None and image.shape[0] == 1:  # grey: PIL's convert('RGB') repeats it
            return image.expand(3, -1, -1).contiguous()
        # CMYK / YCCK (Adobe's inverted CMYK among them): PIL's own conversion, as the release's loader
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataNotFound(f"cannot decode image {path}: {exc} (a damaged file? download the dataset again)") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


#: ``test_interpolation`` -> PIL's filter (torchvision's ``InterpolationMode`` on a PIL image).
INTERPOLATIONS = ("bilinear", "bicubic")


def _pil_filter(interpolation: str) -> int:
    from PIL import Image

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return Image.BILINEAR if interpolation == "bilinear" else Image.BICUBIC


def _pil_resize(image: torch.Tensor, width: int, height: int, interpolation: str) -> torch.Tensor:
    from PIL import Image

    hwc = image.permute(1, 2, 0).contiguous().numpy()  # a view where the image is stored HWC (decode_jpeg's)
    out = np.asarray(Image.fromarray(hwc).resize((width, height), _pil_filter(interpolation)))
    return torch.from_numpy(out.copy()).permute(2, 0, 1)


def resize(image: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """``transforms.Resize((size, size))`` of a uint8 (3, H, W) image, as on a PIL image (PIL bilinear,
    or bicubic)."""
    if image.shape[1] == size and image.shape[2] == size:
        return image  # PIL returns a copy at the same size
    return _pil_resize(image, size, size, interpolation)


def resize_shorter(image: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """``transforms.Resize(size)`` (an int: the shorter side) of a uint8 (3, H, W) image, as torchvision
    0.10 (the MLS release's) and today's run it on a PIL image: the shorter side becomes ``size``, the
    longer ``int(size * long / short)`` (truncated); an image whose shorter side is ``size`` is kept."""
    h, w = image.shape[1:]
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return _pil_resize(image, new_w, new_h, interpolation)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """``transforms.CenterCrop(size)`` of a (C, H, W) image at least ``size`` on each side: the offsets
    ``int(round((H - size) / 2))`` (Python's round, half to even) as torchvision's ``center_crop``."""
    h, w = image.shape[1:]
    if h < size or w < size:  # torchvision pads here; resize_shorter(int(S / crop_pct)) never leaves it smaller
        raise ValueError(f"center_crop: a {h}x{w} image is smaller than {size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[:, top:top + size, left:left + size]


def crop_flip_one(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """:func:`~osrbench.data.stream.crop_flip` of one (C, H, W) image with offsets (dy, dx) and its
    flip, by slicing the zero-padded image: the same pixels without the batched gather (a tenth
    of its time per 448-px image on the CPU; ``tests/test_feed.py`` holds them equal)."""
    h, w = image.shape[1:]
    out = torch.nn.functional.pad(image, (PAD, PAD, PAD, PAD))[:, dy:dy + h, dx:dx + w]
    return out.flip(-1) if flip else out


def inputs(images: torch.Tensor, normalize: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`~osrbench.data.stream.to_input` of a batch of 3-channel images; on the CPU image by image,
    as a cast then the same float32 divisions and subtraction (the same values, every operation
    is per pixel: 3x faster at 448 px, where a batch of floats outgrows the caches)."""
    if images.device.type != "cpu" or normalize not in NORMALIZE_CHOICES:
        return to_input(images, normalize, out)
    out = torch.empty(images.shape, dtype=torch.float32) if out is None else out
    scale = torch.tensor(255.0)
    stats = NORMALIZE_STATS.get(normalize)
    mean, std = (torch.tensor(stats[0]).view(3, 1, 1), torch.tensor(stats[1]).view(3, 1, 1)) if stats else (None, None)
    for image, o in zip(images, out):
        o.copy_(image).div_(scale)  # float32(x) / 255 in float32, as to_input's one kernel
        if stats:
            o.sub_(mean).div_(std)
    return out


def test_image(path: str, size: int, crop_pct: float = 0.0, interpolation: str = "bilinear") -> torch.Tensor:
    """One image as the run's test transform makes it, before ToTensor: uint8 (3, size, size).

    ``crop_pct`` 0: the MLS release's ``Resize((S, S))``; else ``Resize(int(S / crop_pct))`` (the shorter
    side) then ``CenterCrop(S)``, the ImageNet evaluation's transform (timm's ``crop_pct``; 0.875 for
    ``resnet50``, 224 px: Resize(256) + CenterCrop(224)). ``interpolation``: the resize's filter.
    """
    if not crop_pct:
        return resize(decode(path), size, interpolation).contiguous()
    return center_crop(resize_shorter(decode(path), int(size / crop_pct), interpolation), size).contiguous()


test_image.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@contextmanager
def _pool(workers: int) -> Iterator[Executor | None]:
    if workers <= 0:
        yield None
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="osrbench-decode")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: Executor | None, fn: Callable[[int], torch.Tensor], items: Sequence[int]) -> list:
    """``fn`` of each item, in the pool (futures) or at once (tensors), in the items' order."""
    if pool is None:
        return [fn(i) for i in items]
    return [pool.submit(fn, i) for i in items]


def _gather(results: list, size: int, pin: bool) -> torch.Tensor:
    """Stack per-image results (tensors or futures) into one uint8 (B, 3, S, S) batch, in order."""
    out = torch.empty((len(results), 3, size, size), dtype=torch.uint8, pin_memory=pin)
    for i, r in enumerate(results):
        out[i] = r.result() if isinstance(r, Future) else r
    return out


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


class ImageSet:
    """Image files (``paths``, in order) as uint8 (N, 3, S, S) images through the run's test
    transform (:func:`test_image` with ``crop_pct`` and ``interpolation``), read like a tensor.

    ``len``, ``shape``, ``split(n)`` (consecutive chunks, decoded one chunk ahead) and indexing by a
    slice or an index tensor give uint8 tensors, so :mod:`osrbench.evaluation`, the fit stage and
    :mod:`osrbench.scoring` read a file-backed split as they read an in-memory one. When the
    decoded set fits :data:`KEEP_SHARE` of the host's available memory (``keep=None``), it is
    decoded once, at the first read, and kept; else every read decodes its images.
    """

    def __init__(self, paths: Sequence[str], size: int, workers: int | None = None, keep: bool | None = None,
                 crop_pct: float = 0.0, interpolation: str = "bilinear") -> None:
        self.paths = tuple(paths)
        self.size = size
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self.workers = decode_workers() if workers is None else workers
        self.keep = keep  # None: decided at the first read, by the memory available then
        self._kept: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), 3, self.size, self.size))

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape)

    def _one(self, i: int) -> torch.Tensor:
        return test_image(self.paths[i], self.size, self.crop_pct, self.interpolation)

    def _decode(self, index: Sequence[int]) -> torch.Tensor:
        with _pool(min(self.workers, len(index))) as pool:
            return _gather(_submit(pool, self._one, index), self.size, False)

    def _all(self) -> torch.Tensor | None:
        if self.keep is None:
            self.keep = self.nbytes <= KEEP_SHARE * _available_bytes()
        if self.keep and self._kept is None:
            self._kept = self._decode(range(len(self)))
        return self._kept

    def __getitem__(self, index: int | slice | torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        kept = self._all()
        if kept is not None:
            return kept[index]
        if isinstance(index, int):
            return self._decode([range(len(self))[index]])[0]
        if isinstance(index, slice):
            return self._decode(range(len(self))[index])
        return self._decode([int(i) for i in torch.as_tensor(index).reshape(-1).tolist()])

    def split(self, n: int) -> Iterator[torch.Tensor]:
        """Consecutive chunks of ``n`` images (the last may be shorter), as ``Tensor.split``."""
        kept = self._all()
        if kept is not None:
            yield from kept.split(n)
            return
        size = self.size
        chunks = [range(s, min(s + n, len(self))) for s in range(0, len(self), n)]
        with _pool(self.workers) as pool:
            ahead: deque[list] = deque()
            for c in chunks:
                ahead.append(_submit(pool, self._one, c))
                if len(ahead) > 1:
                    yield _gather(ahead.popleft(), size, False)
            while ahead:
                yield _gather(ahead.popleft(), size, False)


class FileStream:
    """Shuffled, augmented training batches decoded from files; the contract of ``TrainStream``.

    :param paths: the split's training files (``OpenSetFiles.train.paths``); ``labels`` their known labels.
    :param size: the run's square image size S.
    :param augment: ``none`` or ``crop_flip`` (RandomCrop(S, padding=4), then RandomHorizontalFlip).
    :param normalize: ``none``, ``cifar`` or ``imagenet``.
    :param randaugment: RandAugment magnitude M (0 = off), applied first, at each image's own size.
    :param randaugment_n: N, RandAugment ops per image.
    :param workers: decoding threads (``None``: :func:`decode_workers`); the batches do not depend on it.
    :param images: the :class:`ImageSet` of ``paths`` at ``size`` to share (the split's ``train_x``).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: torch.Tensor,
        batch_size: int,
        seed: int,
        size: int,
        device: torch.device | str = "cpu",
        augment: str = "none",
        normalize: str = "none",
        randaugment: int = 0,
        randaugment_ops: str = "all",
        randaugment_n: int = 1,
        workers: int | None = None,
        images: ImageSet | None = None,
    ) -> None:
        check_stream_args(augment, batch_size)
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.paths = tuple(paths)
        self.device = torch.device(device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.seed = seed
        self.size = size
        self.augment = augment
        self.normalize = normalize
        self.randaugment = randaugment
        self.randaugment_ops = randaugment_ops
        self.randaugment_n = randaugment_n
        self.workers = decode_workers() if workers is None else workers
        #: The training images unaugmented, as the test transform makes them (the fit stage's pass).
        self.images = images if images is not None else ImageSet(self.paths, size, self.workers)

    def __len__(self) -> int:
        """Batches per pass (the last partial batch is kept)."""
        return math.ceil(len(self.paths) / self.batch_size)

    def batches(self, epoch: int, phase: int = 0, into: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The pass's batches: every image once, in the pass's order, augmented with its draws.

        The draws are TrainStream's, in its order (permutation, crop offsets, flips, RandAugment),
        and image ``i`` of the pass gets draw ``i``. ``into(uint8_batch)``: the float32 tensor a
        full batch is written into (a CUDA graph's static input), as in ``TrainStream.batches``.
        """
        n = len(self.paths)
        g = torch.Generator().manual_seed(derive_seed(self.seed, 0, epoch, phase))
        perm = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        ra = None
        if self.randaugment:
            from osrbench.data.randaugment import RandAugmentDraws

            ra = RandAugmentDraws(n, self.randaugment, self.randaugment_ops, g, num_ops=self.randaugment_n)
        paths, order, size = self.paths, perm.tolist(), self.size
        crop = self.augment == "crop_flip"
        dys, dxs, flip = offsets[:, 0].tolist(), offsets[:, 1].tolist(), flips.tolist()

        def one(pos: int) -> torch.Tensor:  # image `pos` of the pass, augmented, at S
            x = decode(paths[order[pos]])
            if ra is not None:
                x = ra.apply_one(x.contiguous(), pos)  # contiguous: decode_jpeg's HWC strides slow the ops
            x = resize(x, size)
            return crop_flip_one(x, dys[pos], dxs[pos], flip[pos]) if crop else x

        pin = self.device.type == "cuda"
        firsts = iter(range(0, n, self.batch_size))
        with _pool(self.workers) as pool:
            pending: deque[tuple[int, list]] = deque()

            def fill() -> None:  # keep AHEAD batches in the pool beyond the one being gathered
                while len(pending) <= AHEAD:
                    first = next(firsts, None)
                    if first is None:
                        return
                    pending.append((first, _submit(pool, one, range(first, min(first + self.batch_size, n)))))

            fill()
            while pending:
                start, results = pending.popleft()
                fill()
                sl = slice(start, start + len(results))
                x = _gather(results, size, pin).to(self.device, non_blocking=pin)
                y = self.labels[perm[sl].to(self.device)]
                out = into(x) if into is not None and len(x) == self.batch_size else None
                yield inputs(x, self.normalize, out), y
