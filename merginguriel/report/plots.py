"""Figures: square heatmaps (similarity, NxN) and the per-target bar chart of a merge against its baselines.

Matplotlib's Agg backend is used so figures render on headless machines; every figure is written atomically.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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


def bar_chart(values: dict[str, float], path: str | os.PathLike, title: str, highlight: str | None = None) -> Path:
    """Horizontal bars of accuracies (``highlight`` drawn in another colour), NaN values left out."""
    plt = _pyplot()
    items = [(k, float(v)) for k, v in values.items() if v is not None and pd.notna(v)]
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(items) + 1.5))
    try:
        labels = [k for k, _ in items]
        colours = ["tab:orange" if k == highlight else "tab:blue" for k in labels]
        ax.barh(range(len(items)), [v for _, v in items], color=colours)
        ax.set_yticks(range(len(items)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy")
        ax.set_title(title)
        for i, (_, v) in enumerate(items):
            ax.text(min(v + 0.01, 0.93), i, f"{v:.3f}", va="center", fontsize=8)
        return _save(fig, path)
    finally:
        plt.close(fig)
