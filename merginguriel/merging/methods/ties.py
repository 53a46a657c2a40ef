"""TIES merging (trim, elect sign, disjoint merge) with global (paper) or per-tensor (mergekit) trimming, and DARE-TIES:
presets of the task-vector family (task_vectors.py).

Per-tensor trimming with ``rounding: floor`` (the default in tensor scope) keeps ``int(density * n)`` entries of each
tensor, exactly as mergekit's ``ties`` (its ``magnitude`` sparsification), and the elect + disjoint mean equals
mergekit's ``sum`` consensus with ``normalize: true``; the results agree wherever no two magnitudes tie at the
threshold (mergekit keeps exactly k of them by sort order, here every tied entry is kept) and no elected sum is exactly
zero with non-zero entries (mergekit elects +, here nothing is merged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from merginguriel.merging.methods._common import LAMBDA_ALIAS, check_fraction
from merginguriel.merging.methods.dare import DareParams, check_drop
from merginguriel.merging.methods.task_vectors import TaskVectorParams, preset
from merginguriel.merging.registry import Params, set_default


@dataclass(frozen=True)
class TiesParams(Params):
    """TIES merging.

    Args:
        density: the fraction k of each task vector's entries kept by magnitude (k = 20% in the paper: 0.2).
        scope: where the top-k is taken: ``global`` (over the whole model, as in the paper) or ``tensor`` (per tensor, as mergekit).
        merge: ``dis-mean`` (mean over the agreeing entries) or ``dis-sum`` (their sum).
        lam: the scaling λ of the merged task vector; default 1.0 with dis-mean, 0.3 with dis-sum.
        rounding: how many of n entries density keeps: ``floor`` = int(density·n), mergekit's rule; ``ceil`` =
            ⌈density·n⌉, at least the fraction; ``auto``: floor in tensor scope (as mergekit), ceil in global scope (the
            paper's top-k%). At least one entry is kept (mergekit refuses a tensor where int(density·n) = 0).
    """

    ALIASES = LAMBDA_ALIAS

    density: float = 0.2
    scope: Literal["global", "tensor"] = "global"
    merge: Literal["dis-mean", "dis-sum"] = "dis-mean"
    lam: Optional[float] = None
    rounding: Literal["auto", "floor", "ceil"] = "auto"

    def __post_init__(self) -> None:
        if self.lam is None:
            set_default(self, "lam", 1.0 if self.merge == "dis-mean" else 0.3)
        check_fraction("ties", "density", self.density)


def _ties(params: TiesParams, sparsify: str = "magnitude", **dare) -> TaskVectorParams:
    return TaskVectorParams(sparsify=sparsify, consensus="ties", combine="mean" if params.merge == "dis-mean" else "sum",
                            lam=params.lam, density=params.density, scope=params.scope, rounding=params.rounding, **dare)


preset("ties", TiesParams, _ties, """
    Trim each τ_i to its top-k magnitudes, elect signs by weighted mass, merge agreeing entries: θ = θ_b + λ·merged
    (magnitude + ties + mean, or sum with merge dis-sum).

    vs mergekit: scope ``tensor`` with the default rounding is mergekit's ``ties`` (normalize: true; its ``lambda``
    is accepted for ``lam``); scope ``global`` (the default, as the paper) trims over the whole model instead.
    Weights are normalised to sum 1 (a common factor: dis-mean does not depend on it; dis-sum multiplies by K).
""")


@dataclass(frozen=True)
class DareTiesParams(TiesParams, DareParams):
    """DARE, then TIES (by default without magnitude trimming, as mergekit's dare_ties: density 1.0).

    Args:
        density: the TIES magnitude-trim keep fraction applied after DARE (1.0: no trim). NOT mergekit's dare_ties
            density, which is DARE's keep rate: that is 1 − p here.
        scope: ``global`` or ``tensor`` trimming.
        merge: ``dis-mean`` or ``dis-sum``.
        lam: the scaling λ; default 1.0 with dis-mean, 0.3 with dis-sum.
        rounding: ``auto``, ``floor`` (mergekit) or ``ceil``, as for ties.
        p: DARE drop probability per entry.
        rescale: rescale surviving entries by 1 / (1 - p).
    """

    density: float = 1.0

    def __post_init__(self) -> None:
        TiesParams.__post_init__(self)
        check_drop(self.p)


def _dare_ties(params: DareTiesParams) -> TaskVectorParams:
    return _ties(params, "dare+magnitude", p=params.p, rescale=params.rescale)


preset("dare_ties", DareTiesParams, _dare_ties, """
    DARE-preprocessed task vectors, then TIES trim (if density < 1), sign election and disjoint merge
    (dare+magnitude + ties + mean).

    vs mergekit's dare_ties: its ``density`` is DARE's keep rate (here ``p`` = 1 − density, since ``density`` names the
    optional TIES trim) and its rescale keeps each tensor's L1 norm (here 1/(1 − p): the same in expectation).
""")
