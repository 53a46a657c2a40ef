"""Fisher merging: θ = Σ_i c_i F_i ⊙ θ_i / Σ_i c_i F_i with F_i the diagonal empirical Fisher of source i.

The Fisher tensors are per-source statistics (``Needs.statistics``): a merge job computes them once per source and
settings (merginguriel.statistics.cache) and the engine streams them beside the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from merginguriel.errors import InputError
from merginguriel.merging.registry import Block, Needs, Params, Reads, Statistic, register
from merginguriel.statistics.examples import StatisticsData, statistics_rows


@dataclass(frozen=True)
class FisherParams(StatisticsData, Params):
    """Fisher merging (methods.md).

    Args:
        examples: utterances per source the Fisher is estimated on (256-1000 in the literature).
        data: whose utterances: ``target`` (the target locale's), ``sources`` (each source's own locale) or ``both``
            (half each). Labels are never read.
        split: ``validation`` or ``train`` (the test split is never used).
        label: ``sample`` (y drawn from the model's prediction) or ``argmax`` (y = the predicted intent).
        eps: floor of every Fisher value (where all sources have Fisher 0 the merge is the weighted average).
    """

    label: Literal["sample", "argmax"] = "sample"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        StatisticsData.__post_init__(self)
        if self.eps <= 0:
            raise InputError(f"fisher: eps must be > 0 (got {self.eps}); pass e.g. --merge.params.eps 1e-6")


def fisher_statistics(model, rows, params: FisherParams, seed: int, device, tokenizer) -> dict[str, torch.Tensor]:
    from merginguriel.statistics.fisher import fisher_diagonal

    return fisher_diagonal(model, rows, label=params.label, seed=seed, device=device)


FISHER = Statistic("fisher", compute=fisher_statistics, settings=lambda p: {"label": p.label})


@register("fisher", FisherParams, reads=lambda p: Reads(inputs="models", statistics=("fisher",)),
          needs=Needs(statistics=(FISHER,), rows=statistics_rows))
def fisher(block: Block, p: FisherParams) -> torch.Tensor:
    """θ = Σ c_i max(F_i, eps) θ_i / Σ c_i max(F_i, eps), F_i each source's diagonal Fisher, c_i the source weights."""
    stats = block.stats["fisher"]
    weights = block.weights.tolist()
    if any(f is None for f in stats):  # a tensor without Fisher values (none in practice): the weighted average
        return sum(w * t for w, t in zip(weights, block.sources))
    num = torch.zeros_like(block.base)
    den = torch.zeros_like(block.base)
    for w, f, t in zip(weights, stats, block.sources):
        f = f.clamp_min(p.eps).mul_(w)
        num.addcmul_(f, t)
        den.add_(f)
    return num.div_(den)
