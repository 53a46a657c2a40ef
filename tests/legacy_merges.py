"""A frozen transcription of the task-vector merges as merginguriel computed them before they became presets of one
composed family (commit a3953c8: merging/methods/{task_arithmetic,ties,breadcrumbs,linear,_common}.py and the engine's
reading of task vectors, DARE and exact thresholds), on whole tensors in memory.

The composed family must give these outputs bit for bit (tests/test_merge_presets.py), so the operations, their order
and their dtypes are copied as they were; do not "improve" anything here.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

# -- merging/dare_mask.py (the seeded drop mask) ------------------------------------------------------------------------
CHUNK = 1 << 20


def _chunk_seed(seed: int, key: str, name: str, chunk: int) -> int:
    digest = hashlib.blake2b(f"{seed}|{key}|{name}|{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keep_mask(seed: int, key: str, name: str, shape: tuple[int, ...], rows: tuple[int, int], p: float) -> torch.Tensor:
    row_numel = math.prod(shape[1:]) if shape else 1
    start, stop = rows[0] * row_numel, rows[1] * row_numel
    parts = []
    for chunk in range(start // CHUNK, (stop - 1) // CHUNK + 1 if stop > start else start // CHUNK):
        lo, hi = chunk * CHUNK, (chunk + 1) * CHUNK
        gen = torch.Generator().manual_seed(_chunk_seed(seed, key, name, chunk))
        draws = torch.rand(min(hi, row_numel * (shape[0] if shape else 1)) - lo, generator=gen)
        parts.append(draws[max(start, lo) - lo : min(stop, hi) - lo])
    u = torch.cat(parts) if parts else torch.empty(0)
    block_shape = (rows[1] - rows[0], *shape[1:]) if shape else ()
    return (u >= p).reshape(block_shape)


def apply_dare(tau: torch.Tensor, mask: torch.Tensor, p: float, rescale: bool) -> torch.Tensor:
    tau.mul_(mask.to(tau.device))
    if rescale and p > 0:
        tau.div_(1.0 - p)
    return tau


# -- merging/methods/_common.py -------------------------------------------------------------------------------------------
def keep_count(fraction: float, n: int, rounding: str = "ceil") -> int:
    count = int(fraction * n) if rounding == "floor" else math.ceil(fraction * n - 1e-9)
    return max(1, min(n, count))


def weighted_sum(stacked: torch.Tensor, weights: list[float]) -> torch.Tensor:
    k = stacked.shape[0]
    w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)
    return torch.mv(stacked.reshape(k, -1).t(), w).reshape(stacked.shape[1:])


def elect_merge(taus: list[torch.Tensor], weights: torch.Tensor, mode: str = "dis-mean") -> torch.Tensor:
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
        num.div_(den.clamp_(min=1e-30))
    return num.mul_(sign)


def trim(tau: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    below = torch.nextafter(threshold.to(torch.float32).cpu(), torch.tensor(0.0))
    return torch.nn.functional.hardshrink(tau, float(below))


# -- the methods --------------------------------------------------------------------------------------------------------
def task_sum(base: torch.Tensor, stacked: torch.Tensor, w: torch.Tensor, weighted: bool, lam: float) -> torch.Tensor:
    ws = w.tolist() if weighted else [1.0] * stacked.shape[0]
    return base.add_(weighted_sum(stacked, [lam * x for x in ws]))


def ties_rounding(scope: str, rounding: str) -> str:
    return rounding if rounding != "auto" else ("floor" if scope == "tensor" else "ceil")


def ties_block(base, sources, w, thresholds, mode, lam):
    if thresholds is not None:
        sources = [trim(t, thresholds[i, 0]) for i, t in enumerate(sources)]
    merged = elect_merge(sources, w, mode)
    return base.add_(merged, alpha=lam)


def breadcrumb_counts(density, gamma, rounding, numel):
    if rounding == "floor":
        if density >= 1.0:
            return None
        keep = int(density * numel)
        return min(int(gamma * numel), numel - keep), keep
    top = math.floor(gamma * numel + 1e-9)
    return top, min(keep_count(density, numel), numel - top)


def breadcrumb_ranks(density, gamma, rounding, numel):
    c = breadcrumb_counts(density, gamma, rounding, numel)
    if c is None:
        return []
    top, keep = c
    return ([top] if top > 0 else []) + ([top + keep] if keep > 0 else [])


DEFAULTS = {
    "task_arithmetic": {"lam": None, "weighted": True},
    "dare_task_arithmetic": {"lam": None, "weighted": True, "p": 0.9, "rescale": True},
    "dare_linear": {"weighting": "manual", "normalise": True, "p": 0.9, "rescale": True},
    "ties": {"density": 0.2, "scope": "global", "merge": "dis-mean", "lam": None, "rounding": "auto"},
    "dare_ties": {"density": 1.0, "scope": "global", "merge": "dis-mean", "lam": None, "rounding": "auto", "p": 0.9,
                  "rescale": True},
    "breadcrumbs": {"density": 0.9, "gamma": 0.01, "lam": 1.0, "weighted": True, "rounding": "ceil"},
}


def _params(method: str, given: dict) -> dict:
    p = {**DEFAULTS[method], **given}
    if "lam" in p and p["lam"] is None:
        if "merge" in p:
            p["lam"] = 1.0 if p["merge"] == "dis-mean" else 0.3
        else:
            p["lam"] = 1.0 if p["weighted"] else 0.3
    return p


def _kth_largest(values: torch.Tensor, ranks: list[int]) -> torch.Tensor:
    mags = values.detach().reshape(-1).to(torch.float32).abs()
    n = mags.numel()
    return torch.stack([torch.kthvalue(mags.cpu(), n - int(r) + 1).values for r in ranks])


def legacy_merge(base_dir: Path, source_dirs: list[Path], weights: list[float], method: str, given: dict,
                 source_keys: list[str], seed: int = 42) -> dict[str, torch.Tensor]:
    """``method`` (one of DEFAULTS) with parameters ``given`` over whole tensors, as the engine of a3953c8 ran it when no
    tensor was split into row blocks; ``source_keys`` are the sources' weights hashes (the DARE mask keys)."""
    p = _params(method, given)
    base_sd = load_file(str(Path(base_dir) / "model.safetensors"))
    sources_sd = [load_file(str(Path(d) / "model.safetensors")) for d in source_dirs]
    k = len(source_dirs)
    if method == "dare_linear" and p["weighting"] == "average":
        weights = [1.0 / k] * k
    w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
    raw = w.clone()
    w = w / w.sum()
    names = [n for n, t in base_sd.items() if t.is_floating_point()]
    dare = method.startswith("dare")
    stacked, base = {}, {}
    for name in names:
        b = base_sd[name].to(torch.float32).clone()
        shape = tuple(b.shape)
        st = torch.empty((k, *shape) if shape else (k,), dtype=torch.float32)
        for i in range(k):
            st[i].copy_(sources_sd[i][name])
            st[i].sub_(b)
            if dare:
                mask = keep_mask(seed, source_keys[i], name, shape, (0, shape[0] if shape else 1), p["p"])
                apply_dare(st[i], mask, p["p"], p["rescale"])
        stacked[name], base[name] = st, b
    thresholds: dict[str, torch.Tensor | None] = dict.fromkeys(names)
    if method in ("ties", "dare_ties") and p["density"] < 1.0:
        rule = ties_rounding(p["scope"], p["rounding"])
        if p["scope"] == "global":
            total = sum(stacked[n][0].numel() for n in names)
            rank = keep_count(p["density"], total, rule)
            thr = torch.stack([_kth_largest(torch.cat([stacked[n][i].reshape(-1) for n in names]), [rank]) for i in range(k)])
            thresholds = dict.fromkeys(names, thr)
        else:
            for n in names:
                rank = keep_count(p["density"], stacked[n][0].numel(), rule)
                thresholds[n] = torch.stack([_kth_largest(stacked[n][i], [rank]) for i in range(k)])
    if method == "breadcrumbs":
        for n in names:
            ranks = breadcrumb_ranks(p["density"], p["gamma"], p["rounding"], stacked[n][0].numel())
            if ranks:
                thresholds[n] = torch.stack([_kth_largest(stacked[n][i], ranks) for i in range(k)])
    out = dict(base_sd)
    for n in names:
        b, st = base[n], stacked[n]
        sources = list(st.unbind(0))
        if method in ("task_arithmetic", "dare_task_arithmetic"):
            merged = task_sum(b, st, w, p["weighted"], p["lam"])
        elif method == "dare_linear":
            ws = (w if p["normalise"] else raw).tolist()
            merged = b.mul_(float(sum(ws))).add_(weighted_sum(st, ws))
        elif method in ("ties", "dare_ties"):
            merged = ties_block(b, sources, w, thresholds[n], p["merge"], p["lam"])
        else:  # breadcrumbs
            c = breadcrumb_counts(p["density"], p["gamma"], p["rounding"], st[0].numel())
            if c is not None:
                top, keep_n = c
                for i, t in enumerate(sources):
                    if keep_n == 0:
                        t.zero_()
                        continue
                    mag = t.abs()
                    keep = mag >= thresholds[n][i, -1]
                    if top > 0:
                        keep &= mag < thresholds[n][i, 0]
                    t.mul_(keep)
            merged = task_sum(b, st, w, p["weighted"], p["lam"])
        out[n] = merged.to(base_sd[n].dtype)
    return out
