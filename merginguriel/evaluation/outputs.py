"""Per-example outputs of a checkpoint on a locale's split: logits and labels in dataset order, kept so that paired
comparisons (bootstrap intervals, McNemar tests) and ensembles can be computed on exactly the same rows.

A source model is judged beside every merge that uses it, so its outputs are cached on disk, keyed by the hash of
its weights (as they are now, ``io.checkpoint_ref``) and by the data configuration; a changed model or data source
never reuses a stale entry.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from merginguriel.data.config import EVAL_BATCH_SIZE, DataConfig


@dataclass
class Outputs:
    """Logits ``[n, C]`` (float32) and labels ``[n]`` of one model on one locale's split, in dataset order."""

    logits: torch.Tensor
    labels: torch.Tensor

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    @property
    def correct(self) -> torch.Tensor:
        return self.predictions == self.labels

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    def metrics(self) -> dict:
        """Accuracy, macro-F1 and n, with the evaluation module's definitions."""
        return scores(self.predictions, self.labels)


def scores(predictions: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy and macro-F1 of predicted labels, with the same torchmetrics definitions as the evaluation module."""
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    from merginguriel.locales import NUM_INTENTS

    predictions, labels = predictions.long(), labels.long()
    return {
        "accuracy": float(multiclass_accuracy(predictions, labels, num_classes=NUM_INTENTS, average="micro")),
        "macro_f1": float(multiclass_f1_score(predictions, labels, num_classes=NUM_INTENTS, average="macro")),
        "n": int(labels.numel()),
    }


def _cache_file(data: DataConfig, model_hash: str, locale: str, split: str) -> Path:
    from merginguriel.checkpoints import cache_dir

    key = hashlib.sha256(data.key(split).encode()).hexdigest()[:12]
    return cache_dir(data.root, "outputs") / model_hash[:24] / f"{locale}-{split}-{key}.pt"


def checkpoint_outputs(
    checkpoint: str | os.PathLike,
    locale: str,
    split: str,
    data: DataConfig,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    cache: bool = True,
) -> Outputs:
    """The outputs of ``checkpoint`` on ``locale``'s ``split`` (from the cache when ``cache`` and present)."""
    from merginguriel.io import checkpoint_ref

    path = _cache_file(data, checkpoint_ref(checkpoint)["hash"], locale, split) if cache else None
    if path is not None and path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return Outputs(saved["logits"], saved["labels"])
        except Exception:  # a torn or foreign file: recompute and replace it
            pass
    from merginguriel.evaluation.evaluate import load_checkpoint, predict_logits

    model, tokenizer = load_checkpoint(checkpoint)
    logits, labels = predict_logits(model, tokenizer, locale, split, data, batch_size, device)  # refuses an empty split
    out = Outputs(logits.float(), labels.long())
    if path is not None:
        from merginguriel.io import atomic_file

        with atomic_file(path) as tmp:
            torch.save({"logits": out.logits, "labels": out.labels}, tmp)
    return out
