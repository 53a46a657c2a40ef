"""AdaMerging's learning curves, from the run's step log (``metrics.csv``): the prediction entropy at every step and
the coefficients after every step, for the manifest (``adaptation.trajectory``) and a plot beside the merged model
(``adamerging.png``).

Alignment: the entropy logged at step t (0-based) is that of the model with the coefficients after t updates; the
coefficients logged at step t (1-based) are those after t updates, and step 0 holds the initial values. So
``entropy[t]`` and ``lambda[s][t]`` describe the same merged model. Layer-wise runs record, per source, the mean over
its tensors' coefficients and their quartiles (25%, 75%) at every step; each tensor's final value is in
``coefficients.json`` and each tensor's value at every step in ``metrics.csv``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

PLOT_NAME = "adamerging.png"


def _value(raw: str | None) -> float | None:
    if raw in (None, ""):
        return None
    try:
        v = float(raw)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def trajectory(log_rows: list[dict[str, str]], module: Any) -> dict[str, Any]:
    """Entropy per step and coefficients per step (see the module docstring) from the CSV log rows of every attempt
    (a step logged twice, by a run and its resumption, keeps the later value)."""
    sources = list(module.source_names)
    layer = module.granularity == "layer"
    init = module.initial_coefficients.detach().float().cpu()
    final = module.coefficients.detach().float().cpu()
    entropy: dict[int, float] = {}
    per_step: dict[int, dict[str, list[float]]] = {}
    for row in log_rows:
        step = _value(row.get("step"))
        if step is None:
            continue
        e = _value(row.get("entropy"))
        if e is not None:
            entropy[int(step)] = e
        values: dict[str, list[float]] = {}
        for s in sources:
            if layer:
                vals = [_value(row.get(f"lambda/{s}/{n}")) for n in module.tensor_names]
                vals = [v for v in vals if v is not None]
            else:
                v = _value(row.get(f"lambda/{s}"))
                vals = [] if v is None else [v]
            if vals:
                values[s] = vals
        if len(values) == len(sources):
            per_step[int(step)] = values
    per_step[0] = {s: (init[i].tolist() if layer else [float(init[i])]) for i, s in enumerate(sources)}
    steps = sorted(per_step)
    out: dict[str, Any] = {
        "plot": PLOT_NAME,
        "granularity": module.granularity,
        "entropy_steps": sorted(entropy),
        "entropy": [round(entropy[t], 5) for t in sorted(entropy)],
        "lambda_steps": steps,
        "lambda": {s: [round(sum(per_step[t][s]) / len(per_step[t][s]), 5) for t in steps] for s in sources},
    }
    if layer:  # the spread over a source's tensors: the middle half (min and max mostly sit at the clamp)
        out["lambda_range"] = {s: {"q25": [], "q75": []} for s in sources}
        for t in steps:
            for s in sources:
                q = torch.quantile(torch.tensor(per_step[t][s], dtype=torch.float64), torch.tensor([0.25, 0.75], dtype=torch.float64))
                out["lambda_range"][s]["q25"].append(round(float(q[0]), 5))
                out["lambda_range"][s]["q75"].append(round(float(q[1]), 5))
    change = (final - init).abs()
    out["summary"] = {
        "lambda_init": {s: round(float(init[i].mean()), 6) for i, s in enumerate(sources)},
        "lambda_final": {s: round(float(final[i].mean()), 6) for i, s in enumerate(sources)},
        "max_abs_change": round(float(change.max()), 6) if change.numel() else 0.0,
        "entropy_first": out["entropy"][0] if out["entropy"] else None,
        "entropy_last": out["entropy"][-1] if out["entropy"] else None,
    }
    return out


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the per-batch entropy is noisy)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_trajectory(curve: dict[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the entropy curve and the coefficient trajectories (layer-wise: each source's mean, its range shaded) into
    ``path`` (PNG), written atomically."""
    from merginguriel.plots import _pyplot, _save

    plt = _pyplot()
    path = Path(path)
    fig, (ax_e, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
    steps, ent = curve["entropy_steps"], curve["entropy"]
    if ent:
        ax_e.plot(steps, ent, color="0.75", linewidth=0.8, label="per batch")
        window = max(1, len(ent) // 25)
        ax_e.plot(steps, _smooth(ent, window), color="C3", linewidth=1.6, label=f"moving mean ({window} steps)")
        ax_e.legend(loc="upper right", fontsize=8)
    ax_e.set_xlabel("step")
    ax_e.set_ylabel("mean prediction entropy (nats)")
    ax_e.set_title("entropy on unlabelled target utterances")
    lsteps = curve["lambda_steps"]
    for i, (source, values) in enumerate(curve["lambda"].items()):
        ax_l.plot(lsteps, values, color=f"C{i}", linewidth=1.6, label=source)
        band = curve.get("lambda_range", {}).get(source)
        if band:
            ax_l.fill_between(lsteps, band["q25"], band["q75"], color=f"C{i}", alpha=0.15, linewidth=0)
    ax_l.set_xlabel("step")
    layer = curve.get("granularity") == "layer"
    ax_l.set_ylabel("λ (mean over tensors; middle half shaded)" if layer else "λ")
    ax_l.set_title(("layer-wise" if layer else "task-wise") + " coefficients")
    ax_l.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
