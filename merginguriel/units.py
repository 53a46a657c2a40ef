"""How accuracies and their differences are written, the one way every log line, report and model card writes them:
a difference of accuracies in percentage points with its sign (``+1.3``)."""

from __future__ import annotations


def points(x: float) -> str:
    """A difference of two accuracies (fractions) in percentage points, signed: 0.013 -> ``+1.3``."""
    return f"{100 * x:+.1f}"
