"""The one error type for bad user input. The CLI prints its message (which names the problem and the fix) without a traceback."""


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
