"""The command line's one error boundary: what a user's paths and files cause, as one line; a bug keeps its traceback.

Every command runs inside :func:`boundary`. An ``InputError`` is printed as it is; an ``OSError`` naming a path
(permission denied, read-only filesystem, is a directory, a parent that is a file), a full disk, a file that is not
a SQLite database or not UTF-8, and a stop by SIGTERM or SIGINT each become one line naming the path, what is wrong
and the fix. Anything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

import errno
import signal
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from merginguriel.errors import InputError, Stopped, restore_signals, stop_on_signals

# what a stopped command tells the user: how its rerun resumes (the default for any command not listed)
RESUME = {
    "experiment": "run the same command again to resume: finished points are kept, the stopped one runs again",
    "study": "run the same command again to resume: finished stages and points are kept",
    "fit": "run the same command again to resume from its last checkpoint",
    "nxn": "run the same command again to resume: evaluated cells are kept",
}
RESUME_DEFAULT = "nothing partial was kept; run the same command again"


def _parent_file(path: Path) -> Optional[Path]:
    """The nearest ancestor of ``path`` (or ``path`` itself) that exists and is not a folder."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def os_error_message(err: OSError) -> Optional[str]:
    """One line for an OSError about a user's path, or None when it names no path or is not the user's doing."""
    name = err.filename2 if err.errno == errno.EISDIR and err.filename2 else err.filename
    if name is None:
        return None
    path = Path(str(name))
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"{path}: permission denied (not writable, or not readable, by this user); choose a place you may write "
                "(--output / --root) or change its permissions")
    if err.errno == errno.EROFS:
        return f"{path} is on a read-only filesystem; write elsewhere (--output / --root) or remount it writable"
    if err.errno == errno.EISDIR:
        return f"{path} is a directory, not a file; give a file path (or remove the directory)"
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _parent_file(path)
        if blocker is not None:
            return (f"{blocker} is a file, not a folder, so nothing can be written under it; remove or rename that "
                    "file, or choose another --output / --root")
    return None


def sqlite_message(err: sqlite3.Error) -> Optional[str]:
    """One line for a SQLite error that a results database file causes (the path comes with the error: see
    merginguriel.experiments.db), or None."""
    path = getattr(err, "path", None)
    if path is None:
        return None
    text = str(err)
    if Path(path).is_dir():
        return f"results database {path} is a directory, not a SQLite file; give a file path (--db)"
    if "not a database" in text or "malformed" in text:
        return (f"results database {path} is not a SQLite database ({text}); give the results.sqlite a sweep wrote "
                "(--db), or move this file away")
    if "unable to open" in text or "readonly" in text:
        return f"results database {path} cannot be opened for writing ({text}); check the path and its permissions (--db)"
    return None


def message_for(err: BaseException) -> Optional[str]:
    """The one line for an error the user caused (see the module doc), or None for a bug."""
    from merginguriel.io.diskfull import full_disk_message

    if isinstance(err, InputError):  # its message names the problem and the fix already (a DiskFullError too)
        return str(err)
    disk = full_disk_message(err) if isinstance(err, Exception) else None
    if disk is not None:
        return disk
    e: Optional[BaseException] = err
    while e is not None:  # the error and what it was raised from (not what it was raised while handling: a bug there)
        if isinstance(e, InputError):
            return str(e)
        if isinstance(e, OSError):
            found = os_error_message(e)
            if found:
                return found
        if isinstance(e, sqlite3.Error):
            found = sqlite_message(e)
            if found:
                return found
        e = e.__cause__
    return None


def stopped_signal(err: BaseException) -> Optional[int]:
    """The signal number that stopped the run, when ``err`` is (or came from) a stop; Lightning turns an interrupt
    during a fit into ``SystemExit(1)`` after its own teardown."""
    from merginguriel.io.diskfull import error_chain

    for e in error_chain(err):
        if isinstance(e, Stopped):
            return e.signum
        if isinstance(e, KeyboardInterrupt):
            return signal.SIGINT
    return Stopped.last


@contextmanager
def boundary(command: str, status: list[int]) -> Iterator[None]:
    """Run a command; a user-caused error or a stop becomes one line on stderr and its exit status in ``status[0]``
    (2 for an error, 128 + the signal for a stop)."""
    previous = stop_on_signals()
    Stopped.last = None
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as err:
        signum = stopped_signal(err)
        if isinstance(err, SystemExit) and signum is None:
            raise
        name = signal.Signals(signum).name
        print(f"merginguriel {command}: stopped by {name}; {RESUME.get(command, RESUME_DEFAULT)}", file=sys.stderr)
        status[0] = 128 + signum
    except Exception as err:
        message = message_for(err)
        if message is None:
            raise
        print(f"merginguriel {command}: error: {message}", file=sys.stderr)
        status[0] = 2
    finally:
        restore_signals(previous)
