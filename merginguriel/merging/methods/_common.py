"""Pieces several methods share: TIES-style sign election with disjoint merging, magnitude trimming, parameter checks."""

from __future__ import annotations

import math

import torch

from merginguriel.errors import InputError
from merginguriel.merging.registry import Alias

# mergekit's name for the scaling of the merged task vector (its `lambda`), accepted wherever a method has `lam`
LAMBDA_ALIAS = {"lambda": Alias("lam", help="mergekit's name")}


def check_fraction(method: str, name: str, value: float, allow_zero: bool = False) -> None:
    """A fraction in (0, 1] (or [0, 1] with ``allow_zero``)."""
    ok = (0.0 <= value <= 1.0) if allow_zero else (0.0 < value <= 1.0)
    if not ok or math.isnan(value):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise InputError(f"{method}: {name}={value} is outside {interval}; pass e.g. --merge.params.{name} 0.2")


def keep_count(fraction: float, n: int, rounding: str = "ceil") -> int:
    """How many of ``n`` entries a keep-fraction keeps (at least one): ``ceil`` keeps at least the fraction (the TIES
    paper's top-k%), ``floor`` is mergekit's ``int(density * n)`` (the same float arithmetic, no tolerance)."""
    count = int(fraction * n) if rounding == "floor" else math.ceil(fraction * n - 1e-9)
    return max(1, min(n, count))


def weighted_sum(block, weights: list[float]) -> torch.Tensor:
    """Σ_i weights[i] · sources[i]: one matrix-vector product over ``block.stacked`` when the engine provides it
    (a single pass over the K blocks, measured 2.5x faster here than K in-place additions), else K additions."""
    if block.stacked is not None:
        k = block.stacked.shape[0]
        w = torch.tensor(weights, dtype=block.stacked.dtype, device=block.stacked.device)
        return torch.mv(block.stacked.reshape(k, -1).t(), w).reshape(block.stacked.shape[1:])
    out = block.sources[0] * weights[0]
    for t, w in zip(block.sources[1:], weights[1:]):
        out.add_(t, alpha=w)
    return out


def gram_matrix(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The K × K Gram matrix t_i·t_j of K same-shaped tensors in float64, a column chunk at a time (memory does not
    grow with K)."""
    flats = [t.reshape(-1) for t in tensors]
    k, n = len(flats), flats[0].numel()
    gram = torch.zeros(k, k, dtype=torch.float64, device=flats[0].device)
    step = max(1, (1 << 21) // k)
    for a in range(0, n, step):
        chunk = torch.stack([f[a : a + step] for f in flats]).double()
        gram += chunk @ chunk.T
    return gram


def elect_merge(taus: list[torch.Tensor], weights: torch.Tensor, mode: str = "dis-mean") -> torch.Tensor:
    """TIES elect + disjoint merge, weighted: the sign of Σ w_i τ_i wins per entry; entries that agree with it (and are
    non-zero) are merged by Σ w_i τ_i / Σ w_i over them (``dis-mean``) or Σ K·w_i τ_i (``dis-sum``; with equal weights
    the plain disjoint sum). ``weights`` sum to 1. Consumes ``taus`` (modified in place).

    In place and without temporaries: with s = sign(Σ w_i τ_i), max(τ_i·s, 0) is |τ_i| where τ_i agrees and 0 elsewhere,
    and its sign is the agreement indicator.
    """
    ws = weights.tolist()
    k = len(taus)
    sign = torch.zeros_like(taus[0])
    for t, w in zip(taus, ws):
        sign.add_(t, alpha=w)
    sign.sign_()
    num = torch.zeros_like(sign)
    den = torch.zeros_like(sign) if mode == "dis-mean" else None
    for t, w in zip(taus, ws):
        t.mul_(sign).clamp_(min=0)
        if mode == "dis-mean":
            num.add_(t, alpha=w)
            den.add_(t.sign_(), alpha=w)
        else:
            num.add_(t, alpha=k * w)
    if mode == "dis-mean":
        num.div_(den.clamp_(min=1e-30))  # where no source agrees num is 0 already
    return num.mul_(sign)


def trim(tau: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``tau`` with the entries whose magnitude is below ``threshold`` zeroed (keep |τ| >= threshold), in one pass."""
    below = torch.nextafter(threshold.to(torch.float32).cpu(), torch.tensor(0.0))  # |x| > below  <=>  |x| >= threshold
    return torch.nn.functional.hardshrink(tau, float(below))


def trim_in_place(tau: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Zero the entries of ``tau`` whose magnitude is below ``threshold`` (keep |τ| >= threshold)."""
    return tau.copy_(trim(tau, threshold))
