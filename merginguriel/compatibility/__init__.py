"""Source compatibility: streamed task-vector cosine, linear CKA of [CLS] states, and the similarity x compatibility weighting."""

from merginguriel.compatibility.cka import cka_matrix, linear_cka
from merginguriel.compatibility.cosine import task_vector_cosine, task_vector_gram
from merginguriel.compatibility.weighting import (
    WEIGHTING,
    apply_compatibility,
    compatibility_weights,
)

__all__ = [
    "WEIGHTING",
    "apply_compatibility",
    "cka_matrix",
    "compatibility_weights",
    "linear_cka",
    "task_vector_cosine",
    "task_vector_gram",
]
