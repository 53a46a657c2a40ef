"""NeuroMerging as its authors' code computes it (github.com/ZzzitaoFang/NeuroMerging,
``model_merging_methods/merging_methods.py``: ``neuro_merging``, the Lite mode, and ``neuro_merging_double``, the Full
mode, recombined with λ as ``inference.py`` / ``inference_double.py`` do), re-expressed over plain state dicts.

None of merginguriel's conventions is built in: no source weights (every source counts once), no guard for a zero base
row, the SVD itself (no Gram-matrix shortcut), the reference's mask over the name-sorted concatenation of each task
vector. The kernels run in float64 so that the comparison measures merginguriel's arithmetic, not this file's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _elect(x: torch.Tensor) -> torch.Tensor:
    """Sign election over dim 0 (tasks) with the disjoint mean: the sign of the plain sum wins, a zero sign takes the
    majority of the elected signs over every other entry; the mean divides by the number of agreeing non-zero entries."""
    sign = torch.sign(x.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    kept = x * torch.where(sign.unsqueeze(0) > 0, x > 0, x < 0)
    return kept.sum(dim=0) / torch.clamp((kept != 0).sum(dim=0).to(x.dtype), min=1)


def _neurons(base: torch.Tensor, taus: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(parallel, orthogonal) merged parts of a tensor whose rows are neurons."""
    pt = base.unsqueeze(0)  # (1, m, n)
    ft = torch.stack(taus)  # (k, m, n)
    scale = (ft * pt).sum(dim=2) / (pt * pt).sum(dim=2)  # (k, m): no guard, a zero base row gives NaN as in the reference
    perp = (ft - scale.unsqueeze(2) * pt).permute(1, 0, 2)  # (m, k, n)
    parallel = _elect(scale).unsqueeze(1) * (pt / torch.norm(pt, dim=2, keepdim=True)).squeeze(0)
    _, s, vh = torch.linalg.svd(perp, full_matrices=False)
    energy = torch.cumsum(s**2, dim=1) / torch.sum(s**2, dim=1, keepdim=True)
    rank = torch.minimum((energy < 1).sum(dim=1) + 1, torch.tensor(vh.shape[-2]))
    v = vh.permute(0, 2, 1)  # (m, n, r)
    coords = torch.matmul(perp, v)  # (m, k, r)
    rows = []
    for i in range(coords.shape[0]):
        merged = _elect(coords[i])
        rows.append((merged[: rank[i]] * v[i, :, : rank[i]]).sum(dim=1))
    return parallel, torch.stack(rows)


def _masked(base: dict, models: list[dict], mask_rate: float) -> list[dict]:
    names = sorted(base)
    flat = torch.stack([torch.cat([(m[n] - base[n]).reshape(-1) for n in names]) for m in models])
    kth = flat.abs().kthvalue(int(flat.shape[1] * mask_rate), dim=1, keepdim=True).values
    flat = flat * (flat.abs() >= kth)
    out = []
    for row in flat:
        taus, at = {}, 0
        for n in names:
            taus[n] = row[at : at + base[n].numel()].reshape(base[n].shape)
            at += base[n].numel()
        out.append(taus)
    return out


def neuromerging(base: dict, models: list[dict], mode: str, lam: float = 1.0, lam1: float = 0.0, mask_rate: float = 0.8,
                 neuronal: Callable[[str, torch.Tensor], bool] = lambda name, t: t.dim() == 2) -> dict:
    """θ of the reference's Lite mode (θ_b + λ·merged) or Full mode (θ_b + λ1·part1 + λ·part2). Task vectors are taken
    in the models' dtype (as the reference's TaskVector does), the kernels in float64. ``neuronal`` says which tensors
    the reference would list as neuronal weights (2-D here: its q/k/v/o/gate/up/down projections, embed_tokens and
    lm_head are all 2-D); the rest are its point-behaviour tensors."""
    masked = _masked(base, models, mask_rate)
    out = {}
    for n, b in base.items():
        b64, taus = b.double(), [t[n].double() for t in masked]
        if neuronal(n, b):
            parallel, orthogonal = _neurons(b64, taus)
            if mode == "lite":
                merged = lam * orthogonal  # the reference's Lite zeroes the parallel part
            else:
                merged = lam1 * parallel + lam * orthogonal
        else:
            entries = _elect(torch.stack([t.reshape(-1) for t in taus])).reshape(b.shape)
            merged = lam * entries if mode == "lite" else lam1 * (entries / 2) + lam * (entries / 2)
        out[n] = (merged + b64).to(b.dtype)
    return out
