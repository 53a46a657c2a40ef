"""Model Breadcrumbs: per tensor, drop each task vector's largest-magnitude outliers and its smallest entries, then task arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    """

    ALIASES = LAMBDA_ALIAS

    density: float = 0.9
    gamma: float = 0.01
    lam: float = 1.0
    weighted: bool = True


def _check(p: BreadcrumbsParams, k: int) -> None:
    check_fraction("breadcrumbs", "density", p.density)
    check_fraction("breadcrumbs", "gamma", p.gamma, allow_zero=True)
    if p.density + p.gamma > 1.0 + 1e-12:
        raise InputError(
            f"breadcrumbs: density {p.density} + gamma {p.gamma} exceed 1 (more entries kept than exist after dropping "
            "the outliers); lower one of them"
        )


def outlier_count(p: BreadcrumbsParams, numel: int) -> int:
    return math.floor(p.gamma * numel + 1e-9)


def _ranks(p: BreadcrumbsParams, numel: int) -> list[int]:
    top = outlier_count(p, numel)
    keep = min(keep_count(p.density, numel), numel - top)
    # rank top: the smallest outlier (dropped with everything at or above it); rank top+keep: the smallest kept entry
    return ([top] if top > 0 else []) + [top + keep]


@register("breadcrumbs", BreadcrumbsParams, ranks=_ranks, rank_scope=lambda p: "tensor", check=_check)
def breadcrumbs(block: Block, p: BreadcrumbsParams) -> torch.Tensor:
    """Per tensor keep the |τ_i| ranked just below the top gamma fraction, a density fraction in all; θ = θ_b + λ Σ c_i τ̃_i."""
    numel = math.prod(block.shape)
    has_top = outlier_count(p, numel) > 0
    for i, t in enumerate(block.sources):
        mag = t.abs()
        keep = mag >= block.thresholds[i, -1]
        if has_top:
            keep &= mag < block.thresholds[i, 0]
        t.mul_(keep)
    return task_sum(block, p.weighted, p.lam)
