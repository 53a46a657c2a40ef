"""An exclusive lock file that removes itself: held with flock (the kernel releases it when the process dies, even by
kill -9) and unlinked by its holder on release, so finished runs leave no lock files behind.

Removing a lock file others may be waiting on is safe only if a waiter that wins the flock on the removed file notices
and tries again on the path's current file: :func:`file_lock` compares the locked file with what the path names now.
A lock file left by a killed run is simply taken and removed by the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold ``path`` as an exclusive lock; on release the file is removed, and so are the folders made for it that
    are left empty (a refused merge leaves no empty ``merged/<target>/``)."""
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # removed again when left empty
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder is missing, or another holder just removed it as empty
            with contextlib.suppress(FileNotFoundError):  # ... even while we were making it: try again
                path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:  # its holder removed it while we waited: lock the path's new file
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still holding it: a waiter on this file sees it gone and starts again
        os.close(fd)
        for folder in made:  # innermost first; one that holds anything (the output, another lock) stays
            try:
                folder.rmdir()
            except OSError:
                break
