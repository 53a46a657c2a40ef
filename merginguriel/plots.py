"""Figures: square heatmaps (similarity, NxN) and the per-target chart of the merges against their baselines.

Matplotlib's Agg backend is used so figures render on headless machines; every figure is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    from merginguriel.io import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def heatmap(frame: pd.DataFrame, path: str | os.PathLike, title: str, xlabel: str = "", ylabel: str = "",
            vmin: float = 0.0, vmax: float = 1.0) -> Path:
    """A labelled heatmap of ``frame`` (values annotated when the matrix is small enough to read them)."""
    plt = _pyplot()
    n_rows, n_cols = frame.shape
    size = max(4.0, 0.28 * max(n_rows, n_cols) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    try:
        im = ax.imshow(frame.to_numpy(dtype=float), vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
        ax.set_xticks(range(n_cols), [str(c) for c in frame.columns], rotation=90, fontsize=7)
        ax.set_yticks(range(n_rows), [str(r) for r in frame.index], fontsize=7)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if n_rows * n_cols <= 400:
            for i in range(n_rows):
                for j in range(n_cols):
                    v = frame.iat[i, j]
                    if pd.notna(v):
                        ax.text(j, i, f"{float(v):.2f}", ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        return _save(fig, path)
    finally:
        plt.close(fig)


def wilson(acc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95% interval of an accuracy measured on n rows."""
    if n <= 0 or acc != acc:
        return acc, acc
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((acc * (1 - acc) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return centre - half, centre + half


FAR_BELOW = 0.15  # a baseline this far below every merge's interval is marked at the axis' left edge, not to scale


def target_figure(merges: list[tuple[str, float, int]], baselines: list[tuple[str, float]], title: str, split: str,
                  reference: float | None = None):
    """A dot plot of merges (accuracy with its Wilson 95% interval over n rows, blue circles) above the baselines
    (grey squares on a shaded band, grey labels), on an axis spanning the values (not 0-1), so that 0.70 and 0.78 look
    apart; a baseline far below every merge (the untrained base) is a triangle at the left edge, its value written
    beside it. Each value is written right of its interval, clear of it; a dotted line marks ``reference`` (the best
    source). Row ``i``'s label and value carry the SVG ids ``row-i-label`` and ``row-i-value``. Returns the figure."""
    plt = _pyplot()
    merges = [(label, v, n) for label, v, n in merges if v == v]
    rows = [(label, v, *wilson(v, n), True) for label, v, n in merges] + [(label, v, v, v, False) for label, v in baselines if v == v]
    # a baseline far below every merge (the untrained base) would squash the axis: it sits at the left edge instead
    floor = min(r[2] for r in rows if r[4]) - FAR_BELOW if merges else -1.0
    shown = [r for r in rows if r[1] >= floor]
    low, high = min(r[2] for r in shown), max(r[3] for r in shown)
    span = max(high - low, 0.02)
    left, right = max(0.0, low - 0.08 * span), high + 0.22 * span  # room on the right for the values
    pad = 0.015 * (right - left)
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.4))
    if len(rows) > len(merges):
        ax.axhspan(len(merges) - 0.5, len(rows) - 0.5, color="0.94", zorder=0)
    for i, (label, v, lo, hi, is_merge) in enumerate(rows):
        if is_merge:
            ax.errorbar([v], [i], xerr=[[v - lo], [hi - v]], fmt="o", color="tab:blue", ecolor="tab:blue", capsize=3,
                        markersize=6, zorder=3)
        elif v >= floor:
            ax.plot([v], [i], marker="s", color="dimgray", linestyle="none", markersize=6, zorder=3)
        else:
            hi = left + pad
            ax.plot([hi], [i], marker="<", color="dimgray", linestyle="none", markersize=7, zorder=3, clip_on=False)
        text = ax.text(hi + pad, i, f"{v:.3f}" + ("" if v >= floor else " (off the axis)"), va="center", ha="left",
                       fontsize=8, color="black" if is_merge else "dimgray")
        text.set_gid(f"row-{i}-value")
    if reference is not None and reference == reference:
        ax.axvline(reference, color="dimgray", linestyle=":", linewidth=1, zorder=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    for i, (tick, row) in enumerate(zip(ax.get_yticklabels(), rows)):
        tick.set_gid(f"row-{i}-label")
        tick.set_color("black" if row[4] else "dimgray")
    ax.invert_yaxis()
    ax.set_xlim(left, right)
    ax.set_xticks([t for t in ax.get_xticks() if left <= t <= min(right, 1.0)])
    ax.grid(axis="x", color="0.85", linewidth=0.6, zorder=0)
    ax.set_xlabel(f"{split} accuracy: merges (blue, 95% interval) above the baselines (grey band; dotted: best source)")
    ax.set_title(title, fontsize=10)
    return fig


def target_chart(merges: list[tuple[str, float, int]], baselines: list[tuple[str, float]], stem: str | os.PathLike,
                 title: str, split: str, reference: float | None = None) -> list[Path]:
    """:func:`target_figure` as ``<stem>.png`` and ``<stem>.svg`` (vector, its text kept as text); returns both."""
    plt = _pyplot()
    fig = target_figure(merges, baselines, title, split, reference)
    try:
        stem = Path(stem)
        with plt.rc_context({"svg.fonttype": "none"}):
            return [_save(fig, stem.with_name(stem.name + ".png")), _save(fig, stem.with_name(stem.name + ".svg"))]
    finally:
        plt.close(fig)
