"""MNIST and Fashion-MNIST from idx files (torchvision's layout, plain or gzipped).

Layouts (what ``download`` writes and what a manual placement must match)::

    ROOT/MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte,
                    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte}[.gz]
    ROOT/FashionMNIST/raw/  (same four names)

Fashion-MNIST is also found in the folder of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``) when ROOT has no copy; the environment
variable ``OSRBENCH_FASHION_MNIST_DIR`` (or the module constant :data:`FASHION_MNIST_SYSTEM_DIR`)
points elsewhere.

Images are returned as 1-channel uint8 (N, 1, S, S) resized 28 -> S; the host replicates grey to
3 channels on the device (METHODS.md §1), so nothing is replicated here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from osrbench.datasets import OpenSetData
from osrbench.data._files import (
    build_open_set,
    download_hint,
    find_file,
    idx_pair_problems,
    missing_line,
    raise_if,
    read_idx_pair,
    run_download,
)

#: The four idx files, as (train images, train labels, test images, test labels).
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: Where the Debian package ``dataset-fashion-mnist`` installs the gzipped idx files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "OSRBENCH_FASHION_MNIST_DIR"

#: Where each ``NAME.gz`` can be fetched by hand (torchvision's mirrors).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def fashion_system_dir() -> Path:
    env = os.environ.get(FASHION_MNIST_ENV)
    return Path(env) if env else FASHION_MNIST_SYSTEM_DIR


def _missing(folder: Path) -> list[str]:
    return [name for name in IDX_FILES if find_file(folder, name) is None]


def _problems(folder: Path, hint: Callable[[str], str]) -> list[str]:
    return [missing_line(f"{name} (or {name}.gz)", folder, hint(name)) for name in _missing(folder)]


def _header_problems(folder: Path) -> list[str]:
    """Of a folder holding all four files: what their idx headers, sizes and labels say is wrong
    (the images are not read; see :func:`osrbench.data._files.idx_pair_problems`)."""
    paths = [find_file(folder, name) for name in IDX_FILES]
    assert all(p is not None for p in paths)
    return idx_pair_problems(paths[0], paths[1], 10) + idx_pair_problems(paths[2], paths[3], 10)


def _load_folder(folder: Path, split: Any, image_size: int) -> OpenSetData:
    paths = [find_file(folder, name) for name in IDX_FILES]
    assert all(p is not None for p in paths)
    train_x, train_y = read_idx_pair(paths[0], paths[1], 10)
    test_x, test_y = read_idx_pair(paths[2], paths[3], 10)
    return build_open_set(train_x, train_y, test_x, test_y, split, image_size)


# --------------------------------------------------------------------------------------------
# MNIST


def mnist_dir(root: Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def check_mnist(root: Path) -> list[str]:
    """One line per missing idx file under ``ROOT/MNIST/raw``, else per damaged one (empty = ready)."""
    def hint(name: str) -> str:
        return download_hint("mnist", Path(root), f"fetch {MNIST_URL}{name}.gz by hand and place it there")

    return _problems(mnist_dir(root), hint) or _header_problems(mnist_dir(root))


def load_mnist(root: Path, split: Any, image_size: int) -> OpenSetData:
    """MNIST train (known digits) / test (known and unknown digits), (N, 1, S, S) uint8."""
    raise_if(check_mnist(root))
    return _load_folder(mnist_dir(root), split, image_size)


def download_mnist(root: Path) -> None:
    """Fetch MNIST into ``ROOT/MNIST/raw`` with torchvision; failures raise DataNotFound."""
    root = Path(root)
    if not check_mnist(root):
        return

    def fetch() -> None:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=True, download=True)

    manual = f"put the four idx files (plain or .gz) into {mnist_dir(root)}; source: {MNIST_URL}"
    run_download("mnist", root, manual, fetch, check_mnist)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def fashion_dirs(root: Path) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order: ROOT/FashionMNIST/raw, the system folder."""
    return [Path(root) / "FashionMNIST" / "raw", fashion_system_dir()]


def _fashion_folder(root: Path) -> Path | None:
    for folder in fashion_dirs(root):
        if not _missing(folder):
            return folder
    return None


def check_fashion_mnist(root: Path) -> list[str]:
    """Empty when ROOT/FashionMNIST/raw or the system folder holds all four intact idx files;
    the header problems of the folder that would be read; otherwise one line per file missing
    from ROOT's folder, plus how to get the system copy."""
    folder = _fashion_folder(root)
    if folder is not None:
        return _header_problems(folder)
    local, system = fashion_dirs(root)
    def hint(name: str) -> str:
        return (f"run `osrbench data download fashion-mnist --data-root {root}`, or "
                f"`apt-get install dataset-fashion-mnist` (installs {FASHION_MNIST_SYSTEM_DIR}), "
                f"or fetch {FASHION_URL}{name}.gz by hand and place it there")

    problems = _problems(local, hint)
    sys_missing = _missing(system)
    problems.append(
        f"Fashion-MNIST not found in the system folder {system} either "
        f"(missing {', '.join(n + '.gz' for n in sys_missing)}; `apt-get install dataset-fashion-mnist`"
        f" installs it there, or set {FASHION_MNIST_ENV} to a folder holding the four files)"
    )
    return problems


def load_fashion_mnist(root: Path, split: Any, image_size: int) -> OpenSetData:
    """Fashion-MNIST with the MNIST treatment, (N, 1, S, S) uint8."""
    folder = _fashion_folder(root)
    if folder is None:
        raise_if(check_fashion_mnist(root))
    assert folder is not None
    return _load_folder(folder, split, image_size)


def download_fashion_mnist(root: Path) -> None:
    """Fetch Fashion-MNIST into ``ROOT/FashionMNIST/raw`` with torchvision (a no-op when the
    files are already there or in the system folder); failures raise DataNotFound."""
    root = Path(root)
    if not check_fashion_mnist(root):
        return

    def fetch() -> None:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)

    manual = (f"`apt-get install dataset-fashion-mnist`, or put the four idx files (plain or .gz) into "
              f"{Path(root) / 'FashionMNIST' / 'raw'}; source: {FASHION_URL}")
    run_download("fashion-mnist", root, manual, fetch, check_fashion_mnist)
