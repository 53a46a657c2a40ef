"""Task arithmetic: θ = θ_b + λ Σ c_i τ_i, with c_i = w_i (weighted) or 1 (unweighted, as in the paper); and its DARE variant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from merginguriel.merging.methods._common import LAMBDA_ALIAS, weighted_sum
from merginguriel.merging.methods.dare import DareParams, check_dare
from merginguriel.merging.registry import Block, register


@dataclass
class TaskArithmeticParams:
    """Task arithmetic.

    Args:
        lam: the scaling λ; default 1.0 when weighted, 0.3 when unweighted (the paper's common choice).
        weighted: weight each task vector by its normalised source weight (false: plain sum Σ τ_i).
    """

    ALIASES = LAMBDA_ALIAS

    lam: Optional[float] = None
    weighted: bool = True

    def __post_init__(self) -> None:
        if self.lam is None:
            self.lam = 1.0 if self.weighted else 0.3


def task_sum(block: Block, weighted: bool, lam: float) -> torch.Tensor:
    ws = block.weights.tolist() if weighted else [1.0] * len(block.sources)
    return block.base.add_(weighted_sum(block, [lam * w for w in ws]))


@register("task_arithmetic", TaskArithmeticParams, propagates_nonfinite=True)
def task_arithmetic(block: Block, p: TaskArithmeticParams) -> torch.Tensor:
    """θ = θ_b + λ Σ w_i τ_i (weighted) or θ_b + λ Σ τ_i (unweighted).

    vs mergekit: the weights are normalised to sum 1 by default (weighted: true), so λ = 0.3 over K equal sources
    applies 1/K of what mergekit's task_arithmetic (λ times the sum of the weighted task vectors, normalize: false)
    applies; weighted: false with λ is mergekit's unweighted sum. mergekit's ``lambda`` is accepted for ``lam``.
    """
    return task_sum(block, p.weighted, p.lam)


@dataclass
class DareTaskArithmeticParams(TaskArithmeticParams, DareParams):
    """DARE, then task arithmetic.

    Args:
        lam: the scaling λ; default 1.0 when weighted, 0.3 when unweighted.
        weighted: weight each task vector by its normalised source weight.
        p: DARE drop probability per entry.
        rescale: rescale surviving entries by 1 / (1 - p).
    """


@register("dare_task_arithmetic", DareTaskArithmeticParams, dare=True, propagates_nonfinite=True, check=check_dare)
def dare_task_arithmetic(block: Block, p: DareTaskArithmeticParams) -> torch.Tensor:
    """DARE-preprocessed task vectors, then θ = θ_b + λ Σ c_i τ̃_i."""
    return task_sum(block, p.weighted, p.lam)
