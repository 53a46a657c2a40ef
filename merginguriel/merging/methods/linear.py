"""Linear merging (model soup), θ = Σ w_i θ_i, with the studies' names for it (``similarity``: the selection's
similarity weights; ``average``: 1/K each), and its DARE variant on task vectors (a preset of the task-vector family)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from merginguriel.errors import InputError
from merginguriel.merging.methods._common import weighted_sum
from merginguriel.merging.methods.dare import DareParams, check_drop
from merginguriel.merging.methods.task_vectors import TaskVectorParams, preset
from merginguriel.merging.registry import Alias, Block, Params, Reads, SourceSet, register


@dataclass(frozen=True)
class LinearParams(Params):
    """Linear merge.

    Args:
        weighting: where the weights come from: ``similarity`` (the selection's scores, so a similarity selection),
            ``manual`` (the given weights, so they must be given), ``average`` (1/K for every source, whatever was
            given); unset, the weights as the selection made them.
        normalise: divide the weights by their sum (otherwise θ = Σ w_i θ_i with the raw weights).
    """

    ALIASES = {"normalize": Alias("normalise", help="mergekit's spelling")}

    weighting: Optional[Literal["similarity", "average", "manual"]] = None
    normalise: bool = True

    def check_sources(self, sources: SourceSet) -> None:
        if self.weighting == "similarity" and sources.weights_from != "similarity":
            raise InputError("linear weighting=similarity needs selection.similarity (the weights come from the selection)")
        if self.weighting == "manual" and sources.weights_from != "given":
            raise InputError("linear weighting=manual needs selection.weights (one per source)")

    def effective_weights(self, weights: list[float]) -> list[float]:
        return [1.0 / len(weights)] * len(weights) if self.weighting == "average" else weights


def _linear_reads(p: LinearParams) -> Reads:
    return Reads(inputs="models", base=False, carries_nonfinite=True)


@register("linear", LinearParams, reads=_linear_reads)
def linear(block: Block, p: LinearParams) -> torch.Tensor:
    """θ = Σ w_i θ_i (weights normalised to sum 1 unless normalise=false)."""
    return weighted_sum(block, (block.weights if p.normalise else block.raw_weights).tolist())


@dataclass(frozen=True)
class SimilarityParams(LinearParams):
    """Linear with the selection's similarity weights.

    Args:
        weighting: always ``similarity``.
        normalise: divide the weights by their sum.
    """

    weighting: Literal["similarity"] = "similarity"

    def check_sources(self, sources: SourceSet) -> None:
        if sources.weights_from != "similarity":
            raise InputError(
                "method similarity weights the sources by their similarity scores, so it needs selection.similarity; "
                "with explicit sources use linear (your weights) or average"
            )


@dataclass(frozen=True)
class AverageParams(LinearParams):
    """Linear with equal weights.

    Args:
        weighting: always ``average``.
        normalise: divide the weights by their sum.
    """

    weighting: Literal["average"] = "average"


register("similarity", SimilarityParams, reads=_linear_reads, preset_of="linear", doc="""
    linear with the selection's similarity weights (needs selection.similarity).
""")(linear)
register("average", AverageParams, reads=_linear_reads, preset_of="linear", doc="""
    linear with equal weights 1/K, whatever weights were given.
""")(linear)


@dataclass(frozen=True)
class DareLinearParams(LinearParams, DareParams):
    """DARE, then linear: θ = (Σ w_i) θ_b + Σ w_i DARE(τ_i).

    Args:
        weighting: ``similarity``, ``manual`` (the given weights) or ``average`` (1/K each); unset, as the selection
            made them.
        normalise: divide the weights by their sum.
        p: DARE drop probability per entry of each task vector.
        rescale: rescale surviving entries by 1 / (1 - p).
    """

    def __post_init__(self) -> None:
        check_drop(self.p)


def _dare_linear(p: DareLinearParams) -> TaskVectorParams:
    return TaskVectorParams(sparsify="dare", combine="linear", normalise=p.normalise, p=p.p, rescale=p.rescale)


preset("dare_linear", DareLinearParams, _dare_linear, """
    DARE-preprocessed task vectors, merged linearly: θ = (Σ w) θ_b + Σ w_i τ̃_i (dare + no consensus + linear).
""")
