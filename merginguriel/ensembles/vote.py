"""Ensemble baselines over the same K sources a merge uses: majority, weighted majority, soft vote, logit vote.

They answer "would simply running the K source models together beat merging them?" at K times the inference cost.

Inputs are stacked per-source logits ``[K, n, C]`` and source weights ``[K]`` (the selection's weights). Ties:
- majority / weighted majority: among the classes with the top (weighted) vote, the one predicted by the earliest
  source in the given order (the selection lists sources best first), so a tie goes to the most similar source;
- soft / logit vote: the lowest class index among exact maxima (``torch.argmax``).
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from merginguriel.data.config import EVAL_BATCH_SIZE
from merginguriel.errors import InputError

ENSEMBLES = ("majority", "weighted_majority", "soft_vote", "logit_vote")


def _check(logits: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.as_tensor(logits, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if logits.ndim != 3:
        raise InputError(f"ensemble logits must be [sources, examples, classes], got shape {tuple(logits.shape)}")
    if weights.shape != (logits.shape[0],):
        raise InputError(f"{logits.shape[0]} sources but {weights.numel()} weights; give one weight per source")
    if (weights < 0).any() or weights.sum() <= 0:
        raise InputError(f"ensemble weights must be non-negative and not all zero, got {weights.tolist()}")
    return logits, weights / weights.sum()


def _vote(predictions: torch.Tensor, vote_weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Weighted plurality of per-source predictions [K, n]; ties to the earliest source's prediction."""
    k, n = predictions.shape
    tally = torch.zeros(n, num_classes, dtype=torch.float64)
    tally.scatter_add_(1, predictions.T, vote_weights[:, None].expand(k, n).T.contiguous())
    best = tally.max(dim=1, keepdim=True).values
    tied = (tally >= best - 1e-12)  # [n, C]
    # The first source (in order) whose prediction is among the tied classes decides.
    in_tie = torch.gather(tied, 1, predictions.T)  # [n, K]
    first = in_tie.to(torch.int8).argmax(dim=1)  # first True along K
    return predictions.T[torch.arange(n), first]


def majority(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One vote per source for its argmax class."""
    logits, weights = _check(logits, weights)
    return _vote(logits.argmax(-1), torch.ones_like(weights), logits.shape[-1])


def weighted_majority(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each source votes for its argmax class with its weight."""
    logits, weights = _check(logits, weights)
    return _vote(logits.argmax(-1), weights, logits.shape[-1])


def soft_vote(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """argmax of Σ w_i softmax(logits_i)."""
    logits, weights = _check(logits, weights)
    return (weights[:, None, None] * logits.softmax(-1)).sum(0).argmax(-1)


def logit_vote(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """argmax of Σ w_i logits_i."""
    logits, weights = _check(logits, weights)
    return (weights[:, None, None] * logits).sum(0).argmax(-1)


COMBINERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "majority": majority,
    "weighted_majority": weighted_majority,
    "soft_vote": soft_vote,
    "logit_vote": logit_vote,
}


def source_logits(
    checkpoints: list[str | os.PathLike],
    locale: str,
    split: str,
    data,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked logits [K, n, 60] of each source checkpoint on ``locale``'s ``split`` (one model loaded at a time) and the labels."""
    from merginguriel.evaluation.evaluate import load_checkpoint, predict_logits

    stacked, labels = [], None
    for ckpt in checkpoints:
        model, tokenizer = load_checkpoint(ckpt)
        logits, lab = predict_logits(model, tokenizer, locale, split, data, batch_size, device)
        if labels is not None and not torch.equal(labels, lab):
            raise InputError(f"{ckpt} saw different {locale} {split} labels than the other sources; they must share one tokenizer and data")
        labels = lab
        stacked.append(logits)
        del model
    return torch.stack(stacked), labels


def evaluate_ensembles(
    checkpoints: list[str | os.PathLike],
    weights: list[float],
    locale: str,
    split: str = "test",
    data=None,
    methods: tuple[str, ...] = ENSEMBLES,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
) -> dict[str, dict]:
    """Every requested ensemble of the source checkpoints on one locale's split: method -> {accuracy, macro_f1, n}.
    The sources' logits are computed once and shared by all ensembles."""
    from merginguriel.data.config import DataConfig

    unknown = [m for m in methods if m not in COMBINERS]
    if unknown:
        raise InputError(f"unknown ensemble method(s) {unknown}; choose from {', '.join(ENSEMBLES)}")
    if len(checkpoints) != len(weights):
        raise InputError(f"{len(checkpoints)} sources but {len(weights)} weights; give one weight per source")
    logits, labels = source_logits(checkpoints, locale, split, data or DataConfig(), batch_size, device)
    w = torch.tensor(weights, dtype=torch.float64)
    from merginguriel.evaluation.outputs import scores

    return {m: scores(COMBINERS[m](logits, w), labels) for m in methods}
