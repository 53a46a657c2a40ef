"""DARE (drop and rescale) as a preprocessing step of task vectors; the ``dare_*`` methods live beside the methods they
wrap (dare_linear in linear.py, dare_task_arithmetic in task_arithmetic.py, dare_ties in ties.py).

The engine applies it when a method is registered with ``dare=True``: each entry of τ_i is dropped with probability p
and survivors are rescaled by 1 / (1 - p); the mask is seeded from (seed, the source's weights hash, tensor name),
see merging/dare_mask.py, so renaming or moving a source's folder does not change it.

mergekit names the keep rate ``density`` (= 1 − p; accepted as an alias where a method has no ``density`` of its own)
and rescales the survivors so that each tensor keeps its L1 norm; 1 / (1 − p) keeps it in expectation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from merginguriel.errors import InputError
from merginguriel.merging.registry import Alias


@dataclass
class DareParams:
    """DARE preprocessing.

    Args:
        p: drop probability per entry of each task vector (0.9 in the DARE paper).
        rescale: rescale surviving entries by 1 / (1 - p).
    """

    ALIASES = {"density": Alias("p", lambda d: 1.0 - d, help="mergekit's keep rate: p = 1 - density")}

    p: float = 0.9
    rescale: bool = True


def check_dare(params, k: int) -> None:
    if not (0.0 <= params.p < 1.0) or math.isnan(params.p):
        raise InputError(
            f"DARE drop probability p={params.p} must be in [0, 1) (mergekit's keep rate density = 1 - p in (0, 1]); "
            "pass e.g. --merge.params.p 0.9"
        )
