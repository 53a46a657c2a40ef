"""Saving and loading models as plain Hugging Face folders (config.json with labels, model.safetensors, tokenizer files)
plus manifest.json and the model card (README.md), written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from merginguriel.errors import InputError
from merginguriel.io import atomic_dir, checkpoint_hash, weights_stat, write_manifest
from merginguriel.locales import INTENTS, NUM_INTENTS


def check_intent_labels(config, where: str | os.PathLike) -> None:
    """Refuse a checkpoint whose label order is not the hub's intent order."""
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    labels = [id2label.get(i) for i in range(len(id2label))]
    if labels != list(INTENTS):
        first = next((i for i, (a, b) in enumerate(zip(labels, INTENTS)) if a != b), min(len(labels), NUM_INTENTS))
        raise InputError(
            f"{where}: label order differs from MASSIVE's 60 intents (first difference at id {first}: "
            f"{labels[first] if first < len(labels) else 'missing'!r} vs {INTENTS[first] if first < NUM_INTENTS else 'none'!r}); "
            "re-export it with merginguriel's label order (merginguriel.locales.INTENTS)"
        )


def export_hf(
    model: torch.nn.Module,
    tokenizer: Any,
    folder: str | os.PathLike,
    kind: str,
    overwrite: bool = False,
    **manifest: Any,
) -> Path:
    """Write ``model`` (+ tokenizer) to ``folder`` atomically with a manifest that records ``kind``, the weights' hash and
    ``manifest``, and the model card made from it."""
    from merginguriel.models.card import write_card

    folder = Path(folder)
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_manifest(tmp, kind, hash=checkpoint_hash(tmp), weights_stat=weights_stat(tmp), **manifest)
        write_card(tmp)
    return folder


def differing_tensors(folder: str | os.PathLike, model: torch.nn.Module) -> list[str]:
    """The tensors of ``model`` that ``folder``'s safetensors lack or hold with other values, and saved tensors the
    model does not have (empty: the folder holds exactly the model's weights). Read one tensor at a time."""
    from safetensors import safe_open

    from merginguriel.io.hashing import weight_files

    state = model.state_dict()
    seen, differ = set(), []
    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():
                seen.add(name)
                if name not in state or not torch.equal(fh.get_tensor(name), state[name].detach().cpu()):
                    differ.append(name)
    return sorted(differ + [name for name in state if name not in seen])
