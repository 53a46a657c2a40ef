"""The one error type for bad user input. The CLI prints its message (which names the problem and the fix) without a traceback."""

import signal


class InputError(ValueError):
    """Bad input from the user: an unknown locale, mismatched checkpoints, invalid parameters, malformed data."""


class DiskFullError(InputError):
    """A write failed because the disk (or quota, or file-size limit) is full; ``path`` is what was being written."""

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(
            f"{reason} while writing {path}; nothing partial was left there: free some space (or write elsewhere: "
            "--root / --output) and run again"
        )


def close_matches(word: str, choices, n: int = 3) -> list[str]:
    """The choices closest to a mistyped ``word``: those equal to it but for case and ``_``/``-`` (``tr_TR`` is
    ``tr-TR``) first, then difflib's close matches."""
    import difflib

    def norm(s: str) -> str:
        return str(s).lower().replace("_", "-")

    choices = [str(c) for c in choices]
    same = [c for c in choices if norm(c) == norm(word) and c != str(word)]
    if same:
        return same[:n]
    by_norm: dict[str, str] = {}
    for c in choices:
        by_norm.setdefault(norm(c), c)
    return [by_norm[m] for m in difflib.get_close_matches(norm(word), list(by_norm), n=n, cutoff=0.6)]


def did_you_mean(word: str, choices, n: int = 1) -> str:
    """`` Did you mean 'x'?`` (to append to an error about ``word``) when a choice is close to it, else ``""``."""
    close = close_matches(word, choices, n)
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal (SIGTERM from SLURM, submitit or systemd; SIGINT from Ctrl-C). A KeyboardInterrupt,
    so every cleanup written for Ctrl-C runs; ``last`` remembers the signal for code that turns it into another exit
    (Lightning ends an interrupted fit with SystemExit)."""

    last = None

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        Stopped.last = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


STOPPING = (signal.SIGTERM, signal.SIGINT)  # how clusters, systemd and Ctrl-C stop a run


def stop_on_signals() -> dict:
    """SIGTERM (SLURM, submitit, systemd) and SIGINT raise :class:`Stopped` in the main thread, so every ``finally``
    and ``except BaseException`` cleanup runs: temporaries removed, claims and locks released. Later signals are
    ignored, so a second Ctrl-C does not cut that cleanup short (kill -9 still ends it). Returns the handlers it
    replaced."""

    def on_signal(signum, frame):
        for s in STOPPING:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
        return {}
    return {s: signal.signal(s, on_signal) for s in STOPPING}


def restore_signals(previous: dict) -> None:
    """Put back the handlers :func:`stop_on_signals` replaced."""
    import signal

    for s, handler in previous.items():
        signal.signal(s, handler)
