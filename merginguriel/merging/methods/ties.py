"""TIES merging (trim, elect sign, disjoint merge) with global (paper) or per-tensor (mergekit) trimming; and DARE-TIES."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from merginguriel.merging.methods._common import check_fraction, elect_merge, keep_count, trim
from merginguriel.merging.methods.dare import DareParams, check_dare
from merginguriel.merging.registry import Block, register


@dataclass
class TiesParams:
    """TIES merging.

    Args:
        density: the fraction k of each task vector's entries kept by magnitude (k = 20% in the paper: 0.2).
        scope: where the top-k is taken: ``global`` (over the whole model, as in the paper) or ``tensor`` (per tensor, as mergekit).
        merge: ``dis-mean`` (mean over the agreeing entries) or ``dis-sum`` (their sum).
        lam: the scaling λ of the merged task vector; default 1.0 with dis-mean, 0.3 with dis-sum.
    """

    density: float = 0.2
    scope: Literal["global", "tensor"] = "global"
    merge: Literal["dis-mean", "dis-sum"] = "dis-mean"
    lam: Optional[float] = None

    def __post_init__(self) -> None:
        if self.lam is None:
            self.lam = 1.0 if self.merge == "dis-mean" else 0.3


def _check(p, k: int) -> None:
    check_fraction("ties", "density", p.density)


def _ranks(p, numel: int) -> list[int]:
    return [] if p.density >= 1.0 else [keep_count(p.density, numel)]


def _scope(p) -> str:
    return p.scope


def ties_block(block: Block, p) -> torch.Tensor:
    if block.thresholds is not None:
        block.sources = [trim(t, block.thresholds[i, 0]) for i, t in enumerate(block.sources)]
        block.stacked = None  # the trimmed tensors are new ones
    merged = elect_merge(block.sources, block.weights, p.merge)
    return block.base.add_(merged, alpha=p.lam)


@register("ties", TiesParams, ranks=_ranks, rank_scope=_scope, check=_check)
def ties(block: Block, p: TiesParams) -> torch.Tensor:
    """Trim each τ_i to its top-k magnitudes, elect signs by weighted mass, merge agreeing entries: θ = θ_b + λ·merged."""
    return ties_block(block, p)


@dataclass
class DareTiesParams(TiesParams, DareParams):
    """DARE, then TIES (by default without magnitude trimming, as mergekit's dare_ties: density 1.0).

    Args:
        density: the TIES keep fraction applied after DARE (1.0: no magnitude trim).
        scope: ``global`` or ``tensor`` trimming.
        merge: ``dis-mean`` or ``dis-sum``.
        lam: the scaling λ; default 1.0 with dis-mean, 0.3 with dis-sum.
        p: DARE drop probability per entry.
        rescale: rescale surviving entries by 1 / (1 - p).
    """

    density: float = 1.0


def _check_dare_ties(p, k: int) -> None:
    _check(p, k)
    check_dare(p, k)


@register("dare_ties", DareTiesParams, dare=True, ranks=_ranks, rank_scope=_scope, check=_check_dare_ties)
def dare_ties(block: Block, p: DareTiesParams) -> torch.Tensor:
    """DARE-preprocessed task vectors, then TIES trim (if density < 1), sign election and disjoint merge."""
    return ties_block(block, p)

