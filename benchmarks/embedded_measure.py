"""Measuring the embedded world the way the research measures XLM-R: per-locale fine-tunes, the NxN transfer matrix,
task-vector sizes and rank correlations. Used by ``benchmarks/embedded_transfer.py`` and its CI-sized slow test (tests/test_embedded_backbone.py); it lives
with the benchmarks because it measures the world from above (data, models, merges), which the world itself must not
import.

Fine-tuning here is a plain PyTorch loop that mirrors ``IntentClassifier`` (same parameter groups, learning rates,
AdamW, linear warm-up and decay, best-validation-epoch selection with early stopping) and reads its recipe from the
same YAML as ``merginguriel fit`` (``configs/fit-embedded.yaml``), so 52 fine-tunes fit in minutes on one core.
Fine-tuned models are exported as Hugging Face folders that record the shared base, so the merge engine takes them.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from merginguriel.data.release import read_release
from merginguriel.errors import InputError

ENCODER_PREFIX = "roberta."
EVAL_BATCH = 512


@dataclass(frozen=True)
class Recipe:
    """The fine-tuning recipe (the fields ``merginguriel fit`` reads from a config such as ``configs/fit-embedded.yaml``)."""

    learning_rate: float = 5e-5
    head_learning_rate: Optional[float] = None
    label_smoothing: float = 0.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    adam_epsilon: float = 1e-8
    batch_size: int = 32
    max_epochs: int = 15
    patience: int = 3
    max_length: int = 128
    seed: int = 42

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        """A config file, or a shipped config by name (``fit-embedded``)."""
        import yaml

        from merginguriel.configs import config_path

        cfg = yaml.safe_load(config_path(path).read_text(encoding="utf-8")) or {}
        model, data, trainer = cfg.get("model", {}), cfg.get("data", {}), cfg.get("trainer", {})
        fields = {
            "learning_rate": model.get("learning_rate"), "head_learning_rate": model.get("head_learning_rate"),
            "label_smoothing": model.get("label_smoothing"),
            "weight_decay": model.get("weight_decay"), "warmup_ratio": model.get("warmup_ratio"),
            "adam_epsilon": model.get("adam_epsilon"), "batch_size": data.get("batch_size"),
            "max_epochs": trainer.get("max_epochs"), "patience": cfg.get("early_stopping", {}).get("patience"),
            "max_length": data.get("max_length"), "seed": cfg.get("seed_everything"),
        }
        return cls(**{k: v for k, v in fields.items() if v is not None})


@dataclass
class Encoded:
    """One locale split, tokenised once: padded ids, attention mask, labels."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = self.mask[index]
        width = int(mask.sum(1).max())  # trim the padding no row of this batch needs
        return self.ids[index][:, :width], mask[:, :width], self.labels[index]


@dataclass
class Corpus:
    """The embedded release folder read through the official release reader, tokenised on demand and cached."""

    release: Path
    tokenizer: Any
    max_length: int
    _cache: dict = field(default_factory=dict)

    def split(self, locale: str, split: str) -> Encoded:
        key = (locale, split)
        if key not in self._cache:
            rows = read_release(self.release, locale)[split]
            enc = self.tokenizer([r["utt"] for r in rows], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            labels = torch.tensor([int(r["label"]) for r in rows])
            self._cache[key] = Encoded(enc["input_ids"], enc["attention_mask"], labels)
        return self._cache[key]


def machine() -> str:
    """The machine a benchmark ran on, for its results file: host, CPUs, torch and its threads, load average now."""
    load = os.getloadavg()
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), load average at the end "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


def load_classifier(folder: str | Path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder)


@torch.no_grad()
def correctness(model, data: Encoded) -> np.ndarray:
    """Per-example correctness (bool array) of ``model`` on ``data``."""
    model.eval()
    out = []
    for start in range(0, len(data), EVAL_BATCH):
        ids, mask, labels = data.batch(slice(start, start + EVAL_BATCH))
        out.append((model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == labels).numpy())
    return np.concatenate(out)


def parameter_groups(model, recipe: Recipe) -> list[dict]:
    """IntentClassifier's groups: encoder vs new head learning rates, no decay on biases and LayerNorm weights."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    head_lr = recipe.head_learning_rate or recipe.learning_rate
    groups = []
    for in_encoder in (True, False):
        for decay in (True, False):
            params = [p for n, p in model.named_parameters()
                      if n.startswith(ENCODER_PREFIX) == in_encoder and n.endswith(no_decay) != decay]
            if params:
                groups.append({"params": params, "weight_decay": recipe.weight_decay if decay else 0.0,
                               "lr": recipe.learning_rate if in_encoder else head_lr})
    return groups


def random_encoder_copy(base: Path, seed: int):
    """The shared base with its encoder re-initialised (HF's default initialisation, seeded), its head kept: the same
    architecture, tokenizer and head without what the backbone brings."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = load_classifier(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(base))
    fresh.classifier.load_state_dict(model.classifier.state_dict())
    return fresh


def finetune(start, train: Encoded, validation: Encoded, recipe: Recipe, seed_key: int = 0):
    """Fine-tune ``start`` (a model folder, normally the shared base, or a model) on one locale; returns (model at its
    best validation epoch, stats)."""
    from transformers import get_linear_schedule_with_warmup

    model = start if isinstance(start, torch.nn.Module) else load_classifier(start)
    generator = torch.Generator().manual_seed(recipe.seed * 1_000_003 + seed_key)
    torch.manual_seed(recipe.seed * 1_000_003 + seed_key)  # dropout masks
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe), eps=recipe.adam_epsilon, fused=True)
    per_epoch = math.ceil(len(train) / recipe.batch_size)
    total = per_epoch * recipe.max_epochs
    schedule = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total), total)
    best, best_state, since, history = -1.0, None, 0, []
    started = time.perf_counter()
    for _ in range(recipe.max_epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), recipe.batch_size):
            ids, mask, labels = train.batch(order[start : start + recipe.batch_size])
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        accuracy = float(correctness(model, validation).mean())
        history.append(round(accuracy, 4))
        if accuracy > best:
            best, since = accuracy, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= recipe.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"best_val_accuracy": best, "val_history": history, "epochs": len(history),
                   "fit_seconds": round(time.perf_counter() - started, 2)}


def ensure_finetuned(folder: Path, base: Path, corpus: Corpus, locale: str, recipe: Recipe, seed_key: int = 0) -> Path:
    """The fine-tune of ``locale`` in ``folder``, trained and exported (with its base recorded) if missing."""
    from transformers import AutoTokenizer

    from merginguriel.io import read_manifest
    from merginguriel.models.export import export_hf

    if (folder / "manifest.json").is_file():
        return folder
    model, stats = finetune(base, corpus.split(locale, "train"), corpus.split(locale, "validation"), recipe, seed_key)
    base_manifest = read_manifest(base)
    export_hf(model, AutoTokenizer.from_pretrained(base), folder, kind="finetuned", overwrite=True, locale=locale,
              locales=[locale], base={"path": str(base), "hash": base_manifest["hash"]}, metrics=stats,
              recipe=recipe.__dict__)
    return folder


def task_vector_ratios(base: Path, finetuned: Path) -> dict[str, float]:
    """||theta_ft - theta_base|| / ||theta_base|| for every encoder tensor (the new head is left out)."""
    from safetensors.torch import load_file

    b, f = load_file(str(base / "model.safetensors")), load_file(str(finetuned / "model.safetensors"))
    out = {}
    for name, tensor in b.items():
        if name.startswith(ENCODER_PREFIX) and tensor.is_floating_point():
            norm = float(tensor.norm())
            if norm == 0.0:
                raise InputError(f"{base}: encoder tensor {name} is all zeros; its relative change is undefined")
            out[name] = float((f[name] - tensor).norm()) / norm
    return out


def ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    r = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equally long sequences."""
    rx, ry = ranks(np.asarray(x)), ranks(np.asarray(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denom) if denom else float("nan")
