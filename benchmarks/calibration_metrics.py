"""The numbers of the calibration benchmark (benchmarks/calibration.py), as small functions over what a study leaves:
report rows of its results database (merginguriel.report.rows), NxN matrices (row = source model, column = evaluated
locale), similarity frames (``S.loc[target, source]``) and planted kernels (arrays in locale order).

Each is checked against an independent computation in tests/test_calibration.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedded_measure import spearman
from merginguriel.locales import NUM_INTENTS
from merginguriel.report.verdict import choose, describe

CHANCE = 1.0 / NUM_INTENTS

__all__ = ["CHANCE", "best_sources", "chosen_on_validation", "describe", "merges", "negative_effect_count", "pick_ranks",
           "quality_effect_spearman", "self_accuracy", "share_below", "significant_gains", "spearman", "transfer_ranks",
           "view_kernel_spearman", "view_transfer_spearman", "within", "worst_merge", "zero_shot_ratios"]


def within(value: float, low: float, high: float) -> bool:
    return bool(low <= value <= high)


# -- merges (report rows) -----------------------------------------------------------------------------------------------
def merges(points: pd.DataFrame, similarity: str, num_sources: int, method: str) -> pd.DataFrame:
    """One row per target: its merge with this similarity, K and method (the sweep makes exactly one)."""
    sel = points[(points["similarity"] == similarity) & (points["num_sources"] == num_sources) & (points["method"] == method)]
    dup = sel["target"][sel["target"].duplicated()].tolist()
    if dup:
        raise ValueError(f"more than one {method} merge with {similarity} K={num_sources} for {sorted(set(dup))}")
    return sel.sort_values("target").reset_index(drop=True)


def negative_effect_count(rows: pd.DataFrame) -> tuple[int, int]:
    """(targets whose merge has a negative merging effect on test, targets)."""
    effect = pd.to_numeric(rows["test_merging_effect"], errors="coerce").dropna()
    return int((effect < 0).sum()), int(len(effect))


def chosen_on_validation(points: pd.DataFrame) -> pd.DataFrame:
    """Per target, the merge with the best validation accuracy (the report's rule and tie-breaks)."""
    return pd.DataFrame([choose(group) for _, group in points.groupby("target", sort=True)]).reset_index(drop=True)


def significant_gains(chosen: pd.DataFrame, against: str = "gain") -> int:
    """How many merges beat their comparator on test with the whole 95% interval above 0: ``gain`` (the best selected
    source chosen on validation, methods.md) or ``overall`` (the best single model of all candidates, chosen on
    validation)."""
    return int((pd.to_numeric(chosen[f"test_{against}_ci_low"]) > 0).sum())


def worst_merge(points: pd.DataFrame) -> dict:
    """The merge with the lowest test gain over its best source (of every merge of every target)."""
    return points.loc[pd.to_numeric(points["test_gain"]).idxmin()].to_dict()


def quality_effect_spearman(rows: pd.DataFrame) -> float:
    """Spearman over targets of (mean test zero-shot accuracy of the selected sources / the target's own model's test
    accuracy) against the test merging effect: the research log's ``quality`` feature."""
    quality = pd.to_numeric(rows["test_source_mean"]) / pd.to_numeric(rows["test_self_accuracy"])
    return spearman(quality.to_numpy(), pd.to_numeric(rows["test_merging_effect"]).to_numpy())


# -- the NxN matrices -----------------------------------------------------------------------------------------------------
def self_accuracy(nxn: pd.DataFrame) -> pd.Series:
    """Each locale's own model on its own split (the diagonal)."""
    return pd.Series({loc: float(nxn.at[loc, loc]) for loc in nxn.columns})


def zero_shot_ratios(nxn: pd.DataFrame) -> np.ndarray:
    """nxn[s, t] / nxn[t, t] for every off-diagonal cell."""
    return np.array([nxn.at[s, t] / nxn.at[t, t] for s in nxn.index for t in nxn.columns if s != t], dtype=float)


def share_below(nxn: pd.DataFrame, threshold: float) -> float:
    """The share of off-diagonal cells below ``threshold``."""
    cells = np.array([nxn.at[s, t] for s in nxn.index for t in nxn.columns if s != t], dtype=float)
    return float((cells < threshold).mean())


def best_sources(nxn: dict[str, pd.DataFrame], targets: list[str], candidates: list[str]) -> pd.DataFrame:
    """Per target, the candidate (not the target) with the best VALIDATION zero-shot accuracy on it (ties: the earlier
    candidate), its TEST zero-shot accuracy and that over the target's own model's test accuracy. ``nxn``: the
    matrices by split."""
    validation, test = nxn["validation"], nxn["test"]
    out = []
    for t in targets:
        pool = [c for c in candidates if c != t]
        source = max(pool, key=lambda c: (validation.at[c, t], -pool.index(c)))
        out.append({"target": t, "source": source, "zero_shot": float(test.at[source, t]),
                    "self": float(test.at[t, t]), "ratio": float(test.at[source, t] / test.at[t, t])})
    return pd.DataFrame(out)


def transfer_ranks(test: pd.DataFrame, target: str) -> pd.Series:
    """Rank of every candidate source (every model but the target's) by its test accuracy on ``target``: 1 = best,
    ties share their mean rank."""
    column = test[target].drop(index=target).astype(float)
    return column.rank(ascending=False, method="average")


def pick_ranks(rows: pd.DataFrame, nxn: dict[str, pd.DataFrame]) -> list[float]:
    """The rank by TRUE transfer (``transfer_ranks`` on the test matrix) of every selected source of every row, pooled."""
    out = []
    for _, r in rows.iterrows():
        ranks = transfer_ranks(nxn["test"], r["target"])
        out += [float(ranks[s]) for s in r["sources"]]
    return out


# -- URIEL views against the planted causes and the measured transfer ---------------------------------------------------
def view_kernel_spearman(view: pd.DataFrame, kernel: np.ndarray) -> float:
    """Spearman of a similarity view against a planted kernel (same locale order) over unordered pairs i < j."""
    n = len(view)
    i, j = np.triu_indices(n, k=1)
    v = view.to_numpy(dtype=float)
    return spearman((v[i, j] + v[j, i]) / 2, np.asarray(kernel, dtype=float)[i, j])


def view_transfer_spearman(view: pd.DataFrame, test: pd.DataFrame) -> float:
    """Spearman of ``view.loc[t, s]`` against ``test.loc[s, t]`` (the source's model on the target) over every ordered
    pair s != t."""
    pairs = [(s, t) for s in test.index for t in test.columns if s != t]
    return spearman([view.at[t, s] for s, t in pairs], [test.at[s, t] for s, t in pairs])
