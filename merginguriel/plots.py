"""Figures: square heatmaps (similarity, NxN) and the per-target bar chart of a merge against its baselines.

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


def target_chart(merges: list[tuple[str, float, int]], baselines: list[tuple[str, float]], path: str | os.PathLike,
                 title: str, split: str) -> Path:
    """Merges (accuracy with its Wilson 95% interval over n rows) above a separator, baselines below in grey and
    hatched, so the two are never confused."""
    plt = _pyplot()
    items = [(label, v, n) for label, v, n in merges if v == v] + [(label, v, None) for label, v in baselines if v == v]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(items) + 1.6))
    try:
        for i, (label, v, n) in enumerate(items):
            if n is not None:
                lo, hi = wilson(v, n)
                ax.barh(i, v, color="tab:blue", xerr=[[v - lo], [hi - v]], capsize=3)
            else:
                ax.barh(i, v, color="lightgrey", hatch="//", edgecolor="grey")
            ax.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=8)
        if merges and len(items) > len(merges):
            ax.axhline(len([m for m in merges if m[1] == m[1]]) - 0.5, color="black", lw=0.8)
        ax.set_yticks(range(len(items)), [label for label, _, _ in items], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{split} accuracy (merges: blue, 95% interval; baselines: grey)")
        ax.set_title(title)
        return _save(fig, path)
    finally:
        plt.close(fig)
