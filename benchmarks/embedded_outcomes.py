"""Merge outcomes in the embedded world: select sources (REAL or URIEL, ExcTar), merge them, and compare the merge
with the decision a user makes without merging -- the selected source with the best validation zero-shot accuracy --
on the target's test split, with an exact McNemar test on the paired per-example correctness.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from merginguriel.evaluation.paired import mcnemar_exact
from merginguriel.merging import MergeSpec, Source, merge
from merginguriel.similarity import Selection, real_similarity, select_sources

Correctness = Callable[[Path, str], np.ndarray]  # (model folder, locale) -> per-example test correctness


@dataclass
class Outcome:
    target: str
    similarity: str
    num_sources: int
    method: str
    sources: list[str]
    weights: list[float]
    single: str  # the selected source with the best validation zero-shot accuracy on the target
    single_accuracy: float
    merged_accuracy: float
    merge_only: int  # test rows only the merge gets right
    single_only: int
    p_value: float

    @property
    def gain(self) -> float:
        return self.merged_accuracy - self.single_accuracy

    def row(self) -> dict:
        return {**self.__dict__, "gain": self.gain}


def select(target: str, similarity: str, k: int, candidates: list[str], nxn_validation: pd.DataFrame, uriel: pd.DataFrame) -> Selection:
    """K sources for ``target`` (ExcTar) by REAL (validation NxN) or a URIEL similarity frame over the candidates."""
    if similarity == "real":
        frame = real_similarity(nxn_validation, list(dict.fromkeys([*candidates, target])))
    else:
        frame = uriel
    return select_sources(target, frame, k, include_target=False, weighting="scores", candidates=candidates, name=similarity)


def merge_outcome(
    selection: Selection,
    method: str,
    params: dict,
    base: Path,
    finetuned: Callable[[str], Path],
    out_dir: Path,
    nxn_validation: pd.DataFrame,
    test_correct: Correctness,
) -> Outcome:
    """Merge the selection's sources with ``method``, test the merge and the validation-chosen single source."""
    target = selection.target
    single = max(selection.sources, key=lambda s: (nxn_validation.at[s, target], s))
    recipe = json.dumps([selection.sources, [round(w, 6) for w in selection.weights], method, params], sort_keys=True)
    folder = out_dir / target / f"{selection.similarity}-k{selection.num_sources}-{method}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"
    if not (folder / "manifest.json").is_file():
        sources = [Source(finetuned(s), s, w) for s, w in zip(selection.sources, selection.weights)]
        merge(MergeSpec(base=base, sources=sources, method=method, params=dict(params), output=folder, device="cpu",
                        target=target, selection=selection.to_dict(), include_target=False, overwrite=True, progress=False))
    merged = test_correct(folder, target)
    alone = test_correct(finetuned(single), target)
    p, merge_only, single_only = mcnemar_exact(merged, alone)
    return Outcome(target, selection.similarity, selection.num_sources, method, list(selection.sources),
                   [round(w, 4) for w in selection.weights], single, float(alone.mean()), float(merged.mean()),
                   merge_only, single_only, p)
