"""DARE (drop and rescale), the random sparsification of the task-vector family: each entry of τ_i is dropped with
probability p and the survivors are rescaled by 1 / (1 - p). The mask is seeded from (seed, the source's weights hash,
tensor name), see merging/dare_mask.py, so renaming or moving a source's folder does not change it; it is applied as
each task vector is read (``Reads.transform``), before any magnitude threshold sees the values.

mergekit names the keep rate ``density`` (= 1 − p; accepted as an alias where a method has no ``density`` of its own)
and rescales the survivors so that each tensor keeps its L1 norm; 1 / (1 − p) keeps it in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from merginguriel.errors import InputError
from merginguriel.merging.dare_mask import apply_dare, keep_mask
from merginguriel.merging.registry import Alias, Where

DARE_P = 0.9  # the DARE paper's drop rate


def check_drop(p: float) -> None:
    if not (0.0 <= p < 1.0) or math.isnan(p):
        raise InputError(
            f"DARE drop probability p={p} must be in [0, 1) (mergekit's keep rate density = 1 - p in (0, 1]); "
            "pass e.g. --merge.params.p 0.9"
        )


@dataclass(frozen=True)
class DareParams:
    """DARE's parameters, shared by the ``dare_*`` presets.

    Args:
        p: drop probability per entry of each task vector (0.9 in the DARE paper).
        rescale: rescale surviving entries by 1 / (1 - p).
    """

    ALIASES = {"density": Alias("p", lambda d: 1.0 - d, help="mergekit's keep rate: p = 1 - density")}

    p: float = DARE_P
    rescale: bool = True

    def __post_init__(self) -> None:
        check_drop(self.p)


def drop(p: float, rescale: bool) -> Callable[[torch.Tensor, Where], None]:
    """The transform that applies DARE to a block of a source's task vector, in place."""

    def transform(tau: torch.Tensor, at: Where) -> None:
        apply_dare(tau, keep_mask(at.seed, at.key, at.name, at.shape, at.rows, p), p, rescale)

    return transform
