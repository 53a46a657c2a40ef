"""SLERP: spherical interpolation of two models' flattened tensors; for K > 2, pairwise with cumulative weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from merginguriel.errors import InputError
from merginguriel.merging.methods._common import gram_matrix
from merginguriel.merging.registry import Block, Params, Reads, SourceSet, Sums, register


@dataclass(frozen=True)
class SlerpParams(Params):
    """SLERP.

    Args:
        t: interpolation point for exactly two sources (0: the first, 1: the second); None: from the weights,
            t = w_2 / (w_1 + w_2). For K > 2 the sources are folded in order, source j at t_j = w_j / (w_1 + ... + w_j).
        dot_threshold: above this |cos| the two tensors are treated as collinear and interpolated linearly.
    """

    t: Optional[float] = None
    dot_threshold: float = 0.9995

    def __post_init__(self) -> None:
        if self.t is not None and not 0.0 <= self.t <= 1.0:
            raise InputError(f"slerp: t={self.t} must be in [0, 1]")

    def check_sources(self, sources: SourceSet) -> None:
        if self.t is not None and sources.count != 2:
            raise InputError(
                f"slerp: t is for exactly two sources, got {sources.count}; drop t to interpolate K sources by their weights"
            )

    def effective_weights(self, weights: list[float]) -> list[float]:
        return [1.0 - self.t, self.t] if self.t is not None else weights


def _sums(block: Block) -> dict[str, torch.Tensor]:
    """Gram matrix θ_i·θ_j of the block."""
    return {"gram": gram_matrix(block.sources)}


def slerp_coefficients(gram: torch.Tensor, weights: list[float], dot_threshold: float = 0.9995) -> list[float]:
    """Coefficients c with result = Σ c_i θ_i of folding sources in order by pairwise slerp at cumulative weights.

    ``gram[i, j] = θ_i·θ_j`` over the whole tensor. Each step m ← slerp(m, θ_j, t_j) is mergekit's formula on the
    unnormalised vectors: m' = sin((1−t)Ω)/sin Ω · m + sin(tΩ)/sin Ω · θ_j, Ω the angle between m and θ_j (linear when
    nearly collinear or when either is zero).
    """
    g = gram.double()
    k = len(weights)
    c = torch.zeros(k, dtype=torch.float64)
    c[0] = 1.0
    cum = weights[0]
    for j in range(1, k):
        cum += weights[j]
        t = weights[j] / cum if cum > 0 else 0.0
        e = torch.zeros(k, dtype=torch.float64)
        e[j] = 1.0
        nm = math.sqrt(max(float(c @ g @ c), 0.0))
        nj = math.sqrt(max(float(g[j, j]), 0.0))
        cos = float(c @ g[:, j]) / (nm * nj) if nm > 0 and nj > 0 else 1.0
        if abs(cos) > dot_threshold:
            c = (1 - t) * c + t * e
        else:
            omega = math.acos(max(-1.0, min(1.0, cos)))
            so = math.sin(omega)
            c = (math.sin((1 - t) * omega) / so) * c + (math.sin(t * omega) / so) * e
    return c.tolist()


@register("slerp", SlerpParams, reads=lambda p: Reads(inputs="models", base=False, sums=Sums(_sums)))
def slerp(block: Block, p: SlerpParams) -> torch.Tensor:
    """Spherical interpolation per tensor: two sources at t, or K sources folded pairwise at cumulative weights.

    vs mergekit: t = 0 here is the FIRST source (t = 1 the second); in mergekit's slerp t = 0 is its base_model. To
    reproduce a mergekit slerp, list its base_model first. The base is not read (no task vectors).
    """
    coef = slerp_coefficients(block.sums["gram"], block.weights.tolist(), p.dot_threshold)
    out = block.sources[0].mul_(coef[0])
    for s, c in zip(block.sources[1:], coef[1:]):
        out.add_(s, alpha=c)
    return out
