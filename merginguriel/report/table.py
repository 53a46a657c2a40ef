"""The report core: functions over a pandas DataFrame of result rows, whatever produced them.

Input schema (one row per merged model; ``RESULT_COLUMNS``):

| column | type | meaning |
|---|---|---|
| target | str | target locale |
| method | str | merge method (``similarity``, ``ties``, ``adamerging``, ...) |
| similarity | str or None | how sources were chosen (``uriel``, ``uriel_genetic``, ``real``; None for manual sources) |
| num_sources | int | K |
| include_target | bool | IncTar (True) or ExcTar (False) |
| accuracy | float | merged model's accuracy on the target's split, in [0, 1] |
| sources | list[str] | source locales |
| weights | list[float] | their weights |
| run | str | run name (the merged folder's name, or an experiment's key) |
| manifest_path | str or None | where the merged model's manifest is |

``merginguriel report`` builds these rows from merged manifests (``manifests.rows_from_manifests``); the experiments
database can build the same frame from its rows and call ``compare`` / ``markdown`` / ``write_report`` directly.

``compare`` adds, per row, the baselines of ``baselines.target_baselines`` (self, zs_avg, zs_best, zs_best_source,
best_overall, best_overall_source, base), ``effect`` = accuracy - zs_avg, the deltas ``d_<baseline>`` = accuracy -
baseline, and the flags ``beats_zs_avg``, ``beats_zs_best``, ``beats_best_overall``, ``beats_self``, ``beats_base``
(strictly greater; NaN baselines give False).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from merginguriel.errors import InputError
from merginguriel.locales import check_locales
from merginguriel.report.baselines import target_baselines

RESULT_COLUMNS: tuple[str, ...] = (
    "target", "method", "similarity", "num_sources", "include_target", "accuracy", "sources", "weights", "run",
    "manifest_path",
)
BASELINES: tuple[str, ...] = ("self", "zs_avg", "zs_best", "best_overall", "base")
TABLE_COLUMNS: tuple[str, ...] = (
    "target", "method", "similarity", "num_sources", "mode", "accuracy", *BASELINES, "effect",
    "d_zs_avg", "d_zs_best", "d_best_overall", "d_self", "d_base", "beats_zs_avg", "beats_zs_best", "beats_base", "sources",
    "run",
)


def check_results(results: pd.DataFrame) -> pd.DataFrame:
    """Validate a result frame against the schema (missing columns, unknown locales, accuracies outside [0, 1])."""
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise InputError(f"result rows lack column(s) {', '.join(missing)}; the schema is {', '.join(RESULT_COLUMNS)}")
    if results.empty:
        raise InputError("no merge results to report; pass merged folders or manifests with --merged")
    check_locales(sorted(set(results["target"])))
    for sources in results["sources"]:
        check_locales(list(sources))
    acc = pd.to_numeric(results["accuracy"], errors="coerce")
    bad = results.loc[acc.isna() | (acc < 0) | (acc > 1), "run"].tolist()
    if bad:
        raise InputError(f"run(s) {', '.join(map(str, bad))} have no accuracy in [0, 1]; evaluate those merged models first")
    return results


def compare(results: pd.DataFrame, nxn: pd.DataFrame, base_accuracy: dict[str, float] | None = None) -> pd.DataFrame:
    """The result rows with every baseline, the merging effect, deltas and beats-flags added (see module docstring)."""
    results = check_results(results).reset_index(drop=True)
    base_accuracy = base_accuracy or {}
    rows = []
    for _, row in results.iterrows():
        b = target_baselines(nxn, row["target"], list(row["sources"]), base_accuracy.get(row["target"]))
        acc = float(row["accuracy"])
        extra = {**b, "effect": acc - b["zs_avg"], "mode": "IncTar" if bool(row["include_target"]) else "ExcTar"}
        for name in BASELINES:
            extra[f"d_{name}"] = acc - b[name] if not math.isnan(b[name]) else math.nan
            extra[f"beats_{name}"] = bool(not math.isnan(b[name]) and acc > b[name])
        rows.append({**row.to_dict(), **extra})
    return pd.DataFrame(rows)


def _label(row: pd.Series) -> str:
    sim = row["similarity"] if isinstance(row["similarity"], str) and row["similarity"] else "manual"
    return f"{row['method']} / {sim} / K={int(row['num_sources'])} / {row['mode']}"


def markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """One markdown table per target (rows sorted by merged accuracy, best first)."""
    parts = []
    for target, group in table.groupby("target", sort=True):
        view = group.sort_values(["accuracy", "run"], ascending=[False, True])[[c for c in TABLE_COLUMNS if c != "target"]]
        parts.append(f"### {target}\n\n{_to_markdown(view, digits)}\n")
    return "\n".join(parts)


def to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """Any frame as a markdown table (floats to ``digits`` places, booleans yes/no, lists comma-joined, NaN empty)."""
    return _to_markdown(frame, digits)


def _to_markdown(frame: pd.DataFrame, digits: int) -> str:
    def fmt(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, (list, tuple)):
            return ",".join(map(str, v))
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return "" if v is None else str(v)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_report(table: pd.DataFrame, output: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.csv`` (every column), ``report.md`` and one bar chart per target into ``output`` (an existing
    folder, normally the temporary folder of an atomic write); return the paths."""
    from merginguriel.report.plots import bar_chart

    out = Path(output)
    paths = {"csv": out / "report.csv", "markdown": out / "report.md"}
    csv = table.copy()
    for col in ("sources", "weights"):
        csv[col] = csv[col].map(lambda v: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
    csv.to_csv(paths["csv"], index=False, float_format="%.6f")
    paths["markdown"].write_text(markdown(table), encoding="utf-8")
    for target, group in table.groupby("target", sort=True):
        ordered = group.sort_values(["accuracy", "run"], ascending=[False, True])
        values = {f"merged: {_label(r)}": float(r["accuracy"]) for _, r in ordered.iterrows()}
        seen: set[tuple[str, ...]] = set()
        for _, r in ordered.iterrows():  # zero-shot baselines once per distinct source set
            key = tuple(r["sources"])
            if key in seen:
                continue
            seen.add(key)
            values[f"zero-shot avg of {','.join(key)}"] = r["zs_avg"]
            values[f"zero-shot best source ({r['zs_best_source']})"] = r["zs_best"]
        first = ordered.iloc[0]
        values.update({
            "self (own model)": first["self"],
            f"best overall zero-shot ({first['best_overall_source']})": first["best_overall"],
            "untrained base": first["base"],
        })
        paths[f"chart:{target}"] = bar_chart(values, out / f"{target}.png", f"{target}: merged vs baselines",
                                             highlight=next(iter(values)))
    return paths
