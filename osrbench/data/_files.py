"""Helpers shared by the file-based data sources (MNIST, Fashion-MNIST, CIFAR, SVHN, Tiny-ImageNet).

Every reader here turns a missing, truncated or malformed file into :class:`DataNotFound` whose
message names the file and says how to get it, never a raw numpy / pickle / zlib traceback.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from osrbench.datasets import DataNotFound, OpenSetData, select


# --------------------------------------------------------------------------------------------
# messages


def download_hint(cli_name: str, root: Path, manual: str) -> str:
    """The standard "how to get it" tail of a missing-file message; ``manual`` says how to fetch
    the file by hand (official URL and where to put it)."""
    return f"run `osrbench data download {cli_name} --data-root {root}`, or {manual}"


def missing_line(what: str, where: Path, hint: str) -> str:
    return f"missing {what} in {where} ({hint})"


def raise_if(problems: Sequence[str]) -> None:
    if problems:
        raise DataNotFound("\n".join(problems))


def download_failed(name: str, root: Path, exc: BaseException, manual: str) -> DataNotFound:
    """The error a failed download becomes."""
    return DataNotFound(
        f"download of {name} into {root} failed ({type(exc).__name__}: {exc}); "
        f"no network access to the dataset host? Place the files by hand instead: {manual}"
    )


def run_download(name: str, root: Path, manual: str, fetch: Callable[[], Any],
                 check: Callable[[Path], list[str]]) -> None:
    """Run ``fetch`` (a torchvision download), turning any failure into :class:`DataNotFound`,
    then re-check the files."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetch()
    except DataNotFound:
        raise
    except Exception as exc:  # URLError, RuntimeError (torchvision mirrors), OSError, integrity errors
        raise download_failed(name, root, exc, manual) from exc
    problems = check(root)
    if problems:
        raise DataNotFound(f"download of {name} into {root} finished but the files are still not usable:\n"
                           + "\n".join(problems))


# --------------------------------------------------------------------------------------------
# file lookup


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz`` (the plain file preferred), or None."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """The content of a file, gunzipped when its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataNotFound(f"cannot read {path}: {type(exc).__name__}: {exc} (corrupt or truncated file; "
                           f"delete it and fetch it again)") from exc


# --------------------------------------------------------------------------------------------
# idx (MNIST / Fashion-MNIST)

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an unsigned-byte idx file (optionally gzipped) with a full header check."""
    data = read_bytes(path)
    bad = f"{path} is not a valid idx file"
    if len(data) < 4:
        raise DataNotFound(f"{bad}: only {len(data)} bytes (truncated; delete it and fetch it again)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataNotFound(f"{bad}: magic number {found}, expected {magic} (wrong or corrupt file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataNotFound(f"{bad}: header truncated ({len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise DataNotFound(
            f"{bad}: header announces {dims} = {expected} bytes of data but the file holds "
            f"{len(data) - header} (truncated or corrupt; delete it and fetch it again)"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def idx_header(path: Path, magic: int) -> tuple[int, ...]:
    """The dimensions an idx file (optionally gzipped) announces, checked against its size without
    reading the data: the magic number, a whole header, and header + data bytes = the file's
    (uncompressed) size. For a ``.gz`` file the size is the gzip trailer's (ISIZE, mod 2**32).
    :class:`DataNotFound` naming the file when any of it is wrong."""
    bad = f"{path} is not a valid idx file"
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                header = f.read(header_len)
            with open(path, "rb") as raw:
                raw.seek(0, 2)
                if raw.tell() < 18:
                    raise DataNotFound(f"{path}: a gzip file of {raw.tell()} bytes (truncated; delete it and fetch it again)")
                raw.seek(-4, 2)
                size = int.from_bytes(raw.read(4), "little")  # ISIZE: uncompressed length mod 2**32
            modulus = 2**32
        else:
            with open(path, "rb") as f:
                header = f.read(header_len)
            size, modulus = path.stat().st_size, None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataNotFound(f"cannot read {path}: {type(exc).__name__}: {exc} (corrupt or truncated file; "
                           "delete it and fetch it again)") from exc
    if len(header) < 4:
        raise DataNotFound(f"{bad}: only {len(header)} bytes (truncated; delete it and fetch it again)")
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        raise DataNotFound(f"{bad}: magic number {found}, expected {magic} (wrong or corrupt file)")
    if len(header) < header_len:
        raise DataNotFound(f"{bad}: header truncated ({len(header)} bytes)")
    dims = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if modulus and expected % modulus != size:
        raise DataNotFound(f"{bad}: header announces {dims} = {expected:,} bytes uncompressed but the gzip trailer "
                           f"says {size:,} (truncated or corrupt; delete it and fetch it again)")
    if not modulus and expected != size:
        raise DataNotFound(f"{bad}: header announces {dims} = {expected - header_len} bytes of data but the file "
                           f"holds {size - header_len} (truncated or corrupt; delete it and fetch it again)")
    return dims


def idx_pair_problems(images: Path, labels: Path, num_classes: int) -> list[str]:
    """What :func:`read_idx_pair` would refuse, found cheaply: both headers against the file sizes
    (the images are not read), the labels read in full (small) and checked for range and count."""
    try:
        dims = idx_header(images, IDX_IMAGES_MAGIC)
        y = read_idx(labels, IDX_LABELS_MAGIC)
        if len(y) != dims[0]:
            raise DataNotFound(f"{images} holds {dims[0]} images but {labels} holds {len(y)} labels "
                               "(mismatched or truncated files)")
        check_labels(y, num_classes, labels)
    except DataNotFound as exc:
        return [str(exc).splitlines()[0]]
    return []


def read_idx_pair(images: Path, labels: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from an idx images/labels pair."""
    x = read_idx(images, IDX_IMAGES_MAGIC)
    y = read_idx(labels, IDX_LABELS_MAGIC)
    if len(x) != len(y):
        raise DataNotFound(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels "
                           "(mismatched or truncated files)")
    check_labels(y, num_classes, labels)
    return x[:, None], y.astype(np.int64)


def check_labels(y: np.ndarray, num_classes: int, path: Path) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataNotFound(f"{path}: labels outside 0..{num_classes - 1} "
                           f"(found {int(y.min())}..{int(y.max())}; corrupt file?)")


# --------------------------------------------------------------------------------------------
# CIFAR python pickles

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (a data file must not run code)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a data file")


def read_pickle_dict(path: Path) -> dict[str, Any]:
    """Load a CIFAR batch: a dict pickled by Python 2 (``latin1`` strings) or 3 (bytes keys).
    Keys come back as ``str``."""
    raw = read_bytes(path)
    try:
        obj = _DataUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, AttributeError, ...
        raise DataNotFound(f"cannot unpickle {path}: {type(exc).__name__}: {exc} "
                           "(corrupt or truncated file; delete it and fetch it again)") from exc
    if not isinstance(obj, dict):
        raise DataNotFound(f"{path} does not hold a CIFAR batch (a dict), found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one CIFAR python batch."""
    d = read_pickle_dict(path)
    for key in ("data", label_key):
        if key not in d:
            raise DataNotFound(f"{path} has no '{key}' entry (keys: {sorted(map(str, d))}); wrong file?")
    data, labels = d["data"], d[label_key]
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            x = np.frombuffer(data, dtype=np.uint8)
        else:
            x = np.asarray(data)
            if x.dtype != np.uint8:
                raise ValueError(f"data has dtype {x.dtype}, expected uint8")
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        x = x.reshape(len(y), 3, 32, 32)
    except (ValueError, TypeError) as exc:
        raise DataNotFound(f"{path}: malformed CIFAR batch ({exc}); delete it and fetch it again") from exc
    check_labels(y, num_classes, path)
    return x, y


def cifar_batch_problems(path: Path, label_key: str, num_classes: int) -> list[str]:
    """What :func:`cifar_batch` would refuse (it is read, with the safe unpickler: a batch is 30 MB,
    a fraction of a second): a damaged pickle, missing keys, wrong sizes, labels out of range."""
    try:
        cifar_batch(path, label_key, num_classes)
    except DataNotFound as exc:
        return [str(exc).splitlines()[0]]
    return []


# --------------------------------------------------------------------------------------------
# MATLAB v5 files (SVHN)


def mat_v5_problem(path: Path) -> str | None:
    """Why a MATLAB v5 file is damaged, from its structure alone (None when whole): the 128-byte
    header, then every top-level element's tag (type, byte count) walked to the end of the file, so
    a truncated or padded file is found without reading its data."""
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(128)
            if len(head) < 128 or not head.startswith(b"MATLAB"):
                return f"{path} is not a MATLAB .mat file (no MATLAB header; corrupt or wrong file)"
            endian = {b"IM": "<", b"MI": ">"}.get(head[126:128])
            if endian is None:
                if b"7.3" in head[:116]:
                    return f"{path} is a MATLAB 7.3 (HDF5) file; the official v5 file is expected"
                return f"{path}: damaged MATLAB header (no byte-order mark)"
            pos, elements = 128, 0
            while pos < size:
                if size - pos < 8:
                    break  # final padding
                f.seek(pos)
                kind, nbytes = struct.unpack(endian + "II", f.read(8))
                step = 8 if kind >> 16 else 8 + nbytes  # a small element holds its data in the tag
                if pos + step > size:
                    return (f"{path} is truncated: element {elements + 1} announces {nbytes:,} bytes at offset "
                            f"{pos:,} but the file ends at {size:,} (delete it and fetch it again)")
                pos += step
                elements += 1
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or type(exc).__name__}"
    if not elements:
        return f"{path} holds no variables (truncated; delete it and fetch it again)"
    return None


# --------------------------------------------------------------------------------------------
# the common step: whole dataset -> open-set parts of a split -> image size


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """A torch view of a numpy array, copying only when it is read-only or not contiguous."""
    return torch.from_numpy(np.require(a, requirements=["C", "W"]))


def build_open_set(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    test_x: np.ndarray | torch.Tensor,
    test_y: np.ndarray | torch.Tensor,
    split: Any,
    image_size: int,
    unknown_x: np.ndarray | torch.Tensor | None = None,
    unknown_y: np.ndarray | torch.Tensor | None = None,
) -> OpenSetData:
    """Cut ``(train, test)`` (and an outside unknown source, for CIFAR+N) into the parts of
    ``split`` with :func:`osrbench.datasets.select`, then resize every part to ``image_size``.

    Images are uint8 (N, C, H, W); the channel count is kept (grey stays 1 channel).
    """
    def t(a: Any) -> torch.Tensor | None:
        if a is None or isinstance(a, torch.Tensor):
            return a
        return as_tensor(a)

    data = select(
        t(train_x), t(train_y).long(), t(test_x), t(test_y).long(),
        known=[int(c) for c in split.known], unknown=[int(c) for c in split.unknown],
        unknown_x=t(unknown_x), unknown_y=None if unknown_y is None else t(unknown_y).long(),
    )
    return data.resized(image_size)


def concat(parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*parts)
    return np.concatenate(xs), np.concatenate(ys)
