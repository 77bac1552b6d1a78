"""Helpers shared by the file-backed readers (CUB, FGVC-Aircraft, Stanford Cars): their official lists
read into paths and labels, and the images checked without decoding them all.

Like :mod:`osrbench.data._files`, every problem becomes :class:`DataNotFound` (or a line of
``check``) naming the file and how to get it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from osrbench.data._files import missing_line, raise_if
from osrbench.data.imagefiles import OpenSetFiles, select_files
from osrbench.datasets import DataNotFound


@dataclass(frozen=True)
class FileList:
    """The images of a file-backed dataset, as its official lists give them (no decoding):
    absolute paths and original class ids (0-based), train and test in the lists' order."""

    train_paths: tuple[str, ...]
    train_y: tuple[int, ...]
    test_paths: tuple[str, ...]
    test_y: tuple[int, ...]


def few(names: Sequence[str], show: int = 5) -> str:
    """``a, b, c and 7 more``: a bounded list for a one-line message."""
    more = f" and {len(names) - show} more" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def read_list(path: Path, hint: str) -> list[str]:
    """The non-empty lines of an official list file; :class:`DataNotFound` naming it when it is
    absent or unreadable."""
    if not path.is_file():
        raise DataNotFound(missing_line(path.name, path.parent, hint))
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataNotFound(f"cannot read {path}: {type(exc).__name__}: {exc} (damaged file; {hint})") from exc


def malformed(path: Path, number: int, line: str, expected: str, hint: str) -> DataNotFound:
    return DataNotFound(f"{path} line {number} is malformed (expected '{expected}'): {line!r} (damaged file; {hint})")


def missing_images(paths: Sequence[str], listed_in: str, hint: str) -> list[str]:
    """One line naming the listed images that are not files (empty when all are)."""
    absent = [p for p in paths if not os.path.isfile(p)]
    if not absent:
        return []
    return [f"{len(absent)} image file(s) listed in {listed_in} are missing: {few(absent)} ({hint})"]


#: The first bytes of a JPEG and of a PNG.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


def image_problems(paths: Sequence[str], hint: str) -> list[str]:
    """One line naming the images that are empty or do not start like a JPEG or PNG (8 bytes read
    per file), or else the first image when PIL cannot decode it (one decode, a cheap sign that the
    files are images and PIL reads them)."""
    bad: list[str] = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                head = f.read(8)
        except OSError as exc:
            bad.append(f"{p} ({exc.strerror})")
            continue
        if not head.startswith(IMAGE_MAGIC):
            bad.append(f"{p} ({'empty' if not head else 'not a JPEG or PNG'})")
    if bad:
        return [f"{len(bad)} image file(s) are damaged: {few(bad)} ({hint})"]
    if paths:
        from PIL import Image

        try:
            with Image.open(paths[0]) as im:
                im.convert("RGB")
        except Exception as exc:  # UnidentifiedImageError, truncated data, decompression bomb ...
            return [f"cannot decode {paths[0]}: {type(exc).__name__}: {exc} ({hint})"]
    return []


def files_problems(files: FileList, listed_in: str, hint: str) -> list[str]:
    """What ``check`` reports about the listed images: missing ones, else damaged ones."""
    paths = files.train_paths + files.test_paths
    return missing_images(paths, listed_in, hint) or image_problems(paths, hint)


def select_listed(files: FileList, split: Any, image_size: int) -> OpenSetFiles:
    """The open-set parts of ``split`` (original class ids in ``split.known`` / ``split.unknown``)."""
    return select_files(files.train_paths, files.train_y, files.test_paths, files.test_y,
                        known=[int(c) for c in split.known], unknown=[int(c) for c in split.unknown],
                        image_size=image_size)


def check_listed(scan: Callable[[Path], FileList], root: Path, listed_in: str, hint: str) -> list[str]:
    """A reader's ``check``: the lists' one-line problem, else the listed images' (empty = ready)."""
    try:
        files = scan(root)
    except DataNotFound as exc:
        return str(exc).splitlines()
    return files_problems(files, listed_in, hint)


def load_listed(scan: Callable[[Path], FileList], root: Path, split: Any, image_size: int, listed_in: str,
                hint: str) -> OpenSetFiles:
    """A reader's ``load``: the lists, every listed image present, then the split's parts."""
    files = scan(root)
    raise_if(missing_images(files.train_paths + files.test_paths, listed_in, hint))
    return select_listed(files, split, image_size)
