"""MASSIVE data: sources (embedded generator, official release, hub), the tokenisation cache, loaders, the DataModule.

Heavy parts (torch, Lightning, transformers) load on first use of the name that needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from merginguriel.data.config import DataConfig

_LAZY = {
    "MassiveDataModule": "merginguriel.data.datamodule",
    "load_locale": "merginguriel.data.sources",
    "source_identity": "merginguriel.data.sources",
    "read_release": "merginguriel.data.release",
    "read_hub": "merginguriel.data.release",
    "TokenizedSplit": "merginguriel.data.tokenized",
    "tokenized_split": "merginguriel.data.tokenized",
    "tokenized_locale": "merginguriel.data.tokenized",
    "eval_dataloader": "merginguriel.data.loaders",
    "train_dataloader": "merginguriel.data.loaders",
    "split_dataloader": "merginguriel.data.loaders",
    "to_dataset_order": "merginguriel.data.loaders",
    "pad_batch": "merginguriel.data.loaders",
}

__all__ = ["DataConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'merginguriel.data' has no attribute {name!r}")
