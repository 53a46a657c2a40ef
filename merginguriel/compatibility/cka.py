"""Linear CKA between source models' representations: the final-layer first-token ([CLS], ``<s>``) hidden states of
every model on the same inputs, one model loaded at a time.

Linear CKA (Kornblith et al. 2019): with column-centred X (n x d1) and Y (n x d2),
``CKA = ||Yᵀ X||_F² / (||Xᵀ X||_F ||Yᵀ Y||_F)``; 1 for representations equal up to rotation and isotropic scaling.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import torch

from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representation matrices with the same rows (examples)."""
    if x.shape[0] != y.shape[0]:
        raise InputError(f"CKA needs the same examples in both representations; got {x.shape[0]} and {y.shape[0]} rows")
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).norm() * (y.T @ y).norm()
    if den == 0:
        raise InputError("a representation is constant over the inputs, so CKA is undefined; use more (or varied) inputs")
    return float(num / den)


def shared_batches(tokenizer: Any, locales: list[str], split: str, data: DataConfig, max_examples: int, batch_size: int):
    """The shared inputs: the first ``max_examples`` rows of the locales' ``split`` (round-robin over locales), batched."""
    from merginguriel.data import tokenized_split
    from merginguriel.data.loaders import pad_batch, pad_id_of

    per_locale = [tokenized_split(data, tokenizer, loc, split) for loc in locales]
    rows = []
    i = 0
    while len(rows) < max_examples and any(i < len(ts) for ts in per_locale):
        for ts in per_locale:
            if i < len(ts) and len(rows) < max_examples:
                rows.append(ts[i])
        i += 1
    if not rows:
        raise InputError(f"no {split} rows in {locales} to compute CKA on; pick locales or a split that has data")
    pad_id = pad_id_of(tokenizer)
    return [pad_batch([r["input_ids"] for r in rows[j : j + batch_size]], pad_id) for j in range(0, len(rows), batch_size)]


@torch.no_grad()
def first_token_states(model: torch.nn.Module, batches: list[dict], device: str = "cpu") -> torch.Tensor:
    """Final-layer hidden state of the first token for every input row, [n, hidden]."""
    model.to(device).eval()
    out = []
    for batch in batches:
        res = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            output_hidden_states=True,
        )
        out.append(res.hidden_states[-1][:, 0].float().cpu())
    return torch.cat(out)


def cka_matrix(
    models: dict[str, str | os.PathLike],
    locales: list[str],
    split: str = "validation",
    data: DataConfig = DataConfig(),
    max_examples: int = 256,
    batch_size: int = 64,
    device: str = "auto",
) -> pd.DataFrame:
    """N x N linear CKA of ``{label: checkpoint}`` models on shared inputs drawn from ``locales``' ``split``."""
    from merginguriel.evaluation.evaluate import load_checkpoint

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    labels = list(models)
    states, batches = [], None
    for label in labels:
        model, tokenizer = load_checkpoint(models[label])
        if batches is None:  # every model of one base shares the tokenizer, so the inputs are tokenised once
            batches = shared_batches(tokenizer, locales, split, data, max_examples, batch_size)
        states.append(first_token_states(model, batches, device))
        del model
    n = len(labels)
    mat = torch.ones(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            mat[i, j] = mat[j, i] = linear_cka(states[i], states[j])
    return pd.DataFrame(mat.numpy(), index=labels, columns=labels)
