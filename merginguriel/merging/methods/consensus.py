"""Directional consensus: task vectors judged against the consensus direction d = Σ_i τ_i / ‖Σ_i τ_i‖ (the UNWEIGHTED
sum of the sources' task vectors). Two variants:

``agreement`` (default): a source's weight is gated by how well it agrees with d, c_i ∝ w_i·max(0, cos(τ_i, d)),
renormalised to sum 1, and θ = θ_b + λ Σ_i c_i τ_i. Agreement is measured per neuron row (``scope: row``: each row
of a ≥2-D tensor; a 1-D tensor as a whole) or per tensor. Sources pointing against the consensus are dropped there,
the rest damped by their angle to it: variance reduction that is not linear in τ. Where no source with positive
weight agrees (or Σ τ_i = 0) the plain weights are used (task arithmetic).

``research_log``: the research log's definition (2026-01-20), per tensor: each τ_i is replaced by its projection
(τ_i·d) d and the projections are aggregated with the weights: θ = θ_b + λ Σ_i w_i (τ_i·d) d. This is linear in τ:
with uniform weights it EQUALS weighted task arithmetic (Σ_i (τ_i·d) d / K = Σ_i τ_i / K), and with other weights it
removes only the part of Σ_i w_i τ_i orthogonal to d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from merginguriel.merging.methods._common import LAMBDA_ALIAS, gram_matrix
from merginguriel.merging.registry import Block, Params, Reads, Sums, register


@dataclass(frozen=True)
class DirectionalConsensusParams(Params):
    """Directional consensus (see the module docstring).

    Args:
        variant: ``agreement`` (default: weights gated by max(0, cos(τ_i, d)), renormalised) or ``research_log``
            (projection of each τ_i onto d, weighted sum: equals weighted task arithmetic under uniform weights).
        scope: where ``agreement`` measures the cosine: ``row`` (each neuron row of a ≥2-D tensor; 1-D tensors as a
            whole) or ``tensor``. ``research_log`` is always per tensor.
        lam: the scaling λ of the merged task vector.
    """

    ALIASES = LAMBDA_ALIAS

    variant: Literal["agreement", "research_log"] = "agreement"
    scope: Literal["row", "tensor"] = "row"
    lam: float = 1.0


def _per_tensor(p: DirectionalConsensusParams, shape: tuple[int, ...]) -> bool:
    return p.variant == "research_log" or p.scope == "tensor" or len(shape) < 2


def _sums(block: Block) -> dict[str, torch.Tensor]:
    """The K × K Gram matrix τ_i·τ_j of the block (float64): every per-tensor quantity follows from it."""
    return {"gram": gram_matrix(block.sources)}


def gated(weights: torch.Tensor, dots: torch.Tensor, norms: torch.Tensor, snorm: torch.Tensor) -> torch.Tensor:
    """c_i = w_i·max(0, cos_i) / Σ_j w_j·max(0, cos_j) with cos_i = dots_i / (norms_i·snorm), along dim 0;
    the plain weights where that sum is zero. Extra dims are independent groups (rows)."""
    w = weights.reshape((-1,) + (1,) * (dots.dim() - 1)).to(dots.dtype)
    denom = norms * snorm
    cos = torch.where(denom > 0, dots / denom.clamp_min(1e-300), torch.zeros_like(dots))
    g = w * cos.clamp_min(0)
    total = g.sum(0, keepdim=True)
    return torch.where(total > 0, g / total.clamp_min(1e-300), w.expand_as(g))


def _reads(p: DirectionalConsensusParams) -> Reads:
    return Reads(sums=Sums(_sums, applies=lambda name, shape: _per_tensor(p, shape)))


@register("directional_consensus", DirectionalConsensusParams, reads=_reads)
def directional_consensus(block: Block, p: DirectionalConsensusParams) -> torch.Tensor:
    """Task vectors judged against their unweighted consensus direction d = Σ τ_i / ‖Σ τ_i‖; θ = θ_b + λ Σ c_i τ_i.

    variant agreement (default): c_i ∝ w_i·max(0, cos(τ_i, d)) per neuron row (scope row) or per tensor,
    renormalised: sources that disagree with the consensus are dropped or damped.

    variant research_log: the research log's definition, θ = θ_b + λ Σ w_i (τ_i·d) d per tensor; equal to weighted
    task arithmetic when the weights are uniform (it only removes the part of Σ w_i τ_i orthogonal to d).
    """
    w = block.weights.double()
    k = len(block.sources)
    if _per_tensor(p, block.shape):
        gram = block.sums["gram"].double()
        dots = gram.sum(1)  # τ_i·s with s = Σ_j τ_j
        ss = gram.sum()  # ‖s‖²
        if p.variant == "research_log":
            # Σ_i w_i (τ_i·d) d = (Σ_i w_i τ_i·s / ‖s‖²) s
            coef = float((w * dots).sum() / ss) if ss > 0 else 0.0
            total = torch.zeros_like(block.base)
            for t in block.sources:
                total.add_(t)
            return block.base.add_(total, alpha=p.lam * coef)
        c = gated(w, dots, gram.diagonal().clamp_min(0).sqrt(), ss.clamp_min(0).sqrt())
        out = block.base
        for t, ci in zip(block.sources, c.tolist()):
            out.add_(t, alpha=p.lam * ci)
        return out
    # per neuron row: every row of the block is complete, so no pre-pass is needed
    rows = block.base.reshape(block.base.shape[0], -1)
    taus = block.stacked.reshape(k, *rows.shape) if block.stacked is not None else torch.stack([t.reshape(rows.shape) for t in block.sources])
    s = taus.sum(0)  # [R, n]
    dots = torch.einsum("krn,rn->kr", taus, s).double()
    norms = torch.linalg.vector_norm(taus, dim=-1).double()
    snorm = torch.linalg.vector_norm(s, dim=-1).double()
    c = gated(w, dots, norms, snorm).to(taus.dtype)  # [K, R]
    merged = torch.einsum("kr,krn->rn", c, taus)
    return block.base.add_(merged.reshape(block.base.shape), alpha=p.lam)
