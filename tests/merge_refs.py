"""Plain in-memory reference merges for tests/test_merge_*.py: whole state dicts, torch ops, written from the
definitions in shared/reference/methods.md independently of merginguriel.merging's streaming engine."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file


def load(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}


def norm_w(weights: list[float]) -> torch.Tensor:
    w = torch.tensor(weights, dtype=torch.float64)
    return (w / w.sum()).float()


def linear(base, models, weights):
    w = norm_w(weights)
    return {n: sum(w[i] * m[n] for i, m in enumerate(models)) for n in base}


def task_arithmetic(base, models, weights, lam, weighted=True, taus=None):
    w = norm_w(weights) if weighted else torch.ones(len(models))
    taus = taus or [{n: m[n] - base[n] for n in base} for m in models]
    return {n: base[n] + lam * sum(w[i] * t[n] for i, t in enumerate(taus)) for n in base}


def kth_largest(x: torch.Tensor, count: int) -> torch.Tensor:
    flat = x.reshape(-1).abs()
    return torch.kthvalue(flat, flat.numel() - count + 1).values


def elect_mean(stacked: torch.Tensor, w: torch.Tensor, mode="dis-mean") -> torch.Tensor:
    shape = (-1,) + (1,) * (stacked.dim() - 1)
    wv = w.reshape(shape)
    elected = torch.sign((wv * stacked).sum(0))
    agree = (torch.sign(stacked) == elected) & (stacked != 0)
    if mode == "dis-sum":
        return (len(w) * wv * stacked * agree).sum(0)
    num = (wv * stacked * agree).sum(0)
    den = (wv * agree).sum(0)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def ties(base, models, weights, density=0.2, scope="global", mode="dis-mean", lam=1.0, taus=None, names=None):
    names = names or list(base)
    w = norm_w(weights)
    taus = taus or [{n: m[n] - base[n] for n in base} for m in models]
    trimmed = []
    for t in taus:
        if density >= 1:
            trimmed.append(dict(t))
            continue
        if scope == "global":
            flat = torch.cat([t[n].reshape(-1) for n in names])
            thr = kth_largest(flat, max(1, math.ceil(density * flat.numel() - 1e-9)))
            trimmed.append({n: t[n] * (t[n].abs() >= thr) for n in names})
        else:
            out = {}
            for n in names:
                thr = kth_largest(t[n], max(1, math.ceil(density * t[n].numel() - 1e-9)))
                out[n] = t[n] * (t[n].abs() >= thr)
            trimmed.append(out)
    result = dict(base)
    for n in names:
        result[n] = base[n] + lam * elect_mean(torch.stack([t[n] for t in trimmed]), w, mode)
    return result


def breadcrumbs(base, models, weights, density=0.9, gamma=0.01, lam=1.0):
    w = norm_w(weights)
    out = {}
    for n in base:
        total = 0
        for i, m in enumerate(models):
            tau = (m[n] - base[n]).reshape(-1)
            order = torch.argsort(tau.abs(), descending=True)
            top = math.floor(gamma * tau.numel() + 1e-9)
            keep = min(max(1, math.ceil(density * tau.numel() - 1e-9)), tau.numel() - top)
            mask = torch.zeros_like(tau, dtype=torch.bool)
            mask[order[top : top + keep]] = True
            total = total + w[i] * (tau * mask).reshape(base[n].shape)
        out[n] = base[n] + lam * total
    return out


def directional_consensus(base, models, weights, alpha=1.0, lam=1.0):
    w = norm_w(weights).double()
    out = {}
    for n in base:
        taus = [(m[n] - base[n]).double().reshape(-1) for m in models]
        s = sum(w[i] * t for i, t in enumerate(taus))
        d = s / s.norm() if s.norm() > 0 else torch.zeros_like(s)
        moved = [alpha * (t @ d) * d + (1 - alpha) * t for t in taus]
        out[n] = (base[n].double() + lam * sum(w[i] * t for i, t in enumerate(moved)).reshape(base[n].shape)).float()
    return out


def neuromerging(base, models, weights, mask_rate=0.15, lambda_1=0.0, lambda_2=None, cap=2.0):
    w = norm_w(weights)
    out = {}
    for n in base:
        taus = [m[n] - base[n] for m in models]
        neuronal = base[n].dim() == 2 and "embeddings" not in n
        masked = []
        for t in taus:
            thr = kth_largest(t, max(1, math.ceil((1 - mask_rate) * t.numel() - 1e-9)))
            masked.append(t * (t.abs() >= thr))
        if not neuronal:
            out[n] = base[n] + elect_mean(torch.stack(masked), w)
            continue
        b = base[n]

        def par(t):
            rows = []
            for k in range(b.shape[0]):
                nb = (b[k] @ b[k]).item()
                rows.append(((b[k] @ t[k]) / nb) * b[k] if nb > 0 else torch.zeros_like(b[k]))
            return torch.stack(rows)

        if lambda_2 is None:
            shares = [par(t).abs().sum().double() / t.abs().sum().double() for t in taus]
            sigma = max(float(s) for s in shares)
            lam2 = cap if sigma >= 1 else min(1 / (1 - sigma), cap)
        else:
            lam2 = lambda_2
        pars = [par(t) for t in masked]
        orths = [t - p for t, p in zip(masked, pars)]
        out[n] = base[n] + lam2 * elect_mean(torch.stack(orths), w) + lambda_1 * elect_mean(torch.stack(pars), w)
    return out


def slerp_pair(a: torch.Tensor, b: torch.Tensor, t: float, dot_threshold: float = 0.9995) -> torch.Tensor:
    """mergekit's slerp on two flattened tensors (unnormalised vectors, angle from normalised copies)."""
    a64, b64 = a.double().reshape(-1), b.double().reshape(-1)
    an, bn = a64 / a64.norm(), b64 / b64.norm()
    dot = float(an @ bn)
    if abs(dot) > dot_threshold:
        res = (1 - t) * a64 + t * b64
    else:
        omega = math.acos(dot)
        res = math.sin((1 - t) * omega) / math.sin(omega) * a64 + math.sin(t * omega) / math.sin(omega) * b64
    return res.reshape(a.shape)


def slerp(models, weights, t=None):
    out = {}
    for n in models[0]:
        if t is not None:
            out[n] = slerp_pair(models[0][n], models[1][n], t).float()
            continue
        acc, cum = models[0][n].double(), weights[0]
        for j in range(1, len(models)):
            cum += weights[j]
            acc = slerp_pair(acc, models[j][n].double(), weights[j] / cum)
        out[n] = acc.float()
    return out
