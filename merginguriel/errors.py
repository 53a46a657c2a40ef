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
