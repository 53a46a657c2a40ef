"""Telling a full disk from other write failures, so it reaches the user as one clear error (errors.DiskFullError).

Libraries report it in different ways: Python as OSError ENOSPC/EDQUOT (or EFBIG under a file-size limit), safetensors
and SQLite in their message text, and torch.save as an unrelated "unexpected pos" RuntimeError. The last is caught by
looking at the filesystem itself right after the failure, while the half-written temporary still takes its space.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Optional

from merginguriel.errors import DiskFullError, InputError

_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file-size limit (ulimit -f) is reached",
}
_TEXTS = {"No space left on device": errno.ENOSPC, "os error 28": errno.ENOSPC,
          "database or disk is full": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT, "File too large": errno.EFBIG}
NEARLY_FULL = 1 << 20  # bytes: a write that failed with less than this left on the filesystem failed for lack of space


def error_chain(err: BaseException):
    """``err`` and the errors it was raised from or during, innermost last (each once)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def free_bytes(path: str | os.PathLike) -> Optional[int]:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent); None when unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def full_disk_reason(err: BaseException, where: Optional[str | os.PathLike] = None) -> Optional[str]:
    """Why ``err`` is a full disk ("no space left on the device", ...), or None when it is something else. ``where``:
    the folder written to, looked at when the error itself does not say (call it before removing the temporary)."""
    for e in error_chain(err):
        if isinstance(e, DiskFullError):
            return e.reason
        if isinstance(e, OSError) and e.errno in _ERRNOS:
            return _ERRNOS[e.errno]
        for text, code in _TEXTS.items():
            if text in str(e):
                return _ERRNOS[code]
    if where is not None and not isinstance(err, InputError):
        free = free_bytes(where)
        if free is not None and free < NEARLY_FULL:
            return _ERRNOS[errno.ENOSPC]
    return None


def as_disk_full(err: BaseException, path: str | os.PathLike,
                 where: Optional[str | os.PathLike] = None) -> Optional[DiskFullError]:
    """The DiskFullError naming ``path`` when ``err`` is a full disk (see full_disk_reason), else None."""
    reason = full_disk_reason(err, where if where is not None else Path(path).parent)
    return DiskFullError(path, reason) if reason else None


def full_disk_message(err: BaseException) -> Optional[str]:
    """For an error that reached the command line: a clear message when it is a full disk (naming the file when the
    error does), else None."""
    reason = full_disk_reason(err)
    if reason is None:
        return None
    # a failed move names the source and then the destination, the file being written
    name = next((e.filename2 or e.filename for e in error_chain(err) if isinstance(e, OSError) and e.filename), None)
    return (f"{reason}{f' while writing {name}' if name else ''} ({err}); free some space (or write elsewhere: "
            "--root / --output) and run again: finished work is kept and reused")
