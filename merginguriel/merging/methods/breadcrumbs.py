"""Model Breadcrumbs: per tensor, drop each task vector's largest-magnitude outliers and its smallest entries, then task arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from merginguriel.errors import InputError
from merginguriel.merging.methods._common import LAMBDA_ALIAS, check_fraction, keep_count
from merginguriel.merging.methods.task_arithmetic import task_sum
from merginguriel.merging.registry import Block, register


@dataclass
class BreadcrumbsParams:
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


def _check(p: BreadcrumbsParams, k: int) -> None:
    check_fraction("breadcrumbs", "density", p.density)
    check_fraction("breadcrumbs", "gamma", p.gamma, allow_zero=True)
    if p.rounding == "ceil" and p.density + p.gamma > 1.0 + 1e-12:
        raise InputError(
            f"breadcrumbs: density {p.density} + gamma {p.gamma} exceed 1 (more entries kept than exist after dropping "
            "the outliers); lower one of them (or rounding: floor, mergekit's rule, drops fewer outliers then)"
        )


def counts(p: BreadcrumbsParams, numel: int) -> Optional[tuple[int, int]]:
    """(outliers dropped, entries kept) of a tensor of ``numel`` entries; None when every entry is kept."""
    if p.rounding == "floor":
        if p.density >= 1.0:
            return None
        keep = int(p.density * numel)
        return min(int(p.gamma * numel), numel - keep), keep
    top = math.floor(p.gamma * numel + 1e-9)
    return top, min(keep_count(p.density, numel), numel - top)


def _ranks(p: BreadcrumbsParams, numel: int) -> list[int]:
    c = counts(p, numel)
    if c is None:
        return []
    top, keep = c
    # rank top: the smallest outlier (dropped with everything at or above it); rank top+keep: the smallest kept entry
    return ([top] if top > 0 else []) + ([top + keep] if keep > 0 else [])


@register("breadcrumbs", BreadcrumbsParams, ranks=_ranks, rank_scope=lambda p: "tensor", check=_check)
def breadcrumbs(block: Block, p: BreadcrumbsParams) -> torch.Tensor:
    """Per tensor keep the |τ_i| ranked just below the top gamma fraction, a density fraction in all; θ = θ_b + λ Σ c_i τ̃_i.

    vs mergekit: ``rounding: floor`` is mergekit's breadcrumbs sparsification (``magnitude_outliers``); mergekit's
    breadcrumbs (normalize false) sums w_i τ̃_i unnormalised, i.e. λ here is its λ times the sum of its weights.
    """
    c = counts(p, math.prod(block.shape))
    if c is not None:
        top, keep_n = c
        for i, t in enumerate(block.sources):
            if keep_n == 0:
                t.zero_()
                continue
            mag = t.abs()
            keep = mag >= block.thresholds[i, -1]
            if top > 0:
                keep &= mag < block.thresholds[i, 0]
            t.mul_(keep)
    return task_sum(block, p.weighted, p.lam)
