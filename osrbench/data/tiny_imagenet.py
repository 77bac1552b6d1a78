"""Tiny-ImageNet-200 from the official zip layout, with an on-disk cache of the decoded images.

Layout (``ROOT/tiny-imagenet-200/``, as the official zip unpacks)::

    train/<wnid>/images/*.JPEG        (train/<wnid>/*.JPEG also accepted)
    val/images/*.JPEG + val/val_annotations.txt   (tab separated: file, wnid, bbox ...)
    wnids.txt                          (optional; checked against train/ when present)

An already re-foldered ``val/<wnid>/images/*.JPEG``, ``val/<wnid>/*.JPEG`` or ``val/images/<wnid>/``
(the MLS release's layout) is accepted too. The raw layout is read straight from
``val_annotations.txt``: nothing has to be moved by hand (METHODS.md §7.1).

Class ids are indices into the **sorted** list of the wnid folder names of ``train/``. The val
wnids must equal the train wnids and every class needs at least one val image; on the real set
(200 classes) each class must hold exactly 500 train and 50 val images.

Decoding 110,000 JPEGs is slow, so the decoded uint8 arrays at image size S are cached in
``tiny-imagenet-200/osrbench-cache-{S}.npz`` (written atomically), keyed by a fingerprint of the
file list (relative paths, sizes, modification times, labels): a changed tree is decoded again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from osrbench.datasets import DataNotFound, OpenSetData
from osrbench.data._files import build_open_set, raise_if, run_download
from osrbench.data.transforms import resize_uint8

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
NATIVE_SIZE = 64
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
#: Expected per-class counts of the real set (checked when the tree has 200 classes).
REAL_CLASSES, REAL_TRAIN_PER_CLASS, REAL_VAL_PER_CLASS = 200, 500, 50
CACHE_VERSION = "1"
_CHUNK = 2048
_SHOW = 5  # how many offending names a message lists


def _hint(root: Path) -> str:
    return (f"run `osrbench data download tiny_imagenet --data-root {root}`, "
            f"or fetch {URL} by hand and unzip it in {root}")


def cache_path(root: Path, size: int) -> Path:
    return Path(root) / FOLDER / f"osrbench-cache-{size}.npz"


# --------------------------------------------------------------------------------------------
# scanning the tree (no decoding)


@dataclass(frozen=True)
class Layout:
    """The image files of a Tiny-ImageNet tree and their class ids (index into ``wnids``)."""

    base: Path
    wnids: tuple[str, ...]
    train: tuple[tuple[Path, int], ...]
    val: tuple[tuple[Path, int], ...]

    def fingerprint(self, size: int) -> str:
        h = hashlib.sha256(f"osrbench-tin v{CACHE_VERSION} size={size}\n".encode())
        h.update(("\t".join(self.wnids) + "\n").encode())
        for part, items in (("train", self.train), ("val", self.val)):
            for path, label in items:
                st = path.stat()
                h.update(f"{part}\t{path.relative_to(self.base)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def _images_in(folder: Path) -> list[Path]:
    with os.scandir(folder) as it:
        return sorted(Path(e.path) for e in it
                      if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)


def _subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir())


def _class_images(folder: Path) -> list[Path]:
    """Images of one class folder: ``folder/images/*`` when that exists, else ``folder/*``."""
    inner = folder / "images"
    return _images_in(inner if inner.is_dir() else folder)


def _few(names: list[str]) -> str:
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def _scan_val(val: Path, ids: dict[str, int], problems: list[str]) -> list[tuple[Path, int]]:
    images_dir = val / "images"
    ann = val / "val_annotations.txt"
    raw = _images_in(images_dir) if images_dir.is_dir() else []
    items: list[tuple[Path, int]] = []
    if raw:  # the official layout: one flat folder + the annotations file
        if not ann.is_file():
            problems.append(f"missing val_annotations.txt in {val} (it gives the class of each image in "
                            f"{images_dir}; it comes with the official zip: {URL})")
            return []
        mapping: dict[str, str] = {}
        try:
            lines = ann.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"cannot read {ann}: {type(exc).__name__}: {exc}")
            return []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2 or not cols[0] or not cols[1]:
                problems.append(f"{ann} line {n} is malformed (expected 'file<TAB>wnid<TAB>bbox...'): {line!r}")
                return []
            mapping[cols[0].strip()] = cols[1].strip()
        unknown_wnids = sorted({w for w in mapping.values() if w not in ids})
        if unknown_wnids:
            problems.append(f"{ann} names wnids that are not folders of train/: {_few(unknown_wnids)}")
        present = {p.name for p in raw}
        unlabelled = sorted(present - mapping.keys())
        if unlabelled:
            problems.append(f"{len(unlabelled)} images in {images_dir} are not listed in {ann.name}: "
                            f"{_few(unlabelled)}")
        absent = sorted(mapping.keys() - present)
        if absent:
            problems.append(f"{len(absent)} images listed in {ann.name} are missing from {images_dir}: {_few(absent)}")
        items = [(p, ids[mapping[p.name]]) for p in raw if mapping.get(p.name) in ids]
        return items
    # re-foldered: val/images/<wnid>/ (MLS) or val/<wnid>/[images/]
    holder = images_dir if images_dir.is_dir() and _subdirs(images_dir) else val
    folders = [d for d in _subdirs(holder) if not (holder is val and d == "images")]
    if not folders:
        problems.append(f"{val} holds neither images/ with val_annotations.txt nor one folder per wnid "
                        f"(unzip the official archive again: {URL})")
        return []
    strangers = [d for d in folders if d not in ids]
    if strangers:
        problems.append(f"{holder} has folders that are not wnids of train/: {_few(strangers)}")
    for d in folders:
        if d in ids:
            items.extend((p, ids[d]) for p in _class_images(holder / d))
    return items


def scan(root: Path) -> Layout:
    """List the train/val images and their class ids; :class:`DataNotFound` on any problem."""
    root = Path(root)
    base = root / FOLDER
    if not base.is_dir():
        raise DataNotFound(f"missing folder {FOLDER}/ in {root} ({_hint(root)})")
    problems = [f"missing folder {sub}/ in {base} ({_hint(root)})"
                for sub in ("train", "val") if not (base / sub).is_dir()]
    raise_if(problems)
    try:
        wnids = _subdirs(base / "train")
        if not wnids:
            raise DataNotFound(f"{base / 'train'} holds no class (wnid) folders ({_hint(root)})")
        ids = {w: i for i, w in enumerate(wnids)}
        train: list[tuple[Path, int]] = []
        empty = []
        per_train = []
        for w in wnids:
            imgs = _class_images(base / "train" / w)
            per_train.append(len(imgs))
            if not imgs:
                empty.append(w)
            train.extend((p, ids[w]) for p in imgs)
        if empty:
            problems.append(f"no train images for {len(empty)} classes in {base / 'train'}: {_few(empty)}")
        listed = base / "wnids.txt"
        if listed.is_file():
            names = {line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()}
            if names != set(wnids):
                diff = sorted(names ^ set(wnids))
                problems.append(f"{listed} and the folders of {base / 'train'} name different wnids: {_few(diff)}")
        val = _scan_val(base / "val", ids, problems)
    except OSError as exc:
        raise DataNotFound(f"cannot list {base}: {type(exc).__name__}: {exc}") from exc
    raise_if(problems)
    per_val = np.bincount(np.array([c for _, c in val], dtype=np.int64), minlength=len(wnids))
    no_val = [w for w, n in zip(wnids, per_val) if n == 0]
    if no_val:
        problems.append(f"val wnids differ from train wnids: {len(no_val)} train classes have no val image: "
                        f"{_few(no_val)} (incomplete val/ or val_annotations.txt)")
    if len(wnids) == REAL_CLASSES:
        bad_train = [f"{w} ({n})" for w, n in zip(wnids, per_train) if n != REAL_TRAIN_PER_CLASS]
        bad_val = [f"{w} ({n})" for w, n in zip(wnids, per_val) if n != REAL_VAL_PER_CLASS]
        if bad_train:
            problems.append(f"{len(bad_train)} classes of {base / 'train'} do not hold "
                            f"{REAL_TRAIN_PER_CLASS} images: {_few(bad_train)} (incomplete unzip? {_hint(root)})")
        if bad_val:
            problems.append(f"{len(bad_val)} classes do not have {REAL_VAL_PER_CLASS} val images: "
                            f"{_few(bad_val)} (incomplete unzip? {_hint(root)})")
    raise_if(problems)
    return Layout(base=base, wnids=tuple(wnids), train=tuple(train), val=tuple(val))


#: The first bytes of the image formats the tree may hold (JPEG, PNG).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


def _header_problems(layout: Layout) -> list[str]:
    """Images that are empty or do not start like a JPEG or PNG (8 bytes read per file)."""
    bad: list[str] = []
    for path, _ in layout.train + layout.val:
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as exc:
            bad.append(f"{path.relative_to(layout.base)} ({exc.strerror})")
            continue
        if not head.startswith(_MAGIC):
            bad.append(f"{path.relative_to(layout.base)} ({'empty' if not head else 'not a JPEG or PNG'})")
    if not bad:
        return []
    return [f"{len(bad)} image file(s) in {layout.base} are damaged: {_few(bad)} "
            f"(unzip the official archive again: {URL})"]


def check(root: Path) -> list[str]:
    """One line per problem with the tree (empty = ready). Lists files and reads the first bytes of
    each image (a JPEG or PNG signature); decodes nothing."""
    try:
        layout = scan(root)
    except DataNotFound as exc:
        return str(exc).splitlines()
    return _header_problems(layout)


# --------------------------------------------------------------------------------------------
# decoding and the cache


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (NATIVE_SIZE, NATIVE_SIZE):
                im = im.resize((NATIVE_SIZE, NATIVE_SIZE), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except Exception as exc:  # UnidentifiedImageError, truncated data, decompression bomb ...
        raise DataNotFound(f"cannot decode {path}: {type(exc).__name__}: {exc} "
                           f"(corrupt file; unzip the official archive again: {URL})") from exc


def _decode_all(items: tuple[tuple[Path, int], ...], size: int) -> np.ndarray:
    out = np.empty((len(items), 3, size, size), dtype=np.uint8)
    paths = [p for p, _ in items]
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for start in range(0, len(paths), _CHUNK):
            chunk = np.stack(list(pool.map(_decode, paths[start:start + _CHUNK])))
            if size != NATIVE_SIZE:
                chunk = resize_uint8(torch.from_numpy(chunk), size).numpy()
            out[start:start + len(chunk)] = chunk
    return out


_KEYS = ("train_x", "train_y", "val_x", "val_y")


def _read_cache(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            return {k: z[k] for k in _KEYS}
    except Exception as exc:  # a damaged cache is rebuilt, never fatal
        warnings.warn(f"ignoring unreadable cache {path} ({type(exc).__name__}: {exc}); decoding again",
                      stacklevel=3)
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray], fingerprint: str) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, fingerprint=np.array(fingerprint), **arrays)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:  # read-only data root, full disk: work without a cache
        warnings.warn(f"could not write the Tiny-ImageNet cache {path} ({exc}); the next load decodes again",
                      stacklevel=3)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def arrays(root: Path, size: int) -> tuple[Layout, dict[str, np.ndarray]]:
    """The whole set at image size ``size``: decoded once, then served from the cache."""
    layout = scan(root)
    fp = layout.fingerprint(size)
    path = cache_path(root, size)
    cached = _read_cache(path, fp)
    if cached is not None:
        return layout, cached
    data = None
    if size != NATIVE_SIZE:  # derive from a valid native-size cache rather than decoding again
        native = _read_cache(cache_path(root, NATIVE_SIZE), layout.fingerprint(NATIVE_SIZE))
        if native is not None:
            data = {**native,
                    "train_x": resize_uint8(torch.from_numpy(native["train_x"]), size).numpy(),
                    "val_x": resize_uint8(torch.from_numpy(native["val_x"]), size).numpy()}
    if data is None:
        data = {
            "train_x": _decode_all(layout.train, size),
            "train_y": np.array([c for _, c in layout.train], dtype=np.int64),
            "val_x": _decode_all(layout.val, size),
            "val_y": np.array([c for _, c in layout.val], dtype=np.int64),
        }
    _write_cache(path, data, fp)
    return layout, data


def load(root: Path, split: Any, image_size: int) -> OpenSetData:
    """Tiny-ImageNet: train/ (known) and val/ (known and unknown), (N, 3, S, S) uint8."""
    _, a = arrays(root, image_size)
    return build_open_set(a["train_x"], a["train_y"], a["val_x"], a["val_y"], split, image_size)


def download(root: Path) -> None:
    """Fetch and unzip the official archive into ``ROOT`` with torchvision; failures raise DataNotFound."""
    root = Path(root)
    if not check(root):
        return

    def fetch() -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(URL, download_root=str(root), md5=MD5)

    manual = f"download {URL} and unzip it in {root} (giving {root / FOLDER}/train, val, wnids.txt)"
    run_download("tiny_imagenet", root, manual, fetch, check)
