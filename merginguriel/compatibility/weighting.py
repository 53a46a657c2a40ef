"""The ``similarity_x_compatibility`` weighting: a selected source's weight is its similarity weight times its mean
compatibility (task-vector cosine) with the other chosen sources, renormalised to sum to 1.

Why: two sources can each transfer well yet interfere when merged; the research log found task-vector cosine a weak but
consistent tie-breaker (+0.3 points), so it scales the similarity weights instead of replacing them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from merginguriel.errors import InputError

WEIGHTING = "similarity_x_compatibility"


def mean_compatibility(sources: list[str], compatibility: pd.DataFrame) -> list[float]:
    """For each source, the mean of its compatibility with the OTHER sources (1.0 for a lone source), floored at 0:
    anti-aligned task vectors get no weight rather than a negative one."""
    missing = [s for s in sources if s not in compatibility.index or s not in compatibility.columns]
    if missing:
        raise InputError(
            f"the compatibility matrix has no entry for {', '.join(missing)}; recompute it with "
            "`merginguriel compatibility` over these locales (or leave selection.compatibility_csv unset to compute it on the fly)"
        )
    out = []
    for s in sources:
        others = [float(compatibility.loc[s, o]) for o in sources if o != s]
        out.append(max(0.0, sum(others) / len(others)) if others else 1.0)
    return out


def compatibility_weights(sources: list[str], weights: list[float], compatibility: pd.DataFrame) -> list[float]:
    """weight_i = w_i x mean compatibility of i with the other sources, renormalised to sum to 1."""
    if len(sources) != len(weights):
        raise InputError(f"{len(sources)} sources but {len(weights)} weights; give one weight per source")
    raw = [w * c for w, c in zip(weights, mean_compatibility(sources, compatibility))]
    total = sum(raw)
    if total <= 0:
        raise InputError(
            f"similarity x compatibility weights of {sources} sum to zero (every source's task vector is orthogonal or "
            "opposed to the others'); use weighting 'scores' for this target"
        )
    return [r / total for r in raw]


def apply_compatibility(selection: Any, compatibility: pd.DataFrame) -> Any:
    """A copy of a ``merginguriel.similarity.Selection`` (any dataclass with sources and weights) reweighted by
    compatibility, its ``weighting`` set to ``similarity_x_compatibility``."""
    weights = compatibility_weights(list(selection.sources), list(selection.weights), compatibility)
    changes = {"weights": weights}
    if hasattr(selection, "weighting"):
        changes["weighting"] = WEIGHTING
    return dataclasses.replace(selection, **changes)


def compatibility_for(
    sources: list[str],
    base: str | os.PathLike,
    checkpoints: dict[str, str | os.PathLike],
    compatibility_csv: Optional[str | os.PathLike] = None,
) -> pd.DataFrame:
    """The task-vector cosine among ``sources``: read from a precomputed CSV, or computed now (streamed) from their
    checkpoints."""
    if compatibility_csv:
        path = Path(compatibility_csv)
        if not path.is_file():
            raise InputError(f"compatibility matrix {path} not found; compute it with `merginguriel compatibility --output {path}`")
        return pd.read_csv(path, index_col=0)
    from merginguriel.compatibility.cosine import task_vector_cosine

    return task_vector_cosine(base, {s: checkpoints[s] for s in sources})
