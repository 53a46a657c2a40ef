"""The task-vector family, composed from parts as mergekit composes its generalized task arithmetic:

    θ = θ_b + λ · combine(consensus(sparsify(τ_1, …, τ_K)))

- sparsify: which entries of each task vector take part: ``none``; ``magnitude`` (the ``density`` fraction of largest
  |τ_i|, per tensor or over the whole model, with its rounding); ``dare`` (a random drop, rescaled); ``breadcrumbs``
  (per tensor the ``gamma`` fraction of largest |τ_i| dropped as outliers, then the ``density`` fraction below kept);
  ``dare+magnitude`` and ``dare+breadcrumbs`` drop at random first;
- consensus: ``none``, or ``ties``: per entry the sign of Σ_i w_i τ_i is elected and only the entries that agree with
  it take part (the disjoint merge);
- combine: ``mean`` (Σ_i w_i τ_i over the weights normalised to sum 1; under ``ties`` over the agreeing entries only,
  Σ w_i τ_i / Σ w_i), ``sum`` (the plain sum: Σ_i K·w_i τ_i, which with equal weights is Σ_i τ_i; ``weighted: false``
  is exactly Σ_i τ_i), or ``linear`` (Σ_i c_i θ̃_i, the weighted sum of the sparsified models: (Σ c) θ_b + λ Σ c_i τ̃_i
  with c the weights, normalised unless ``normalise: false``);
- λ scales the merged task vector.

Today's method names are presets of these parts (each equal, bit for bit, to the method it was): task_arithmetic,
dare_task_arithmetic, dare_linear, ties, dare_ties, breadcrumbs; and combinations mergekit has that come for free:
breadcrumbs_ties. Any other combination is ``method: task_vectors`` with the parts as parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import torch

from merginguriel.errors import InputError
from merginguriel.merging.methods._common import LAMBDA_ALIAS, check_fraction, elect_merge, keep_count, trim, weighted_sum
from merginguriel.merging.methods.dare import DARE_P, check_drop, drop
from merginguriel.merging.registry import Block, Params, Reads, Thresholds, register, set_default

Sparsify = Literal["none", "magnitude", "dare", "breadcrumbs", "dare+magnitude", "dare+breadcrumbs"]
MAGNITUDE_DENSITY = 0.2  # the TIES paper's k = 20%
BREADCRUMBS_DENSITY, BREADCRUMBS_GAMMA = 0.9, 0.01  # the Model Breadcrumbs paper's defaults


@dataclass(frozen=True)
class TaskVectorParams(Params):
    """The task-vector family (see the summary): a sparsification, a sign consensus, a combination and λ.

    Args:
        sparsify: ``none``, ``magnitude``, ``dare``, ``breadcrumbs``, ``dare+magnitude`` or ``dare+breadcrumbs``.
        consensus: ``none`` or ``ties`` (elect the sign of Σ w_i τ_i per entry; only agreeing entries take part).
        combine: ``mean`` (Σ w_i τ_i; under ties the disjoint mean), ``sum`` (Σ K·w_i τ_i; under ties the disjoint
            sum) or ``linear`` (Σ c_i θ̃_i = (Σ c) θ_b + λ Σ c_i τ̃_i; not with a consensus).
        weighted: use the source weights (false: every source weighs the same; with ``sum`` exactly Σ τ_i).
        normalise: ``linear`` only: the weights normalised to sum 1 (false: as given).
        lam: the scaling λ of the merged task vector.
        density: the fraction of each task vector's entries kept by ``magnitude`` (default 0.2) or ``breadcrumbs``
            (default 0.9).
        gamma: ``breadcrumbs``: the fraction of largest-magnitude entries dropped first (default 0.01).
        scope: ``magnitude``: where the top fraction is taken, ``global`` (over the whole model, the TIES paper;
            default) or ``tensor`` (per tensor, mergekit).
        rounding: how many of n entries density keeps: ``floor`` = int(density·n) (mergekit), ``ceil`` = ⌈density·n⌉;
            ``auto`` (default): magnitude floor per tensor and ceil globally, breadcrumbs ceil.
        p: ``dare``: the drop probability per entry (default 0.9).
        rescale: ``dare``: rescale the surviving entries by 1 / (1 - p) (default true).
    """

    ALIASES = LAMBDA_ALIAS

    sparsify: Sparsify = "none"
    consensus: Literal["none", "ties"] = "none"
    combine: Literal["mean", "sum", "linear"] = "mean"
    weighted: bool = True
    normalise: bool = True
    lam: float = 1.0
    density: Optional[float] = None
    gamma: Optional[float] = None
    scope: Optional[Literal["global", "tensor"]] = None
    rounding: Optional[Literal["auto", "floor", "ceil"]] = None
    p: Optional[float] = None
    rescale: Optional[bool] = None

    def __post_init__(self) -> None:
        trim_part, dare = self.trim, self.sparsify.startswith("dare")
        unused = [name for name, used in (
            ("density", trim_part != "none"), ("gamma", trim_part == "breadcrumbs"), ("scope", trim_part == "magnitude"),
            ("rounding", trim_part != "none"), ("p", dare), ("rescale", dare),
        ) if not used and getattr(self, name) is not None]
        if unused:
            raise InputError(
                f"task_vectors: {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used by sparsify "
                f"{self.sparsify}; drop {'it' if len(unused) == 1 else 'them'} or choose the sparsification that reads "
                f"{'it' if len(unused) == 1 else 'them'} (`merginguriel merge --list`)"
            )
        if self.consensus == "ties" and self.combine == "linear":
            raise InputError("task_vectors: combine linear sums whole models and has no sign consensus; use combine mean "
                             "or sum with consensus ties (the disjoint mean or sum), or consensus none")
        if trim_part == "magnitude":
            set_default(self, "density", MAGNITUDE_DENSITY if self.density is None else self.density)
            set_default(self, "scope", self.scope or "global")
        elif trim_part == "breadcrumbs":
            set_default(self, "density", BREADCRUMBS_DENSITY if self.density is None else self.density)
            set_default(self, "gamma", BREADCRUMBS_GAMMA if self.gamma is None else self.gamma)
        if trim_part != "none":
            set_default(self, "rounding", self.rounding or "auto")
            check_fraction("task_vectors", "density", self.density)
        if trim_part == "breadcrumbs":
            check_fraction("task_vectors", "gamma", self.gamma, allow_zero=True)
            if self.rule == "ceil" and self.density + self.gamma > 1.0 + 1e-12:
                raise InputError(
                    f"breadcrumbs: density {self.density} + gamma {self.gamma} exceed 1 (more entries kept than exist "
                    "after dropping the outliers); lower one of them (or rounding: floor, mergekit's rule, drops fewer "
                    "outliers then)"
                )
        if dare:
            set_default(self, "p", DARE_P if self.p is None else self.p)
            set_default(self, "rescale", True if self.rescale is None else self.rescale)
            check_drop(self.p)

    @property
    def trim(self) -> str:
        """The deterministic sparsification (``none``, ``magnitude`` or ``breadcrumbs``), after DARE's drop if any."""
        return self.sparsify.removeprefix("dare").removeprefix("+") or "none"

    @property
    def rule(self) -> str:
        """The rounding rule in force: ``auto`` is floor per tensor and ceil globally (magnitude), ceil (breadcrumbs)."""
        if self.rounding != "auto":
            return self.rounding
        return "floor" if self.trim == "magnitude" and self.scope == "tensor" else "ceil"


# -- breadcrumbs' two thresholds ----------------------------------------------------------------------------------------
def breadcrumb_counts(q: TaskVectorParams, numel: int) -> Optional[tuple[int, int]]:
    """(outliers dropped, entries kept) of a tensor of ``numel`` entries; None when every entry is kept."""
    if q.rule == "floor":
        if q.density >= 1.0:
            return None
        keep = int(q.density * numel)
        return min(int(q.gamma * numel), numel - keep), keep
    top = math.floor(q.gamma * numel + 1e-9)
    return top, min(keep_count(q.density, numel), numel - top)


def _breadcrumb_ranks(q: TaskVectorParams, numel: int) -> list[int]:
    c = breadcrumb_counts(q, numel)
    if c is None:
        return []
    top, keep = c
    # rank top: the smallest outlier (dropped with everything at or above it); rank top+keep: the smallest kept entry
    return ([top] if top > 0 else []) + ([top + keep] if keep > 0 else [])


def _keep_breadcrumbs(block: Block, q: TaskVectorParams) -> None:
    """Zero, in place, every entry outside the band between the outliers and the kept fraction."""
    c = breadcrumb_counts(q, math.prod(block.shape))
    if c is None:
        return
    top, keep_n = c
    for i, t in enumerate(block.sources):
        if keep_n == 0:
            t.zero_()
            continue
        mag = t.abs()
        keep = mag >= block.thresholds[i, -1]
        if top > 0:
            keep &= mag < block.thresholds[i, 0]
        t.mul_(keep)


def family_reads(q: TaskVectorParams) -> Reads:
    thresholds = None
    if q.trim == "magnitude" and q.density < 1.0:
        thresholds = Thresholds(q.scope, lambda numel: [keep_count(q.density, numel, q.rule)])
    elif q.trim == "breadcrumbs":
        thresholds = Thresholds("tensor", lambda numel: _breadcrumb_ranks(q, numel))
    return Reads(
        transform=drop(q.p, q.rescale) if q.sparsify.startswith("dare") else None,
        thresholds=thresholds,
        carries_nonfinite=q.consensus == "none" and q.trim == "none",
    )


@register("task_vectors", TaskVectorParams, reads=family_reads)
def task_vectors(block: Block, q: TaskVectorParams) -> torch.Tensor:
    """θ = θ_b + λ · combine(consensus(sparsify(τ_i))): the task-vector family, any combination of its parts.

    Presets (the names of the methods they were, bit for bit): task_arithmetic = none + none + mean (weighted: false:
    sum); dare_task_arithmetic = dare + none + mean; dare_linear = dare + none + linear; ties = magnitude + ties + mean
    (merge dis-sum: sum); dare_ties = dare+magnitude (density 1: no trim) + ties + mean; breadcrumbs = breadcrumbs +
    none + mean; breadcrumbs_ties = breadcrumbs + ties + mean. Combinations beyond the presets, e.g. DARE with the
    TIES election and no trim, or magnitude trimming without election: give the parts here.
    """
    k = len(block.sources)
    if q.trim == "magnitude" and block.thresholds is not None:
        block.sources = [trim(t, block.thresholds[i, 0]) for i, t in enumerate(block.sources)]
        block.stacked = None  # the trimmed tensors are new ones
    elif q.trim == "breadcrumbs":
        _keep_breadcrumbs(block, q)  # in place: block.stacked follows
    if q.consensus == "ties":
        w = block.weights if q.weighted else torch.full_like(block.weights, 1.0 / k)
        merged = elect_merge(block.sources, w, "dis-mean" if q.combine == "mean" else "dis-sum")
        return block.base.add_(merged, alpha=q.lam)
    if q.combine == "linear":
        ws = (block.weights if q.normalise else block.raw_weights).tolist() if q.weighted else [1.0 / k] * k
        return block.base.mul_(float(sum(ws))).add_(weighted_sum(block, [q.lam * x for x in ws]))
    if q.weighted:
        ws = block.weights.tolist()
        ws = [k * x for x in ws] if q.combine == "sum" else ws
    else:
        ws = [1.0] * k if q.combine == "sum" else [1.0 / k] * k
    return block.base.add_(weighted_sum(block, [q.lam * x for x in ws]))


def preset(name: str, params: type, parts: Callable[[Any], TaskVectorParams], doc: str) -> None:
    """Register ``name`` as a preset of the family: its own parameters (``params``), mapped by ``parts``."""
    register(name, params, reads=family_reads, to_kernel=parts, preset_of="task_vectors", doc=doc)(task_vectors)
