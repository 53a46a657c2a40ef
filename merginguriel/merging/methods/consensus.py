"""Directional consensus: pull each task vector toward the weighted consensus direction of its tensor, then task arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from merginguriel.merging.methods._common import check_fraction
from merginguriel.merging.registry import Block, register


@dataclass
class DirectionalConsensusParams:
    """Directional consensus.

    Args:
        alpha: how far each τ_i moves to its projection on the consensus direction d (1: fully projected).
        lam: the scaling λ of Σ w_i τ_i'.
    """

    alpha: float = 1.0
    lam: float = 1.0


def _consensus(block: Block) -> torch.Tensor:
    s = torch.zeros_like(block.base)
    for t, w in zip(block.sources, block.weights.tolist()):
        s.add_(t, alpha=w)
    return s


def _sums(block: Block, p) -> dict[str, torch.Tensor]:
    s = _consensus(block).reshape(-1).double()
    dots = torch.stack([torch.dot(t.reshape(-1).double(), s) for t in block.sources])
    return {"ss": torch.dot(s, s), "dots": dots}


@register(
    "directional_consensus", DirectionalConsensusParams, tensor_sums=_sums,
    check=lambda p, k: check_fraction("directional_consensus", "alpha", p.alpha, allow_zero=True),
)
def directional_consensus(block: Block, p: DirectionalConsensusParams) -> torch.Tensor:
    """d = Σ w_i τ_i / ‖Σ w_i τ_i‖ per tensor; τ_i' = α (τ_i·d) d + (1−α) τ_i; θ = θ_b + λ Σ w_i τ_i'."""
    s = _consensus(block)
    ss = float(block.sums["ss"])
    out = block.base
    for t, w, dot in zip(block.sources, block.weights.tolist(), block.sums["dots"].tolist()):
        proj = dot / ss if ss > 0 else 0.0  # (τ_i·d) d = (τ_i·s / ‖s‖²) s
        out.add_(s, alpha=p.lam * w * p.alpha * proj)
        out.add_(t, alpha=p.lam * w * (1.0 - p.alpha))
    return out
