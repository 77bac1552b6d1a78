"""SVHN (cropped digits, ``train`` and ``test`` only; no ``extra``) from the official .mat files.

Layout: ``ROOT/svhn/{train_32x32.mat, test_32x32.mat}`` (what ``download`` writes) or directly
``ROOT/{train_32x32.mat, test_32x32.mat}`` (torchvision's ``SVHN(ROOT)`` layout). Each file is read
with ``scipy.io.loadmat``: ``X`` is H×W×C×N uint8, ``y`` is N×1 with label 10 for the digit 0,
which is mapped to 0 here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from osrbench.datasets import DataNotFound, OpenSetData
from osrbench.data._files import build_open_set, download_hint, mat_v5_problem, raise_if, run_download

SUBDIR = "svhn"
FILES = ("train_32x32.mat", "test_32x32.mat")
URL = "http://ufldl.stanford.edu/housenumbers/"


def _candidates(root: Path) -> list[Path]:
    return [Path(root) / SUBDIR, Path(root)]


def find(root: Path, name: str) -> Path | None:
    """``ROOT/svhn/NAME`` or else ``ROOT/NAME``."""
    for folder in _candidates(root):
        if (folder / name).is_file():
            return folder / name
    return None


def _missing(root: Path) -> list[str]:
    root = Path(root)
    return [
        f"missing {name} in {root / SUBDIR} (or directly in {root}) "
        f"({download_hint('svhn', root, f'fetch {URL}{name} by hand and place it there')})"
        for name in FILES
        if find(root, name) is None
    ]


def mat_problems(path: Path) -> list[str]:
    """What :func:`read_mat` would refuse, found without reading the images: the file's structure
    (header and element tags to the end, :func:`osrbench.data._files.mat_v5_problem`), the shapes and
    types of ``X`` and ``y`` from the variable headers, and the labels (small) read in full."""
    import scipy.io

    why = mat_v5_problem(path)
    if why is not None:
        return [why]
    try:
        found = {name: (shape, kind) for name, shape, kind in scipy.io.whosmat(str(path))}
        if "X" not in found or "y" not in found:
            return [f"{path} has no X / y variables (found {sorted(found)})"]
        (x_shape, x_kind), (y_shape, _) = found["X"], found["y"]
        n = int(np.prod(y_shape))
        if len(x_shape) != 4 or x_shape[2] != 3 or x_shape[3] != n or x_kind != "uint8":
            return [f"{path}: X has shape {x_shape} {x_kind}, expected (H, W, 3, {n}) uint8"]
        y = np.asarray(scipy.io.loadmat(str(path), variable_names=("y",))["y"]).reshape(-1)
    except Exception as exc:  # ValueError, OSError, MatReadError, zlib errors, ...
        return [f"cannot read {path}: {type(exc).__name__}: {exc} (corrupt or truncated file; "
                "delete it and fetch it again)"]
    if len(y) and (y.min() < 0 or y.max() > 10):  # read_mat's rule
        return [f"{path}: labels outside 1..10 (found {y.min()}..{y.max()}; corrupt file?)"]
    return []


def check(root: Path) -> list[str]:
    """One line per missing .mat file, else per damaged one (empty = ready)."""
    missing = _missing(root)
    return missing or [line for name in FILES for line in mat_problems(find(root, name))]  # type: ignore[arg-type]


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 with 10 -> 0."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as exc:  # ValueError, OSError, MatReadError, zlib errors, ...
        raise DataNotFound(f"cannot read {path}: {type(exc).__name__}: {exc} "
                           "(corrupt or truncated file; delete it and fetch it again)") from exc
    if "X" not in mat or "y" not in mat:
        raise DataNotFound(f"{path} has no X / y variables (found {sorted(k for k in mat if not k.startswith('__'))})")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y) or x.dtype != np.uint8:
        raise DataNotFound(f"{path}: X has shape {x.shape} {x.dtype}, expected (H, W, 3, {len(y)}) uint8")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() > 10):
        raise DataNotFound(f"{path}: labels outside 1..10 (found {y.min()}..{y.max()}; corrupt file?)")
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def load(root: Path, split: Any, image_size: int) -> OpenSetData:
    """SVHN train (known digits) / test (known and unknown digits), (N, 3, S, S) uint8."""
    raise_if(_missing(root))  # reading the files checks the rest
    train_x, train_y = read_mat(find(root, FILES[0]))  # type: ignore[arg-type]
    test_x, test_y = read_mat(find(root, FILES[1]))  # type: ignore[arg-type]
    return build_open_set(train_x, train_y, test_x, test_y, split, image_size)


def download(root: Path) -> None:
    """Fetch ``train`` and ``test`` into ``ROOT/svhn`` with torchvision; failures raise DataNotFound."""
    root = Path(root)
    if not check(root):
        return

    def fetch() -> None:
        from torchvision.datasets import SVHN

        for name, split in zip(FILES, ("train", "test")):
            if find(root, name) is None:
                SVHN(str(root / SUBDIR), split=split, download=True)

    manual = f"download {URL}train_32x32.mat and {URL}test_32x32.mat into {root / SUBDIR}"
    run_download("svhn", root, manual, fetch, check)
