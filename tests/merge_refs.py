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


def ties(base, models, weights, density=0.2, scope="global", mode="dis-mean", lam=1.0, taus=None, names=None, rounding="ceil"):
    names = names or list(base)
    w = norm_w(weights)
    taus = taus or [{n: m[n] - base[n] for n in base} for m in models]

    def count(numel):
        return max(1, int(density * numel) if rounding == "floor" else math.ceil(density * numel - 1e-9))

    trimmed = []
    for t in taus:
        if density >= 1:
            trimmed.append(dict(t))
            continue
        if scope == "global":
            flat = torch.cat([t[n].reshape(-1) for n in names])
            thr = kth_largest(flat, count(flat.numel()))
            trimmed.append({n: t[n] * (t[n].abs() >= thr) for n in names})
        else:
            out = {}
            for n in names:
                thr = kth_largest(t[n], count(t[n].numel()))
                out[n] = t[n] * (t[n].abs() >= thr)
            trimmed.append(out)
    result = dict(base)
    for n in names:
        result[n] = base[n] + lam * elect_mean(torch.stack([t[n] for t in trimmed]), w, mode)
    return result


def mergekit_ties(base, models, weights, density):
    """mergekit's ``ties`` (GeneralizedTaskArithmetic with magnitude sparsification, ``sum`` consensus, normalize
    true), re-implemented from its documented behaviour: per tensor keep the top ``int(density * numel)`` |δ| by sort
    order; weighted deltas w_i δ_i; the elected sign is + where Σ_i w_i δ_i >= 0, else −; the entries whose sign equals
    it are summed and divided by the summed weights of the models that contributed (1 where none did)."""
    w = torch.tensor(weights, dtype=torch.float64)
    out = {}
    for n in base:
        deltas = []
        for m in models:
            d = (m[n] - base[n]).double().reshape(-1)
            k = int(density * d.numel())
            assert k > 0, "mergekit refuses a tensor it would zero out"
            mask = torch.zeros_like(d)
            mask[torch.argsort(d.abs(), descending=True)[:k]] = 1
            deltas.append(d * mask)
        deltas = torch.stack(deltas)
        weighted = deltas * w[:, None]
        majority = (weighted.sum(0) >= 0).double() * 2 - 1
        mask = weighted.sign() == majority
        divisor = (w[:, None] * mask).sum(0)
        divisor[divisor == 0] = 1
        out[n] = (base[n].double() + ((weighted * mask).sum(0) / divisor).reshape(base[n].shape)).float()
    return out


def mergekit_linear(models, weights, normalize=True):
    """mergekit's ``linear``: Σ w_i θ_i, divided by Σ w_i with normalize (computed in float32)."""
    w = [float(x) for x in weights]
    out = {}
    for n in models[0]:
        acc = torch.zeros_like(models[0][n], dtype=torch.float32)
        for m, wi in zip(models, w):
            acc = acc + m[n].float() * wi
        out[n] = acc / sum(w) if normalize else acc
    return out


def mergekit_sparsify(delta: torch.Tensor, kind, density: float, gamma: float = 0.0, mask=None) -> torch.Tensor:
    """mergekit's sparsification of one task vector: ``magnitude`` keeps the top max(1, int(density·n)) |δ| by sort
    order; ``outliers`` (magnitude_outliers, breadcrumbs) sorts |δ| ascending, keeps int(density·n) entries after
    skipping max(0, n − int(density·n) − int(gamma·n)) smallest; ``random`` (DARE) keeps where the given 0/1 ``mask``
    is 1 (the random draw is the caller's); density >= 1 keeps everything."""
    if kind is None or density >= 1:
        return delta
    flat = delta.reshape(-1)
    n = flat.numel()
    keep = torch.zeros(n, dtype=flat.dtype)
    if kind == "magnitude":
        keep[torch.argsort(flat.abs(), descending=True)[: max(1, int(density * n))]] = 1
    elif kind == "outliers":
        target, top = int(density * n), int(gamma * n)
        bottom = max(0, n - target - top)
        keep[torch.argsort(flat.abs())[bottom : bottom + target]] = 1
    elif kind == "random":
        keep = mask.reshape(-1).to(flat.dtype)
    else:
        raise ValueError(kind)
    return (flat * keep).reshape(delta.shape)


def mergekit_gta(base, models, weights, *, sparsify=None, density=1.0, gamma=0.0, consensus=None, normalize=False,
                 lam=1.0, masks=None):
    """mergekit's generalized task arithmetic (task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs), rescale off:
    δ_i = sparsify(θ_i − θ_b); weighted w_i δ_i; with the ``sum`` consensus only entries whose sign equals the sign of
    Σ w_i δ_i (+ where it is >= 0) are summed and the divisor is the summed weight of those, otherwise every entry and
    Σ w_i; normalize divides by the divisor (1 where it is 0); θ = θ_b + λ · mixed."""
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    out = {}
    for n in base:
        b = base[n].double()
        deltas = torch.stack([
            mergekit_sparsify(m[n].double() - b, sparsify, density, gamma, None if masks is None else masks[i][n])
            for i, m in enumerate(models)])
        wv = w.reshape((-1,) + (1,) * b.dim())
        weighted = deltas * wv
        if consensus == "sum":
            majority = (weighted.sum(0) >= 0).double() * 2 - 1
            agree = (weighted.sign() == majority).double()
            mixed = (weighted * agree).sum(0)
            divisor = (wv * agree).sum(0)
            divisor[divisor == 0] = 1
        else:
            mixed = weighted.sum(0)
            divisor = torch.full_like(mixed, float(w.sum()) if abs(float(w.sum())) >= 1e-8 else 1.0)
        if normalize:
            mixed = mixed / divisor
        out[n] = (b + lam * mixed).float()
    return out


def breadcrumbs_sparsify(tau: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """One tensor's task vector with Model Breadcrumbs' mask (ceil rounding): the top floor(gamma·n) magnitudes
    dropped, the next ceil(density·n) kept."""
    flat = tau.reshape(-1)
    order = torch.argsort(flat.abs(), descending=True)
    top = math.floor(gamma * flat.numel() + 1e-9)
    keep = min(max(1, math.ceil(density * flat.numel() - 1e-9)), flat.numel() - top)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order[top : top + keep]] = True
    return (flat * mask).reshape(tau.shape)


def breadcrumbs(base, models, weights, density=0.9, gamma=0.01, lam=1.0):
    w = norm_w(weights)
    out = {}
    for n in base:
        total = sum(w[i] * breadcrumbs_sparsify(m[n] - base[n], density, gamma) for i, m in enumerate(models))
        out[n] = base[n] + lam * total
    return out


def breadcrumbs_ties(base, models, weights, density=0.9, gamma=0.01, lam=1.0):
    """Breadcrumbs' mask, then the TIES election and disjoint mean."""
    w = norm_w(weights)
    return {n: base[n] + lam * elect_mean(torch.stack([breadcrumbs_sparsify(m[n] - base[n], density, gamma) for m in models]), w)
            for n in base}


def dc_research_log(base, models, weights, lam=1.0):
    """The research log's directional consensus: d = normalize(Σ τ_i) per tensor (unweighted); θ = θ_b + λ Σ w_i (τ_i·d) d."""
    w = norm_w(weights).double()
    out = {}
    for n in base:
        taus = [(m[n] - base[n]).double().reshape(-1) for m in models]
        s = sum(taus)
        d = s / s.norm() if s.norm() > 0 else torch.zeros_like(s)
        proj = sum(w[i] * (t @ d) * d for i, t in enumerate(taus))
        out[n] = (base[n].double() + lam * proj.reshape(base[n].shape)).float()
    return out


def dc_agreement(base, models, weights, lam=1.0, scope="row"):
    """Agreement-gated consensus: per group (a row of a >=2-D tensor with scope row, else the whole tensor)
    c_i = w_i max(0, cos(τ_i, Σ_j τ_j)) renormalised (the plain weights if all are 0); θ = θ_b + λ Σ c_i τ_i."""
    w = norm_w(weights).double()
    out = {}
    for n in base:
        taus = [(m[n] - base[n]).double() for m in models]
        per_row = scope == "row" and base[n].dim() >= 2
        groups = [t.reshape(t.shape[0], -1) if per_row else t.reshape(1, -1) for t in taus]
        merged = torch.zeros_like(groups[0])
        for r in range(groups[0].shape[0]):
            vs = [g[r] for g in groups]
            s = sum(vs)
            gates = []
            for i, v in enumerate(vs):
                cos = float(v @ s / (v.norm() * s.norm())) if v.norm() > 0 and s.norm() > 0 else 0.0
                gates.append(float(w[i]) * max(0.0, cos))
            c = [g / sum(gates) for g in gates] if sum(gates) > 0 else [float(x) for x in w]
            merged[r] = sum(ci * v for ci, v in zip(c, vs))
        out[n] = (base[n].double() + lam * merged.reshape(base[n].shape)).float()
    return out


def neuromerging_research_log(base, models, weights, mask_rate=0.15, lambda_1=0.0, lambda_2=None, cap=2.0):
    """The research log's NeuroMerging: per-tensor mask keeping ceil((1 − mask_rate)·n); 2-D non-embedding tensors
    split into τ∥ (along the base row) and τ⊥, merged entry-wise (elect + mean), λ_2 from the L1 share masked."""
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
            total = sum(float(t.abs().double().sum()) for t in taus)
            removed = sum(float((t - mt).abs().double().sum()) for t, mt in zip(taus, masked))
            sigma = removed / total if total > 0 else 0.0
            lam2 = cap if sigma >= 1 else min(1 / (1 - sigma), cap)
        else:
            lam2 = lambda_2
        pars = [par(t) for t in masked]
        orths = [t - p for t, p in zip(masked, pars)]
        out[n] = base[n] + lam2 * elect_mean(torch.stack(orths), w) + lambda_1 * elect_mean(torch.stack(pars), w)
    return out


# -- NeuroMerging as published: a transcription of the authors' reference code (github.com/ZzzitaoFang/NeuroMerging,
# NeuroMerging.py / model_merging_methods/merging_methods.py), generalised to source weights w (None: the reference's
# unweighted arithmetic) and guarded where a base row is zero (the reference divides by zero there).
def nm_inner_ties(scales, w=None):
    """The reference's ``inner_ties_kernel`` over (tasks, batch)."""
    summed = scales.sum(0) if w is None else (w[:, None] * scales).sum(0)
    sign = torch.sign(summed)
    majority = torch.sign(sign.sum())
    sign[sign == 0] = majority
    keep = torch.where(sign[None] > 0, scales > 0, scales < 0)
    kept = scales * keep
    if w is None:
        return kept.sum(0) / torch.clamp((kept != 0).sum(0).to(kept.dtype), min=1)
    num = (w[:, None] * kept).sum(0)
    den = (w[:, None] * (kept != 0)).sum(0)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def nm_neuro_kernel(pt_w, ft_ws, w=None, cum_threshold=1.0):
    """The reference's ``neuro_kernel`` (Full mode: returns the parallel and the orthogonal parts) on task vectors."""
    pt = pt_w[None]
    ft = torch.stack(ft_ws)
    dot_num = (ft * pt).sum(2)
    dot_den = (pt * pt).sum(2)
    scale = torch.where(dot_den > 0, dot_num / torch.where(dot_den > 0, dot_den, torch.ones_like(dot_den)), torch.zeros_like(dot_num))
    perp = ft - scale[..., None] * pt
    merged_scale = nm_inner_ties(scale, w)
    norm = torch.norm(pt, dim=2, keepdim=True)
    unit = torch.where(norm > 0, pt / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(pt))
    proj = merged_scale[:, None] * unit[0]
    perp = perp.permute(1, 0, 2)
    _, S, VT = torch.linalg.svd(perp, full_matrices=False)
    s2 = S**2
    cum = torch.cumsum(s2, dim=1) / torch.sum(s2, dim=1, keepdim=True)
    rank = torch.minimum((cum < cum_threshold).sum(dim=1) + 1, torch.tensor(VT.shape[-2]))
    V = VT.permute(0, 2, 1)
    coords = torch.matmul(perp, V)
    merged = torch.stack([nm_inner_ties(coords[m], w) for m in range(coords.shape[0])])
    rep = torch.stack([(merged[m, : rank[m]] * V[m, :, : rank[m]]).sum(dim=1) for m in range(merged.shape[0])])
    return proj, rep


def nm_ties_kernel(ft_ws, w=None):
    """The reference's ``ties_kernel`` (entry-wise election, disjoint mean) for "point behaviour" (1-D) tensors."""
    flat = torch.stack([t.reshape(-1) for t in ft_ws])
    return nm_inner_ties(flat, w).reshape(ft_ws[0].shape)


def neuromerging_published(base, models, weights=None, mask_rate=0.8, lambda_1=0.0, lambda_2=1.0, mode="lite"):
    """The published NeuroMerging end to end: global magnitude mask per model (kthvalue with k = int(N·rate)),
    every >=2-D tensor through the neuro kernel (rows = neurons), every 1-D tensor through the ties kernel;
    lite: θ = θ_b + λ_2·orthogonal (1-D: θ_b + λ_2·merged); full: θ_b + λ_1·parallel + λ_2·orthogonal (1-D:
    θ_b + (λ_1 + λ_2)/2·merged). ``weights`` None: the reference's equal weights."""
    w = None if weights is None else norm_w(weights).double()
    names = sorted(base)
    taus = [{n: (m[n] - base[n]).double() for n in names} for m in models]
    masked = []
    for t in taus:
        flat = torch.cat([t[n].reshape(-1) for n in names])
        k = int(flat.numel() * mask_rate)
        if k > 0:
            kth = flat.abs().kthvalue(k).values
            t = {n: t[n] * (t[n].abs() >= kth) for n in names}
        masked.append(t)
    out = {}
    for n in names:
        b = base[n].double()
        if b.dim() >= 2:
            rows = b.reshape(b.shape[0], -1)
            proj, rep = nm_neuro_kernel(rows, [t[n].reshape(rows.shape) for t in masked], w)
            lam1 = lambda_1 if mode == "full" else 0.0
            out[n] = (b + (lam1 * proj + lambda_2 * rep).reshape(b.shape)).float()
        else:
            point = lambda_2 if mode == "lite" else (lambda_1 + lambda_2) / 2
            out[n] = (b + point * nm_ties_kernel([t[n] for t in masked], w)).float()
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
