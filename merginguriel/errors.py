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
