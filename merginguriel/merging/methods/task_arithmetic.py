"""Task arithmetic, θ = θ_b + λ Σ c_i τ_i (c_i = w_i weighted, 1 unweighted as in the paper), and its DARE variant:
presets of the task-vector family (task_vectors.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from merginguriel.merging.methods._common import LAMBDA_ALIAS
from merginguriel.merging.methods.dare import DareParams, check_drop
from merginguriel.merging.methods.task_vectors import TaskVectorParams, preset
from merginguriel.merging.registry import Params, set_default


@dataclass(frozen=True)
class TaskArithmeticParams(Params):
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
            set_default(self, "lam", 1.0 if self.weighted else 0.3)


def _task_arithmetic(p: TaskArithmeticParams) -> TaskVectorParams:
    return TaskVectorParams(combine="mean" if p.weighted else "sum", weighted=p.weighted, lam=p.lam)


preset("task_arithmetic", TaskArithmeticParams, _task_arithmetic, """
    θ = θ_b + λ Σ w_i τ_i (weighted) or θ_b + λ Σ τ_i (unweighted): no sparsification, no consensus, mean or sum.

    vs mergekit: the weights are normalised to sum 1 by default (weighted: true), so λ = 0.3 over K equal sources
    applies 1/K of what mergekit's task_arithmetic (λ times the sum of the weighted task vectors, normalize: false)
    applies; weighted: false with λ is mergekit's unweighted sum. mergekit's ``lambda`` is accepted for ``lam``.
""")


@dataclass(frozen=True)
class DareTaskArithmeticParams(TaskArithmeticParams, DareParams):
    """DARE, then task arithmetic.

    Args:
        lam: the scaling λ; default 1.0 when weighted, 0.3 when unweighted.
        weighted: weight each task vector by its normalised source weight.
        p: DARE drop probability per entry.
        rescale: rescale surviving entries by 1 / (1 - p).
    """

    def __post_init__(self) -> None:
        TaskArithmeticParams.__post_init__(self)
        check_drop(self.p)


def _dare_task_arithmetic(p: DareTaskArithmeticParams) -> TaskVectorParams:
    return TaskVectorParams(sparsify="dare", combine="mean" if p.weighted else "sum", weighted=p.weighted, lam=p.lam,
                            p=p.p, rescale=p.rescale)


preset("dare_task_arithmetic", DareTaskArithmeticParams, _dare_task_arithmetic, """
    DARE-preprocessed task vectors, then θ = θ_b + λ Σ c_i τ̃_i: dare + no consensus + mean (or sum).
""")
