"""CUB-200-2011 from the official archive, as the MLS release reads it (file paths and labels; no decoding).

Layout (``ROOT/CUB_200_2011/``, as ``CUB_200_2011.tgz`` unpacks)::

    images.txt               "<image_id> <class folder>/<file>.jpg", one line per image
    image_class_labels.txt   "<image_id> <class 1..200>"
    train_test_split.txt     "<image_id> <1 = train, 0 = test>"
    images/<class folder>/<file>.jpg

The MLS release (sgvaze/osr_closed_set_all_you_need, MIT, ``data/cub.py``) is followed line for line:

* ``cub.py:38-51``: the three lists are joined on the image id (a pandas merge, which keeps the
  order of ``images.txt``); training images are those with ``is_training_img == 1``, test images
  those with ``0``. Here the three lists must name the same image ids (a truncated list is
  refused instead of silently dropping images, as the merge would).
* ``cub.py:83``: an image's path is ``CUB_200_2011/images/<filepath>``.
* ``cub.py:84``: the class id is ``target - 1`` (the file's classes run 1..200), so class ids are
  **0-based, 0..199**, in the order of the numbered class folders (``001.Black_footed_Albatross``
  is 0). ``cub.py:109`` adds the 1 back when it selects a split's classes, so the ids of
  ``data/open_set_splits/cub_osr_splits.pkl`` (read by ``open_set_datasets.py:81-90``) are these
  0-based ids: its known classes span 0..199.

The release's train/validation cut (``get_train_val_split``) is not applied: its fine-grained runs
train on the whole training set (``split_train_val=False``: ``methods/ARPL/osr.py:64``,
``bash_scripts/osr_finegrained_train.sh:34``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osrbench.data._filelists import FileList, check_listed, load_listed, malformed, read_list
from osrbench.data._files import download_hint, run_download
from osrbench.data.imagefiles import OpenSetFiles
from osrbench.datasets import DataNotFound

FOLDER = "CUB_200_2011"
LISTS = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
NUM_CLASSES = 200
#: CaltechDATA's copy of the archive (the release's www.vision.caltech.edu address is gone); same MD5.
URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
ARCHIVE = "CUB_200_2011.tgz"
MD5 = "97eceeb196236b17998738112f37df78"


def _hint(root: Path) -> str:
    return download_hint("cub", root, f"fetch {URL} by hand and unpack it in {root} (giving {root / FOLDER}/)")


def _id_table(path: Path, hint: str) -> dict[int, str]:
    """``image_id -> value`` of one list (two space-separated columns, ids unique)."""
    table: dict[int, str] = {}
    for n, line in enumerate(read_list(path, hint), 1):
        cols = line.split()
        if len(cols) != 2 or not cols[0].isdigit() or int(cols[0]) in table:
            raise malformed(path, n, line, "<image_id> <value>, ids unique", hint)
        table[int(cols[0])] = cols[1]
    return table


def scan(root: Path) -> FileList:
    """The train and test images and their 0-based class ids, from the three lists (no image is
    opened); :class:`DataNotFound` naming the first missing or damaged list."""
    root = Path(root)
    base = root / FOLDER
    hint = _hint(root)
    if not base.is_dir():
        raise DataNotFound(f"missing folder {FOLDER}/ in {root} ({hint})")
    images, labels, flags = (_id_table(base / name, hint) for name in LISTS)
    for name, table in zip(LISTS[1:], (labels, flags)):
        if table.keys() != images.keys():
            odd = sorted(images.keys() ^ table.keys())
            raise DataNotFound(f"{base / name} and {base / LISTS[0]} list different image ids "
                               f"({len(odd)} differ, e.g. {odd[:5]}; truncated or mismatched lists; {hint})")
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for image_id, rel in images.items():  # images.txt order (cub.py:45, merge keeps the left order)
        target, flag = labels[image_id], flags[image_id]
        if not target.isdigit() or not 1 <= int(target) <= NUM_CLASSES:
            raise DataNotFound(f"{base / LISTS[1]}: image {image_id} has class {target!r}, expected 1..{NUM_CLASSES} "
                               f"(damaged file; {hint})")
        if flag not in ("0", "1"):
            raise DataNotFound(f"{base / LISTS[2]}: image {image_id} has is_training_img {flag!r}, expected 0 or 1 "
                               f"(damaged file; {hint})")
        item = (str(base / "images" / rel), int(target) - 1)  # cub.py:83-84
        (train if flag == "1" else test).append(item)
    return FileList(
        train_paths=tuple(p for p, _ in train), train_y=tuple(c for _, c in train),
        test_paths=tuple(p for p, _ in test), test_y=tuple(c for _, c in test),
    )


def check(root: Path) -> list[str]:
    """One line per problem (empty = ready): the lists, then every listed image present and starting
    like a JPEG or PNG, and the first one decodable."""
    return check_listed(scan, root, f"{Path(root) / FOLDER / LISTS[0]}", _hint(Path(root)))


def load(root: Path, split: Any, image_size: int) -> OpenSetFiles:
    """CUB-200-2011: the training images of the known classes, the test images of the known and
    unknown classes, as paths and labels (known label = position in ``split.known``)."""
    return load_listed(scan, root, split, image_size, f"{Path(root) / FOLDER / LISTS[0]}",
                       _hint(Path(root)))


def download(root: Path) -> None:
    """Fetch and unpack the official archive into ``ROOT`` with torchvision (MD5-checked); failures
    raise DataNotFound."""
    root = Path(root)
    if not check(root):
        return

    def fetch() -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(URL, download_root=str(root), filename=ARCHIVE, md5=MD5)

    manual = f"download {URL} and unpack it in {root} (giving {root / FOLDER}/images.txt, images/ ...)"
    run_download("cub", root, manual, fetch, check)
