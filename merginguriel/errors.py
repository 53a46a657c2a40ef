"""The one error type for bad user input. The CLI prints its message (which names the problem and the fix) without a traceback."""


class InputError(ValueError):
    """Bad input from the user: an unknown locale, mismatched checkpoints, invalid parameters, malformed data."""
