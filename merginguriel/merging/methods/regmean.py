"""RegMean: for every linear layer W = (Σ_i c_i G̃_i)^-1 Σ_i c_i G̃_i W_i, G̃_i the Gram matrix of that layer's inputs
on model i with its off-diagonal entries scaled by α; every other tensor is the weighted average.

The Gram matrices are per-source statistics (``Needs.statistics``), computed once per source and settings by
merginguriel.statistics.cache and stored under the layer's weight name with shape ``[1, in, in]``.
In PyTorch's ``[out, in]`` layout the closed form reads W = (Σ c_i W_i G̃_i)(Σ c_i G̃_i)^-1, so any block of rows of W
needs only those rows of each W_i and the whole Gram matrices: the engine's row blocks merge exactly.
With equal weights c_i this is the paper's formula (a common factor cancels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from merginguriel.errors import InputError
from merginguriel.merging.registry import Block, Needs, Params, Reads, Statistic, register
from merginguriel.statistics.examples import StatisticsData, statistics_rows


@dataclass(frozen=True)
class RegMeanParams(StatisticsData, Params):
    """RegMean (methods.md).

    Args:
        examples: utterances per source the Gram matrices are gathered on.
        data: whose utterances: ``target``, ``sources`` (each source's own locale) or ``both`` (half each).
        split: ``validation`` or ``train`` (the test split is never used).
        alpha: scale of the Gram matrices' off-diagonal entries (1: plain RegMean, 0: a diagonal-weighted average).
        batch_size: utterances per forward pass while gathering.
    """

    alpha: float = 0.6
    batch_size: int = 16

    def __post_init__(self) -> None:
        StatisticsData.__post_init__(self)
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"regmean: alpha must be in [0, 1] (got {self.alpha}); the paper's default is 0.6")
        if self.batch_size < 1:
            raise InputError("regmean: batch_size must be at least 1; e.g. --merge.params.batch_size 16")


def regmean_statistics(model, rows, params: RegMeanParams, seed: int, device, tokenizer) -> dict[str, torch.Tensor]:
    from merginguriel.statistics.regmean import gram_matrices

    return gram_matrices(model, rows, pad_id=tokenizer.pad_token_id, batch_size=params.batch_size, device=device)


GRAMS = Statistic("regmean", compute=regmean_statistics)


def scaled_gram(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """α·G + (1 − α)·diag(G): the off-diagonal entries scaled by α."""
    g = gram.reshape(gram.shape[-2], gram.shape[-1])
    return g * alpha + torch.diag_embed(torch.diagonal(g)) * (1.0 - alpha)


@register("regmean", RegMeanParams, reads=lambda p: Reads(inputs="models", statistics=("regmean",)),
          needs=Needs(statistics=(GRAMS,), rows=statistics_rows))
def regmean(block: Block, p: RegMeanParams) -> torch.Tensor:
    """Linear layers: the regression-mean closed form over their input Gram matrices; other tensors: weighted average."""
    grams = block.stats["regmean"]
    weights = block.weights.tolist()
    is_linear = block.base.dim() == 2 and all(
        g is not None and g.dim() == 3 and g.shape[-1] == block.base.shape[1] for g in grams
    )
    if not is_linear:
        return sum(w * t for w, t in zip(weights, block.sources))
    total = torch.zeros(block.base.shape[1], block.base.shape[1], dtype=torch.float64, device=block.base.device)
    rhs = torch.zeros(block.base.shape, dtype=torch.float64, device=block.base.device)
    for w, g, t in zip(weights, grams, block.sources):
        gs = scaled_gram(g, p.alpha).double() * w
        total += gs
        rhs += t.double() @ gs
    # W Σ = rhs  <=>  Σ Wᵀ = rhsᵀ (Σ symmetric); lstsq-free solve, float64 for the conditioning of Gram sums.
    try:
        return torch.linalg.solve(total, rhs.T).T.float()
    except RuntimeError:  # exactly singular (an input feature that is always 0): the minimum-norm solution
        return (torch.linalg.pinv(total) @ rhs.T).T.float()
