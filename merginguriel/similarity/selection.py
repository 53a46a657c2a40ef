"""Choosing and weighting the source models for a target locale.

Every similarity frame follows one convention: ``S.loc[target, source]`` is the score of ``source`` for ``target``.

Selection (``select_sources``):

* the pool is the candidate sources (default: every column of ``S``) other than the target;
* ExcTar (``include_target=False``): the K sources are the pool's K highest scores in the target's row. IncTar: the
  target's own model is always one of the K (it must then have one, i.e. a column), with the pool's K - 1 highest. Ties are broken deterministically by locale name
  (ascending), i.e. the ranking key is ``(-score, locale)``; every one of the K sources takes part in the merge;
* weights are ``scores`` -- the K scores renormalised to sum to 1 (the research log's mapping) --, ``softmax`` --
  ``exp(score / T)`` renormalised, a sharper mapping: URIEL's ``(cos + 1) / 2`` scores of binary ``syntax_knn``
  features never fall below 0.5, so renormalised scores stay near uniform (pt-PT's top 3: 0.335/0.333/0.333), while a
  temperature T of 0.05 turns a 0.1 score gap into a weight ratio of e^2 ~ 7.4; choose T on validation --, or
  ``sinkhorn``, described below.

Sinkhorn weighting (as in the reference runs: top-k sparsification, then 20 alternating row/column normalisations):

1. The balanced matrix ``M`` is the square similarity over ``L = pool + [target]`` (in both axes), ``M[r, c] = S[r, c]``.
   Under ExcTar its diagonal is zeroed (no locale is its own source); under IncTar it is kept.
2. Each row of ``M`` keeps only its K largest entries (the same ``(-score, locale)`` ranking; all other entries set to 0),
   and the target's row keeps exactly its K selected sources (under IncTar the target is one of them).
3. 20 iterations of: divide each row by its sum, then each column by its sum (an all-zero row or column is left at 0).
4. The target's weights are its row of the balanced matrix at the K sources, renormalised to sum to 1 (after the final
   column step the rows sum to 1 only approximately).

So Sinkhorn changes the weights, never which sources are chosen. It needs ``S`` over every locale of ``L`` as both
target and source (a square URIEL matrix, or a REAL matrix in which the target has its own model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from merginguriel.errors import InputError
from merginguriel.locales import as_locale, check_locales

Weighting = Literal["scores", "softmax", "sinkhorn"]
WEIGHTINGS: tuple[str, ...] = ("scores", "softmax", "sinkhorn")
DEFAULT_TEMPERATURE = 0.05
SINKHORN_ITERATIONS = 20


@dataclass
class Selection:
    """The chosen sources of one target, with their weights (sum 1) and raw similarity scores, recorded in manifests.

    ``options`` holds the similarity's own options (``feature_set`` for ``uriel``), valid as keyword arguments of both
    ``select_for_target`` and ``similarity_matrix``.
    """

    target: str
    sources: list[str]
    weights: list[float]
    scores: list[float]
    similarity: str
    include_target: bool
    weighting: str
    options: dict = field(default_factory=dict)
    temperature: float | None = None

    @property
    def num_sources(self) -> int:
        return len(self.sources)

    def to_dict(self) -> dict:
        """A JSON-ready record (what `merge` writes under ``selection`` in its manifest)."""
        return {**asdict(self), "num_sources": self.num_sources}


def rank(scores: pd.Series) -> list[str]:
    """Locales ordered by score descending, ties by locale name ascending (deterministic)."""
    return [loc for _, loc in sorted((-float(v), str(loc)) for loc, v in scores.items())]


def topk_mask(matrix: pd.DataFrame, k: int, exclude_self: bool) -> pd.DataFrame:
    """Keep each row's k largest entries (ties by column name), zero the rest; the diagonal first zeroed if asked."""
    out = pd.DataFrame(0.0, index=matrix.index, columns=matrix.columns)
    for r in matrix.index:
        row = matrix.loc[r]
        if exclude_self and r in row.index:
            row = row.drop(r)
        for c in rank(row)[:k]:
            out.at[r, c] = float(matrix.at[r, c])
    return out


def sinkhorn(matrix: np.ndarray, iterations: int = SINKHORN_ITERATIONS) -> np.ndarray:
    """Alternating row then column normalisation of a non-negative matrix, ``iterations`` times.

    For a square matrix with total support (e.g. strictly positive) the result converges to a doubly stochastic matrix.
    Rows or columns that are all zero stay zero.
    """
    m = np.array(matrix, dtype=float)
    if m.ndim != 2 or (m < 0).any() or not np.isfinite(m).all():
        raise InputError("Sinkhorn balancing needs a 2-D matrix of finite, non-negative scores")
    for _ in range(iterations):
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        cols = m.sum(axis=0, keepdims=True)
        m = np.divide(m, cols, out=np.zeros_like(m), where=cols > 0)
    return m


def sinkhorn_weights(
    target: str, similarity: pd.DataFrame, pool: list[str], sources: list[str], include_target: bool,
    iterations: int = SINKHORN_ITERATIONS,
) -> list[float]:
    """The target's Sinkhorn-balanced weights for ``sources`` (see the module docstring for the exact recipe)."""
    locales = list(dict.fromkeys([*pool, target]))
    absent = [loc for loc in locales if loc not in similarity.index or loc not in similarity.columns]
    if absent:
        raise InputError(
            f"Sinkhorn weighting balances the square similarity over the target and its candidates, but "
            f"{', '.join(absent)} is missing as a row or column (for REAL: the target needs its own model in the NxN "
            "matrix); use --selection.weighting scores, or complete the matrix"
        )
    square = similarity.loc[locales, locales].astype(float)
    sparse = topk_mask(square, len(sources), exclude_self=not include_target)
    sparse.loc[target] = 0.0
    sparse.loc[target, sources] = square.loc[target, sources]
    balanced = pd.DataFrame(sinkhorn(sparse.to_numpy(), iterations), index=locales, columns=locales)
    w = balanced.loc[target, sources].to_numpy(dtype=float)
    if w.sum() <= 0:
        raise InputError(f"Sinkhorn weights of {target}'s sources sum to zero; their similarity scores are all zero")
    return list(w / w.sum())


def select_sources(
    target: str,
    similarity: pd.DataFrame,
    num_sources: int,
    include_target: bool = False,
    weighting: Weighting = "scores",
    candidates: list[str] | None = None,
    name: str = "custom",
    temperature: float = DEFAULT_TEMPERATURE,
) -> Selection:
    """Pick the ``num_sources`` best sources for ``target`` from ``similarity`` (``S.loc[target, source]``) and weight them.

    Args:
        target: the target locale (a row of ``similarity``).
        similarity: frame with ``S.loc[target, source]``; values must be finite and non-negative.
        num_sources: K, the number of sources (all take part).
        include_target: IncTar (the target's own model is always one of the K) or ExcTar (it never is).
        weighting: ``scores`` (renormalised scores), ``softmax`` (of the scores over ``temperature``) or ``sinkhorn``
            (balanced, see module docstring).
        candidates: the locales allowed as sources (default: every column); typically those with a fine-tuned model.
        name: the similarity's name recorded in the Selection.
        temperature: the softmax temperature (``weighting="softmax"``).
    """
    target = as_locale(target)
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")
    if not isinstance(num_sources, (int, np.integer)) or isinstance(num_sources, bool) or num_sources < 1:
        raise InputError(f"num_sources must be a positive integer, got {num_sources!r}")
    if target not in similarity.index:
        raise InputError(f"target {target} has no row in the {name} similarity; compute the similarity for {target} too")
    columns = [str(c) for c in similarity.columns]
    candidates = check_locales(columns if candidates is None else list(candidates))
    absent = [c for c in candidates if c not in columns]
    if absent:
        raise InputError(f"candidate source(s) {', '.join(absent)} have no column in the {name} similarity; drop them or recompute it")
    if include_target:
        if target not in columns:
            raise InputError(
                f"IncTar needs the target's own model, but {target} is not a source in the {name} similarity; "
                "fine-tune it (and rerun nxn for REAL) or use ExcTar (include_target false)"
            )
    others = [c for c in candidates if c != target]
    pool = [*others, target] if include_target else others
    if num_sources > len(pool):
        raise InputError(
            f"num_sources={num_sources} but only {len(pool)} candidate source(s) for {target} "
            f"({'IncTar' if include_target else 'ExcTar'}): {', '.join(pool) or 'none'}; lower selection.num_sources or add models"
        )
    row = similarity.loc[target, pool].astype(float)
    if not np.isfinite(row.to_numpy()).all() or (row < 0).any():
        bad = [c for c, v in row.items() if not np.isfinite(v) or v < 0]
        raise InputError(f"{name} similarity of {target} is missing or negative for {', '.join(bad)}; recompute it")
    sources = [target, *rank(row[others])[: num_sources - 1]] if include_target else rank(row)[:num_sources]
    scores = [float(row[s]) for s in sources]
    if weighting == "scores":
        total = sum(scores)
        if total <= 0:
            raise InputError(f"the {name} scores of {target}'s top-{num_sources} sources sum to zero; weights are undefined")
        weights = [s / total for s in scores]
    elif weighting == "softmax":
        if not temperature > 0:
            raise InputError(f"softmax weighting needs a positive temperature, got {temperature}")
        z = np.exp((np.array(scores) - max(scores)) / temperature)
        weights = list(z / z.sum())
    else:
        weights = sinkhorn_weights(target, similarity, pool, sources, include_target)
    return Selection(target, sources, [float(w) for w in weights], scores, name, bool(include_target), weighting,
                     temperature=float(temperature) if weighting == "softmax" else None)
