"""FGVC-Aircraft (2013b) from the official archive, as the MLS release reads it (file paths and labels).

Layout (``ROOT/fgvc-aircraft-2013b/data/``, as ``fgvc-aircraft-2013b.tar.gz`` unpacks)::

    variants.txt                   the 100 variant names, one a line
    images_variant_trainval.txt    "<image_id> <variant name>" (names may hold spaces)
    images_variant_test.txt
    images/<image_id>.jpg

The MLS release (sgvaze/osr_closed_set_all_you_need, MIT, ``data/fgvc_aircraft.py``) is followed:

* ``fgvc_aircraft.py:243, 251``: training uses the ``trainval`` list, testing the ``test`` list, with
  ``class_type='variant'`` (the default, ``:62``), i.e. ``data/images_variant_{trainval,test}.txt``
  (``:75-76``).
* ``fgvc_aircraft.py:26-36`` (``find_classes``): each line is split at its first space into image id
  and variant name, and the class id of a name is its index in ``np.unique`` of the list's names:
  **0-based ids 0..99 in sorted (code point) order of the variant names**. The release keeps each
  line's newline in the name; every line of the official lists ends in one, so the order is that of
  the bare names, which is what is used here. The release indexes each list on its own; here the
  test list must name the same variants as the trainval list (else one index would mean two
  classes) and ``variants.txt`` must name them too.
* ``fgvc_aircraft.py:15-16``: an image's path is ``data/images/<image_id>.jpg``.

The 2013b ``variants.txt`` lists the variants in that same sorted order (``707-320`` = 0, ...,
``BAE 146-200``, ``BAE 146-300``, ``BAE-125``, ..., ``Yak-42`` = 99), so torchvision's
``FGVCAircraft`` (``variants.txt`` order) agrees on the official archive; the ids follow the release's
rule all the same. The ids of ``data/open_set_splits/aircraft_osr_splits.pkl`` are these (0..99;
its Hard pair ``[2, 3, 4, 5]`` / ``[6, 7, 8, 9]`` is 737-200..500 against 737-600..900).
The release's train/validation cut is not applied (``split_train_val=False``:
``methods/ARPL/osr.py:64``, ``bash_scripts/osr_finegrained_train.sh:34``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osrbench.data._filelists import FileList, check_listed, few, load_listed, malformed, read_list
from osrbench.data._files import download_hint, run_download
from osrbench.data.imagefiles import OpenSetFiles
from osrbench.datasets import DataNotFound

FOLDER = "fgvc-aircraft-2013b"
VARIANTS = "variants.txt"
TRAIN_LIST = "images_variant_trainval.txt"
TEST_LIST = "images_variant_test.txt"
URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"


def _hint(root: Path) -> str:
    return download_hint("aircraft", root, f"fetch {URL} by hand and unpack it in {root} "
                                           f"(giving {root / FOLDER}/data/)")


def _data(root: Path) -> Path:
    return Path(root) / FOLDER / "data"


def _read_pairs(path: Path, hint: str) -> list[tuple[str, str]]:
    """``(image_id, variant name)`` of each line, split at the first space (fgvc_aircraft.py:28-30)."""
    pairs = []
    for n, line in enumerate(read_list(path, hint), 1):
        image_id, _, name = line.partition(" ")
        if not image_id or not name.strip():
            raise malformed(path, n, line, "<image_id> <variant name>", hint)
        pairs.append((image_id, name))
    return pairs


def scan(root: Path) -> FileList:
    """The trainval and test images and their 0-based variant ids (no image is opened);
    :class:`DataNotFound` naming the first missing or damaged list."""
    root = Path(root)
    data = _data(root)
    hint = _hint(root)
    if not data.is_dir():
        raise DataNotFound(f"missing folder {FOLDER}/data/ in {root} ({hint})")
    variants = read_list(data / VARIANTS, hint)
    train = _read_pairs(data / TRAIN_LIST, hint)
    test = _read_pairs(data / TEST_LIST, hint)
    classes = sorted({name for _, name in train})  # np.unique: sorted unique names (fgvc_aircraft.py:34)
    for path, names in ((data / TEST_LIST, {name for _, name in test}), (data / VARIANTS, set(variants))):
        if names != set(classes):
            odd = sorted(names ^ set(classes))
            raise DataNotFound(f"{path} and {data / TRAIN_LIST} name different variants: {few(odd)} "
                               f"(truncated or mismatched lists; {hint})")
    index = {name: i for i, name in enumerate(classes)}  # fgvc_aircraft.py:35-36

    def paths(pairs: list[tuple[str, str]]) -> tuple[str, ...]:
        return tuple(str(data / "images" / f"{image_id}.jpg") for image_id, _ in pairs)  # fgvc_aircraft.py:15-16

    return FileList(
        train_paths=paths(train), train_y=tuple(index[name] for _, name in train),
        test_paths=paths(test), test_y=tuple(index[name] for _, name in test),
    )


def check(root: Path) -> list[str]:
    """One line per problem (empty = ready): the lists, then every listed image present and starting
    like a JPEG or PNG, and the first one decodable."""
    return check_listed(scan, root, f"{TRAIN_LIST} / {TEST_LIST} of {_data(root)}", _hint(Path(root)))


def load(root: Path, split: Any, image_size: int) -> OpenSetFiles:
    """FGVC-Aircraft variants: trainval images of the known classes, test images of the known and
    unknown classes, as paths and labels (known label = position in ``split.known``)."""
    return load_listed(scan, root, split, image_size, f"{TRAIN_LIST} / {TEST_LIST} of {_data(root)}",
                       _hint(Path(root)))


def download(root: Path) -> None:
    """Fetch and unpack the official archive into ``ROOT`` with torchvision; failures raise DataNotFound."""
    root = Path(root)
    if not check(root):
        return

    def fetch() -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(URL, download_root=str(root))

    manual = f"download {URL} and unpack it in {root} (giving {root / FOLDER}/data/images/, variants.txt ...)"
    run_download("aircraft", root, manual, fetch, check)
