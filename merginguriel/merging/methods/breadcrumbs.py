"""Model Breadcrumbs: per tensor, drop each task vector's largest-magnitude outliers and its smallest entries, then task
arithmetic (breadcrumbs) or the TIES election (breadcrumbs_ties, mergekit's name): presets of the task-vector family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from merginguriel.merging.methods._common import LAMBDA_ALIAS
from merginguriel.merging.methods.task_vectors import TaskVectorParams, preset
from merginguriel.merging.registry import Params, set_default


@dataclass(frozen=True)
class BreadcrumbsParams(Params):
    """Model Breadcrumbs.

    Args:
        density: the fraction of each tensor's task-vector entries that remains.
        gamma: the fraction of largest-magnitude entries (outliers) dropped first.
        lam: the task-arithmetic scaling λ.
        weighted: weight each task vector by its normalised source weight (false: plain sum).
        rounding: ``ceil``: keep ⌈density·n⌉ entries (at least one) below the ⌊gamma·n⌋ outliers, density + gamma
            must not exceed 1; ``floor``: mergekit's ``magnitude_outliers``: keep int(density·n) entries, drop
            int(gamma·n) outliers but fewer where both would not fit, and keep everything at density 1.
    """

    ALIASES = LAMBDA_ALIAS

    density: float = 0.9
    gamma: float = 0.01
    lam: float = 1.0
    weighted: bool = True
    rounding: Literal["ceil", "floor"] = "ceil"

    def __post_init__(self) -> None:
        _breadcrumbs(self)  # the family checks the fractions


def _breadcrumbs(p: BreadcrumbsParams) -> TaskVectorParams:
    return TaskVectorParams(sparsify="breadcrumbs", combine="mean" if p.weighted else "sum", weighted=p.weighted,
                            lam=p.lam, density=p.density, gamma=p.gamma, rounding=p.rounding)


preset("breadcrumbs", BreadcrumbsParams, _breadcrumbs, """
    Per tensor keep the |τ_i| ranked just below the top gamma fraction, a density fraction in all; θ = θ_b + λ Σ c_i τ̃_i
    (breadcrumbs + no consensus + mean).

    vs mergekit: ``rounding: floor`` is mergekit's breadcrumbs sparsification (``magnitude_outliers``); mergekit's
    breadcrumbs (normalize false) sums w_i τ̃_i unnormalised, i.e. λ here is its λ times the sum of its weights.
""")


@dataclass(frozen=True)
class BreadcrumbsTiesParams(Params):
    """Model Breadcrumbs' sparsification with the TIES sign election.

    Args:
        density: the fraction of each tensor's task-vector entries that remains.
        gamma: the fraction of largest-magnitude entries (outliers) dropped first.
        merge: ``dis-mean`` (mean over the agreeing entries) or ``dis-sum`` (their sum).
        lam: the scaling λ; default 1.0 with dis-mean, 0.3 with dis-sum.
        rounding: ``ceil`` or ``floor`` (mergekit's ``magnitude_outliers``), as for breadcrumbs.
    """

    ALIASES = LAMBDA_ALIAS

    density: float = 0.9
    gamma: float = 0.01
    merge: Literal["dis-mean", "dis-sum"] = "dis-mean"
    lam: Optional[float] = None
    rounding: Literal["ceil", "floor"] = "ceil"

    def __post_init__(self) -> None:
        if self.lam is None:
            set_default(self, "lam", 1.0 if self.merge == "dis-mean" else 0.3)
        _breadcrumbs_ties(self)


def _breadcrumbs_ties(p: BreadcrumbsTiesParams) -> TaskVectorParams:
    return TaskVectorParams(sparsify="breadcrumbs", consensus="ties", combine="mean" if p.merge == "dis-mean" else "sum",
                            lam=p.lam, density=p.density, gamma=p.gamma, rounding=p.rounding)


preset("breadcrumbs_ties", BreadcrumbsTiesParams, _breadcrumbs_ties, """
    Breadcrumbs' sparsification, then the TIES sign election and disjoint merge (breadcrumbs + ties + mean).

    vs mergekit: ``rounding: floor`` with dis-mean is mergekit's breadcrumbs_ties (magnitude_outliers + the sum
    consensus, normalize: true), with the same caveats as ties (ties at a threshold, an elected sum of exactly zero).
""")
