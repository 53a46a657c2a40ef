"""Atomic outputs: everything is written under a temporary name and renamed into place only when complete.

An interrupted run therefore never leaves a folder or file that looks finished, and an error leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _tmp_sibling(path: Path) -> Path:
    # host and pid in the name let a rerun tell a dead run's leftovers from a live run's work in progress
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs here (a killed process that is not yet reaped, a zombie, counts as dead)."""
    try:
        import psutil

        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # psutil.NoSuchProcess between the two calls
        return False


def _disk_full(err: BaseException, path: Path, where: Path):
    """The DiskFullError naming ``path`` when ``err`` is a full disk (an interrupt never is)."""
    if not isinstance(err, Exception):
        return None
    from merginguriel.io.diskfull import as_disk_full

    return as_disk_full(err, path, where)


def remove_dead_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the hidden temporaries that runs killed on this host left beside ``path`` (``.<name>.tmp-<host>-<pid>-<id>``
    whose pid is dead); a live run's temporary and another host's are left alone. Returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    host = socket.gethostname()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        parts = tmp.name.rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        owner_host = parts[0][len(f".{path.name}.tmp-"):]
        if owner_host != host or _alive(int(parts[1])):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on any error it is removed.

    If ``path`` exists and ``overwrite`` is false, raise before anything is written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite true) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as err:
        full = _disk_full(err, path, tmp)  # looked at before the temporary frees its space
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from err
        raise
    if path.exists():
        old = _tmp_sibling(path)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` to write to; on success it replaces ``path`` (concurrent writers of
    identical content are harmless: the last rename wins), on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        full = _disk_full(err, path, tmp.parent)
        if full is not None:
            raise full from err
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, fsynced, and an atomic rename."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def check_writable(folder: str | os.PathLike) -> None:
    """Raise, before any work, the OSError that writing into ``folder`` would meet later (a parent that is a file, a
    read-only filesystem, no permission); the command line names it (merginguriel.cli.errors)."""
    import errno

    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    if not os.access(p, os.W_OK):
        code = errno.EROFS if os.statvfs(p).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(p))
