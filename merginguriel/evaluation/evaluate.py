"""Evaluating models on MASSIVE locales through the one evaluation module (IntentClassifier's test loop).

A checkpoint is loaded once and evaluated on every requested locale in one Trainer call (one dataloader per locale);
tokenised data comes from the on-disk cache of the data layer. bf16 autocast on GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from merginguriel.data.config import EVAL_BATCH_SIZE, DataConfig
from merginguriel.errors import InputError

# checkpoint path -> number of loads in this process (the NxN test checks each model is loaded exactly once).
MODEL_LOADS: Counter = Counter()


@contextlib.contextmanager
def quiet_lightning():
    """Lightning announces devices and warns about single-process dataloaders on every Trainer; evaluation is routine."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*in eval mode.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _trainer(device: str = "auto", progress: bool = False):
    import lightning as L

    if device == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") or device == "gpu":
        accelerator = "gpu"
    else:
        accelerator = device
    precision = "bf16-mixed" if accelerator == "gpu" else "32-true"
    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        inference_mode=True,
    )


def load_checkpoint(checkpoint: str | os.PathLike) -> tuple[Any, Any]:
    """Load a Hugging Face classifier folder (model in eval mode, tokenizer), checking its label order."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from merginguriel.models.export import check_intent_labels

    path = Path(checkpoint)
    if not (path / "config.json").is_file():
        raise InputError(f"{path} is not a Hugging Face model folder (no config.json); pass a fine-tuned, merged or base folder")
    from merginguriel.io import model_files_checked

    with model_files_checked(path):
        model = AutoModelForSequenceClassification.from_pretrained(path)
        check_intent_labels(model.config, path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    MODEL_LOADS[str(path)] += 1
    return model.eval(), tokenizer


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    locales: list[str],
    split: str = "validation",
    data: DataConfig = DataConfig(),
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, dict]:
    """Accuracy, macro-F1 and example count of an in-memory model on each locale's ``split``."""
    from merginguriel.data import eval_dataloader
    from merginguriel.locales import check_locales

    locales = check_locales(locales)
    loaders = {loc: eval_dataloader(data, tokenizer, loc, split, batch_size=batch_size) for loc in locales}
    return evaluate_loaders(model, tokenizer, loaders, device, progress)


def evaluate_loaders(model: torch.nn.Module, tokenizer: Any, loaders: dict[str, Any], device: str = "auto",
                     progress: bool = False) -> dict[str, dict]:
    """Accuracy, macro-F1 and example count of an in-memory model on each named evaluation loader, in one Trainer call."""
    from merginguriel.models.classifier import IntentClassifier

    module = IntentClassifier.from_model(model, tokenizer)
    module.set_eval_names(list(loaders))
    with quiet_lightning():
        _trainer(device, progress).test(module, dataloaders=list(loaders.values()), verbose=False)
    return {name: module.eval_results[name] for name in loaders}


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    locales: list[str],
    split: str = "validation",
    data: DataConfig = DataConfig(),
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, dict]:
    """Load ``checkpoint`` once and evaluate it on every locale in ``locales``."""
    model, tokenizer = load_checkpoint(checkpoint)
    return evaluate_model(model, tokenizer, locales, split, data, batch_size, device, progress)


def predict_logits(
    model: torch.nn.Module,
    tokenizer: Any,
    locale: str,
    split: str = "validation",
    data: DataConfig = DataConfig(),
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[n, 60]`` (float32) and labels ``[n]`` of ``model`` on a locale's split, in dataset order."""
    from merginguriel.data import eval_dataloader, to_dataset_order
    from merginguriel.models.classifier import IntentClassifier

    loader = eval_dataloader(data, tokenizer, locale, split, batch_size=batch_size)
    module = IntentClassifier.from_model(model, tokenizer)
    module.keep_logits = True
    with quiet_lightning():
        _trainer(device).test(module, dataloaders=loader, verbose=False)
    logits = to_dataset_order(torch.cat(module.eval_logits[0]), loader.order)
    labels = loader.dataset.labels.clone()
    return logits, labels


def top_intents(
    checkpoint: str | os.PathLike,
    texts: list[str],
    k: int = 5,
    max_length: int = 128,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable intents of each utterance under ``checkpoint``, with their probabilities (softmax over
    the 60 intents), most probable first. Utterances are tokenised as evaluation tokenises a split (truncated to
    ``max_length``), so a split's utterance gets the probabilities its evaluation gives it."""
    from merginguriel.locales import INTENTS, NUM_INTENTS
    from merginguriel.merging.validate import resolve_device

    if not texts:
        raise InputError("no utterances to classify; give --text \"...\" (repeatable) or --text - with one utterance a line on stdin")
    if not 1 <= k <= NUM_INTENTS:
        raise InputError(f"top_k {k} is out of range; use 1 to {NUM_INTENTS} (the number of intents)")
    dev = resolve_device(device)
    model, tokenizer = load_checkpoint(checkpoint)
    model.to(dev)
    ranked: list[list[tuple[str, float]]] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt").to(dev)
            probs, ids = model(**batch).logits.float().softmax(-1).topk(k, dim=-1)
            ranked += [[(INTENTS[int(i)], float(p)) for i, p in zip(row_ids, row_probs)] for row_ids, row_probs in zip(ids, probs)]
    return ranked
