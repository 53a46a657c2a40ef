"""Linear merging (model soup): θ = Σ w_i θ_i, and its DARE variant on task vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from merginguriel.merging.methods._common import weighted_sum
from merginguriel.merging.methods.dare import DareParams, check_dare
from merginguriel.merging.registry import Alias, Block, register


@dataclass
class LinearParams:
    """Linear merge.

    Args:
        weighting: where the weights come from: ``similarity`` (the selection's scores), ``manual`` (the given
            weights) or ``average`` (1/K for every source, whatever was given).
        normalise: divide the weights by their sum (otherwise θ = Σ w_i θ_i with the raw weights).
    """

    ALIASES = {"normalize": Alias("normalise", help="mergekit's spelling")}

    weighting: Literal["similarity", "average", "manual"] = "manual"
    normalise: bool = True


def _average(params, weights: list[float]) -> list[float]:
    return [1.0 / len(weights)] * len(weights) if params.weighting == "average" else weights


@register("linear", LinearParams, inputs="models", uses_base=False, propagates_nonfinite=True, effective_weights=_average)
def linear(block: Block, p: LinearParams) -> torch.Tensor:
    """θ = Σ w_i θ_i (weights normalised to sum 1 unless normalise=false)."""
    return weighted_sum(block, (block.weights if p.normalise else block.raw_weights).tolist())


@dataclass
class DareLinearParams(LinearParams, DareParams):
    """DARE, then linear: θ = (Σ w_i) θ_b + Σ w_i DARE(τ_i).

    Args:
        weighting: ``similarity``, ``manual`` (the given weights) or ``average`` (1/K each).
        normalise: divide the weights by their sum.
        p: DARE drop probability per entry of each task vector.
        rescale: rescale surviving entries by 1 / (1 - p).
    """


@register("dare_linear", DareLinearParams, dare=True, propagates_nonfinite=True, effective_weights=_average, check=check_dare)
def dare_linear(block: Block, p: DareLinearParams) -> torch.Tensor:
    """DARE-preprocessed task vectors, merged linearly: θ = (Σ w) θ_b + Σ w_i τ̃_i."""
    ws = (block.weights if p.normalise else block.raw_weights).tolist()
    return block.base.mul_(float(sum(ws))).add_(weighted_sum(block, ws))
