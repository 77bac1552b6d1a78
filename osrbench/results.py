"""Files on disk: atomic writes, hashed JSON documents, run folders, and mean +- std.

A run lives in ``OUT/<dataset>/<protocol>/<method>/split<i>-seed<s>-<config hash>/`` and holds
``result.json`` and ``scores.npz`` (:mod:`osrbench.records`) and ``checkpoint.pt``
(:mod:`osrbench.checkpoints`). Every file is written to a unique temporary name in the same folder
and renamed into place, so a reader never sees half a file and two processes never write the same
temporary file. Torch-free.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from osrbench.errors import UserError


def canonical_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON form of ``obj`` (sorted keys), shortened."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


class OutputError(UserError, OSError):
    """An output path that cannot be written: a file where a folder is needed, no permission, a full disk."""


def os_problem(path: Path, exc: OSError) -> OutputError:
    """The one-line error of an ``OSError`` on an output path: the path and the system's reason."""
    return OutputError(f"cannot write {path}: {exc.strerror or type(exc).__name__}")


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _probe(folder: Path) -> None:
    """Create and remove a temporary file in ``folder``: raises the OSError a real write would."""
    fd, probe = tempfile.mkstemp(prefix=".osrbench-probe.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_writable_dir(path: Path, what: str = "output folder") -> Path:
    """Check, before any work and without creating anything, that ``path`` is a folder files can be
    written in, or can be created as one: an :class:`OutputError` naming the path and the reason
    otherwise (a file, ``/dev/null``, no permission, a read-only file system)."""
    path = Path(path)
    try:  # a name the OS refuses (too long, ...) raises on the first look
        if path.exists() and not path.is_dir():
            raise OutputError(f"{what} {path} is not a folder (it is a file or a device)")
        existing = path
        while not existing.exists():
            if existing.parent == existing:
                break
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise OutputError(f"{what} {path} cannot be created: {existing} is not a folder")
        _probe(existing)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{what} {path} is not writable ({exc.strerror or type(exc).__name__})") from None
    return path


def ensure_dir(path: Path, what: str = "output folder") -> Path:
    """:func:`check_writable_dir`, then create the folder (and its parents)."""
    check_writable_dir(path, what)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        _probe(Path(path))
    except OSError as exc:
        raise os_problem(Path(path), exc) from None
    return Path(path)


def check_output_file(path: Path, what: str = "output file") -> Path:
    """Refuse, before any work, an output file that is a folder or whose folder cannot be written."""
    path = Path(path)
    if path.name in ("", ".", ".."):  # Path("") is "."
        raise OutputError(f"{what} {str(path)!r} is not a file name")
    try:
        if path.is_dir():
            raise OutputError(f"{what} {path} is a folder; give a file name (e.g. {path / 'out.json'})")
        if path.exists() and not path.is_file():
            raise OutputError(f"{what} {path} is not a regular file (a device?); give a file name")
        check_writable_dir(path.parent, f"the folder of {what} {path},")
        if len(os.fsencode(path.name)) + len(f"..{_WRITER}.XXXXXXXX.tmp") > _name_max(path.parent):
            raise OSError(errno.ENAMETOOLONG, "File name too long")  # its temporary file's name would be
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be written: {exc.strerror or type(exc).__name__}") from None
    return path


def _name_max(folder: Path) -> int:
    """The longest file name the file system of ``folder`` (or its nearest existing parent) takes."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


#: Who writes a temporary file (``<host>-<pid>``, in its name): a later run removes the ones whose
#: writer died before renaming them (:func:`remove_orphans`).
_WRITER = f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` left by writers on this host that are no longer
    alive (killed between creating and renaming them); returns what was removed."""
    host = socket.gethostname().replace(".", "_")
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        writer = tmp.name.rsplit(".", 3)[-3] if tmp.name.count(".") >= 4 else ""
        who, _, pid = writer.rpartition("-")
        if who != host or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write a file through ``write(fh)`` into a temporary file, fsync, then rename into place.

    The file gets the permissions of a plain new file (``0666`` less the umask: readable by the
    group where the umask allows), not ``mkstemp``'s ``0600``. An ``OSError`` (a folder in the
    way, no permission, a full disk) becomes an :class:`OutputError` naming the path; the
    temporary file is removed and a file already at ``path`` is left as it was.
    """
    path = Path(path)
    try:  # the checks and the temporary file: an OSError here leaves nothing behind
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(path))
        if path.exists() and not path.is_file():  # never rename a file over a device (/dev/null) or a pipe
            raise OutputError(f"cannot write {path}: not a regular file (a device?); give a file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_WRITER}.", suffix=".tmp", dir=path.parent)
    except OutputError:
        raise
    except OSError as exc:
        raise os_problem(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, UserError):
            raise os_problem(path, exc) from None
        raise


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Write a record atomically with a content hash of everything else in it (``sha256``)."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    body["sha256"] = canonical_hash(body, 64)
    data = json.dumps(body, indent=2, sort_keys=True, default=str).encode()
    atomic_write(path, lambda fh: fh.write(data))


class CorruptJSON(UserError, ValueError):
    """A hashed JSON document that is truncated, not JSON, or whose content hash does not match."""


def read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptJSON(f"{path}: unreadable result record ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or "sha256" not in doc:
        raise CorruptJSON(f"{path}: not an osrbench record (no content hash)")
    body = {k: v for k, v in doc.items() if k != "sha256"}
    if canonical_hash(body, 64) != doc["sha256"]:
        raise CorruptJSON(f"{path}: content hash mismatch (file was modified or damaged)")
    return doc


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def run_dir(out: Path, method: str, dataset: str, protocol: str, split: int, seed: int, config_hash: str) -> Path:
    return Path(out) / dataset / protocol / method / f"split{split}-seed{seed}-{config_hash[:10]}"


def json_number(x: float | None) -> float | None:
    """``x`` as a JSON number: ``None`` for NaN, infinities and ``None`` (JSON has no NaN)."""
    return float(x) if x is not None and math.isfinite(x) else None


def mean_std(values: Iterable[float], ddof: int = 1) -> tuple[float, float]:
    """Mean and standard deviation: sample (ddof 1, the default) or population (ddof 0, as OpenOOD
    and the MLS code report it). The sample std of a single value is NaN (undefined, shown as
    ``-``), its population std 0."""
    v = [float(x) for x in values]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) <= ddof:
        return m, math.nan
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - ddof))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (an unreadable file raises ``OSError``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
