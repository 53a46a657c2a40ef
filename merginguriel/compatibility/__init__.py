"""Source compatibility: streamed task-vector cosine, linear CKA of [CLS] states, and the similarity x compatibility
weighting. Heavy parts (torch) load on first use of the name that needs them."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "cka_matrix": "merginguriel.compatibility.cka",
    "linear_cka": "merginguriel.compatibility.cka",
    "task_vector_cosine": "merginguriel.compatibility.cosine",
    "task_vector_gram": "merginguriel.compatibility.cosine",
    "WEIGHTING": "merginguriel.compatibility.weighting",
    "apply_compatibility": "merginguriel.compatibility.weighting",
    "compatibility_weights": "merginguriel.compatibility.weighting",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'merginguriel.compatibility' has no attribute {name!r}")
