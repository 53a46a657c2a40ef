"""Merging-effect features of a (target, selected sources) pair, computed before any merge so their predictive value
can be checked across targets.

The research log found none of these reliably predicts the merging effect on 21 targets (hence the advice runs a pilot);
storing them for every point lets the report measure that claim (leave-one-target-out accuracy) on any new sweep.
All features use validation-split numbers only; the test split stays for the final result.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pandas as pd

from merginguriel.errors import InputError

FEATURES = (
    "num_sources",
    "similarity_mean",
    "similarity_min",
    "similarity_max",
    "similarity_std",
    "source_diversity",
    "source_acc_mean",
    "source_acc_std",
    "source_acc_max",
    "source_quality",
    "compatibility_mean",
    "compatibility_min",
)


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, min(values), max(values), std


def read_nxn_if_present(path: Optional[Path]) -> Optional[pd.DataFrame]:
    """The NxN matrix through its one validating reader, or None when there is none."""
    if path is None or not Path(path).is_file():
        return None
    from merginguriel.similarity.real import read_nxn

    return read_nxn(path)


def source_accuracies(nxn: Optional[pd.DataFrame], sources: list[str], target: str) -> Optional[list[float]]:
    """acc(source on target) for every source, from an NxN matrix; None if any cell is missing."""
    if nxn is None or target not in nxn.columns or any(s not in nxn.index for s in sources):
        return None
    values = [float(nxn.loc[s, target]) for s in sources]
    return None if any(math.isnan(v) for v in values) else values


def source_diversity(kind: str, sources: list[str], options: dict, nxn_path: Optional[Path], root: Optional[str] = None) -> Optional[float]:
    """1 - mean pairwise similarity among the chosen sources (the similarity kind of the selection)."""
    if len(sources) < 2:
        return None
    from merginguriel.similarity import similarity_matrix

    try:
        opts = {"root": root, **dict(options)}
        if kind == "real":
            if nxn_path is None:
                return None
            opts["nxn_csv"] = str(nxn_path)
        sim = similarity_matrix(kind, list(sources), **opts)
    except InputError:
        return None
    pairs = [float(sim.loc[a, b]) for i, a in enumerate(sources) for b in sources[i + 1 :]]
    pairs += [float(sim.loc[b, a]) for i, a in enumerate(sources) for b in sources[i + 1 :]]
    return 1.0 - sum(pairs) / len(pairs)


def point_features(job, chosen) -> dict:
    """The merging-effect features of a checked job's chosen sources (None where an input, e.g. the NxN matrix, is
    missing). Everything comes from validation data: the test split stays for the final number."""
    from merginguriel.jobs.select import as_selection, validation_nxn

    sources = [s for s in chosen.names]
    target = job.target
    out: dict[str, Optional[float]] = {name: None for name in FEATURES}
    out["num_sources"] = float(len(sources))
    selection = as_selection(chosen)
    scores = [float(s) for s in (selection.scores if selection is not None else [])]
    if scores:
        out["similarity_mean"], out["similarity_min"], out["similarity_max"], out["similarity_std"] = _stats(scores)
    nxn_path = validation_nxn(job)
    if selection is not None:
        options = {"feature_set": job.selection.feature_set} if selection.similarity == "uriel" else {}
        out["source_diversity"] = source_diversity(selection.similarity, sources, options, nxn_path, job.job.root)
    nxn = read_nxn_if_present(nxn_path)
    accs = source_accuracies(nxn, sources, target)
    if accs:
        out["source_acc_mean"], _, out["source_acc_max"], out["source_acc_std"] = _stats(accs)
        if nxn is not None and target in nxn.index and float(nxn.loc[target, target]) > 0:
            out["source_quality"] = out["source_acc_mean"] / float(nxn.loc[target, target])
    if len(sources) >= 2 and all(loc is not None for loc in chosen.locales):
        from merginguriel.compatibility.weighting import compatibility_for

        layout = job.layout
        compat = compatibility_for(sources, job.base, {s: layout.finetuned(s) for s in sources}, job.selection.compatibility)
        pairs = [float(compat.loc[a, b]) for i, a in enumerate(sources) for b in sources[i + 1 :]]
        out["compatibility_mean"] = sum(pairs) / len(pairs)
        out["compatibility_min"] = min(pairs)
    return out
