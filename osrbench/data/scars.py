"""Stanford Cars from the official files, as the MLS release reads them (file paths and labels).

Layout (``ROOT/stanford_cars/``, the folder torchvision's ``StanfordCars`` reads)::

    cars_train/<fname>.jpg, cars_test/<fname>.jpg     (cars_train.tgz, cars_test.tgz)
    devkit/cars_meta.mat                              class_names: the 196 classes   (car_devkit.tgz)
    devkit/cars_train_annos.mat                       annotations: bbox_x1..bbox_y2, class, fname
    devkit/cars_test_annos_withlabels.mat             the same for the test images (a separate file;
                                                      the devkit's cars_test_annos.mat has no class)

``cars_test_annos_withlabels.mat`` is read from ``devkit/`` (the release's place, ``config.py:26``
``devkit/cars_{}.mat``) or else from ``stanford_cars/`` itself (torchvision's place).

The MLS release (sgvaze/osr_closed_set_all_you_need, MIT, ``data/stanford_cars.py``) is followed:

* ``stanford_cars.py:17-18``: training reads ``cars_train/`` with ``cars_train_annos.mat``, testing
  ``cars_test/`` with ``cars_test_annos_withlabels.mat``.
* ``stanford_cars.py:30-40``: ``scipy.io.loadmat(...)['annotations'][0]`` in file order; the path
  is the image folder + field 5 (``fname``), the class field 4 (``class``, 1..196). Fields are read
  here by name; in the official files ``class`` and ``fname`` are fields 4 and 5.
* ``stanford_cars.py:48``: the class id is ``class - 1``: **0-based ids 0..195**, where id ``k`` is
  ``cars_meta.mat``'s ``class_names[k]`` (the order a folder-sorted ImageFolder does not give).
  ``stanford_cars.py:75`` adds the 1 back when it selects a split's classes, so the ids of
  ``data/open_set_splits/scars_osr_splits.pkl`` are these 0-based ids (they span 0..195).
  The release does not read ``cars_meta.mat``; here it is read to check the classes' range.

The release's train/validation cut is not applied (``split_train_val=False``:
``methods/ARPL/osr.py:64``, ``bash_scripts/osr_finegrained_train.sh:34``). The release's own
machine used the folder name ``stanford_car`` (``config.py:25``); rename it ``stanford_cars``
(torchvision's name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from osrbench.data._filelists import FileList, check_listed, load_listed
from osrbench.data._files import mat_v5_problem
from osrbench.data.imagefiles import OpenSetFiles
from osrbench.datasets import DataNotFound

FOLDER = "stanford_cars"
META = "cars_meta.mat"
TRAIN_ANNOS = "cars_train_annos.mat"
TEST_ANNOS = "cars_test_annos_withlabels.mat"
TRAIN_DIR, TEST_DIR = "cars_train", "cars_test"
#: The original home page (its download links are gone; torchvision's StanfordCars cannot download either).
HOME = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"


def _hint(root: Path) -> str:
    return (f"the original download links at {HOME} are gone: copy cars_train.tgz, cars_test.tgz, "
            f"car_devkit.tgz and cars_test_annos_withlabels.mat from a mirror of the original files and "
            f"unpack them in {Path(root) / FOLDER} (cars_train/, cars_test/, devkit/)")


def _base(root: Path) -> Path:
    return Path(root) / FOLDER


def _test_annos(base: Path) -> Path | None:
    for candidate in (base / "devkit" / TEST_ANNOS, base / TEST_ANNOS):  # release's place, torchvision's
        if candidate.is_file():
            return candidate
    return None


def _loadmat(path: Path, hint: str) -> dict[str, Any]:
    import scipy.io

    why = mat_v5_problem(path)
    if why is not None:
        raise DataNotFound(f"{why} ({hint})")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as exc:  # ValueError, OSError, MatReadError, zlib errors, ...
        raise DataNotFound(f"cannot read {path}: {type(exc).__name__}: {exc} (damaged file; {hint})") from exc


def _num_classes(path: Path, hint: str) -> int:
    mat = _loadmat(path, hint)
    if "class_names" not in mat:
        raise DataNotFound(f"{path} has no class_names (found {sorted(k for k in mat if not k.startswith('__'))}; "
                           f"wrong file? {hint})")
    return int(np.asarray(mat["class_names"]).size)


def _annotations(path: Path, folder: Path, num_classes: int, hint: str) -> tuple[list[str], list[int]]:
    """Paths and 0-based class ids of an annotations file, in its order (stanford_cars.py:30-40, 48)."""
    ann = _loadmat(path, hint).get("annotations")
    fields = getattr(getattr(ann, "dtype", None), "names", None) or ()
    if "class" not in fields or "fname" not in fields:
        found = f"fields {list(fields)}" if fields else "no annotations struct"
        raise DataNotFound(f"{path} holds {found}, expected annotations with class and fname "
                           f"(the test file must be {TEST_ANNOS}, not the devkit's cars_test_annos.mat; {hint})")
    paths, ids = [], []
    for n, record in enumerate(ann[0]):
        try:
            target = int(np.asarray(record["class"]).ravel()[0])
            fname = str(np.asarray(record["fname"]).ravel()[0])
        except (IndexError, ValueError, TypeError) as exc:
            raise DataNotFound(f"{path}: annotation {n} is malformed ({exc}; damaged file; {hint})") from exc
        if not 1 <= target <= num_classes:
            raise DataNotFound(f"{path}: annotation {n} ({fname}) has class {target}, expected 1..{num_classes} "
                               f"(the classes of {META}; damaged or mismatched file; {hint})")
        paths.append(str(folder / fname))
        ids.append(target - 1)  # stanford_cars.py:48
    return paths, ids


def _missing(root: Path) -> list[str]:
    base, hint = _base(root), _hint(root)
    lines = [f"missing {what} in {where} ({hint})" for what, where, ok in (
        (f"folder {TRAIN_DIR}/", base, (base / TRAIN_DIR).is_dir()),
        (f"folder {TEST_DIR}/", base, (base / TEST_DIR).is_dir()),
        (META, base / "devkit", (base / "devkit" / META).is_file()),
        (TRAIN_ANNOS, base / "devkit", (base / "devkit" / TRAIN_ANNOS).is_file()),
    ) if not ok]
    if _test_annos(base) is None:
        lines.append(f"missing {TEST_ANNOS} in {base / 'devkit'} (or in {base}) ({hint})")
    return lines


def scan(root: Path) -> FileList:
    """The train and test images and their 0-based class ids from the devkit's .mat files (no image
    is opened); :class:`DataNotFound` naming the first missing or damaged file."""
    root = Path(root)
    base, hint = _base(root), _hint(root)
    if not base.is_dir():
        raise DataNotFound(f"missing folder {FOLDER}/ in {root} ({hint})")
    missing = _missing(root)
    if missing:
        raise DataNotFound(missing[0])
    num_classes = _num_classes(base / "devkit" / META, hint)
    train_paths, train_y = _annotations(base / "devkit" / TRAIN_ANNOS, base / TRAIN_DIR, num_classes, hint)
    test_paths, test_y = _annotations(_test_annos(base), base / TEST_DIR, num_classes, hint)  # type: ignore[arg-type]
    return FileList(tuple(train_paths), tuple(train_y), tuple(test_paths), tuple(test_y))


def check(root: Path) -> list[str]:
    """One line per problem (empty = ready): every missing file or folder, else a damaged .mat
    file, else the listed images present, starting like a JPEG or PNG, the first one decodable."""
    if _base(root).is_dir():
        missing = _missing(root)
        if missing:
            return missing
    return check_listed(scan, root, f"the annotations of {_base(root) / 'devkit'}", _hint(Path(root)))


def load(root: Path, split: Any, image_size: int) -> OpenSetFiles:
    """Stanford Cars: cars_train images of the known classes, cars_test images of the known and
    unknown classes, as paths and labels (known label = position in ``split.known``)."""
    return load_listed(scan, root, split, image_size, f"the annotations of {_base(root) / 'devkit'}",
                       _hint(Path(root)))


def download(root: Path) -> None:
    """Nothing public to fetch: a ready tree passes, otherwise DataNotFound says where the files go."""
    problems = check(root)
    if problems:
        raise DataNotFound(f"Stanford Cars cannot be downloaded automatically: {problems[0]}")  # names the hint
