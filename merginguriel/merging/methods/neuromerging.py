"""NeuroMerging: split each neuron's task-vector row into the part parallel to the BASE neuron and the orthogonal rest,
merge the orthogonal parts (and optionally the parallel ones) with TIES election + disjoint mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from merginguriel.errors import InputError
from merginguriel.merging.methods._common import check_fraction, elect_merge, keep_count, trim_in_place
from merginguriel.merging.registry import Block, register


@dataclass
class NeuroMergingParams:
    """NeuroMerging.

    Args:
        mask_rate: the fraction of each tensor's task-vector entries with the smallest magnitudes that is masked.
        lambda_1: scale of the merged parallel components (input sensitivity); 0 drops them.
        lambda_2: scale of the merged orthogonal components; None: automatic, 1 / (1 − σ) with σ the largest share of
            a source's L1 mass in a tensor that lies in the parallel part, capped at lambda_2_cap.
        lambda_2_cap: upper bound of the automatic lambda_2.
    """

    mask_rate: float = 0.15
    lambda_1: float = 0.0
    lambda_2: Optional[float] = None
    lambda_2_cap: float = 2.0


def _check(p: NeuroMergingParams, k: int) -> None:
    check_fraction("neuromerging", "mask_rate", p.mask_rate, allow_zero=True)
    if p.mask_rate >= 1.0:
        raise InputError("neuromerging: mask_rate must be below 1 (it would mask everything); pass e.g. 0.15")
    if p.lambda_2_cap < 1.0:
        raise InputError(f"neuromerging: lambda_2_cap={p.lambda_2_cap} must be >= 1")


def is_neuronal(name: str, shape: tuple[int, ...]) -> bool:
    """Dense weights whose rows are neurons (2-D, not an embedding table)."""
    return len(shape) == 2 and "embeddings" not in name


def _ranks(p: NeuroMergingParams, numel: int) -> list[int]:
    return [] if p.mask_rate <= 0 else [keep_count(1.0 - p.mask_rate, numel)]


def _parallel(base: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Row-wise projection of tau onto the base rows: (b_k·τ_k / ‖b_k‖²) b_k (zero where a base row is zero)."""
    norm2 = (base * base).sum(dim=1, keepdim=True)
    coef = torch.where(norm2 > 0, (base * tau).sum(dim=1, keepdim=True) / norm2.clamp_min(1e-30), 0.0)
    return coef * base


def _sums(block: Block, p) -> dict[str, torch.Tensor]:
    if not is_neuronal(block.name, block.shape):
        return {}
    par = torch.stack([_parallel(block.base, t).abs().sum().double() for t in block.sources])
    tot = torch.stack([t.abs().sum().double() for t in block.sources])
    return {"l1_parallel": par, "l1_total": tot}


def lambda_2(p: NeuroMergingParams, sums: dict[str, torch.Tensor]) -> float:
    if p.lambda_2 is not None:
        return p.lambda_2
    tot = sums["l1_total"]
    share = torch.where(tot > 0, sums["l1_parallel"] / tot.clamp_min(1e-300), 0.0)
    sigma = float(share.max())
    return p.lambda_2_cap if sigma >= 1.0 else min(1.0 / (1.0 - sigma), p.lambda_2_cap)


@register(
    "neuromerging", NeuroMergingParams, ranks=_ranks, rank_scope=lambda p: "tensor", tensor_sums=_sums, check=_check
)
def neuromerging(block: Block, p: NeuroMergingParams) -> torch.Tensor:
    """Mask the smallest mask_rate of each τ_i; for neuron rows merge τ⊥ (orthogonal to the base row) by elect + mean
    scaled by λ_2, plus λ_1·merged τ∥; other tensors: elect + mean."""
    if block.thresholds is not None:
        for i, t in enumerate(block.sources):
            trim_in_place(t, block.thresholds[i, 0])
    if not is_neuronal(block.name, block.shape):
        return block.base.add_(elect_merge(block.sources, block.weights, "dis-mean"))
    parallels = [_parallel(block.base, t) for t in block.sources]
    orthogonals = [t.sub_(par) for t, par in zip(block.sources, parallels)]
    out = block.base.add_(elect_merge(orthogonals, block.weights, "dis-mean"), alpha=lambda_2(p, block.sums))
    if p.lambda_1:
        out.add_(elect_merge(parallels, block.weights, "dis-mean"), alpha=p.lambda_1)
    return out
