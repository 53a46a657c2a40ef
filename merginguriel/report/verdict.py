"""One verdict per target: which merge to use, or that none beats the best source -- chosen on validation, judged on
test with a paired interval.

The merge is the target's best merge by VALIDATION accuracy (ties: fewer sources, then the method's name). It is
judged on TEST against the single model a user would otherwise deploy, chosen on validation: the best of all candidate
models (which may not be among the merge's sources), or, where the judgement does not record that, the best of its own
sources. A merge is recommended only when the 95% bootstrap interval of its difference lies above zero. Otherwise the
verdict names what to use instead: that model (and, when one of the ensembles of the merge's sources did better on
validation, that ensemble, at K times the inference cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from merginguriel.report.rows import ENSEMBLES, as_float
from merginguriel.units import points


@dataclass
class Verdict:
    target: str
    merge: bool
    line: str
    row: dict


def rank(group: pd.DataFrame) -> pd.DataFrame:
    """A target's merges in the order every table, chart and verdict shows them: by VALIDATION accuracy (ties: fewer
    sources, then the method's name, then the run); test accuracy is never looked at."""
    g = group.assign(_val=pd.to_numeric(group["val_accuracy"], errors="coerce").fillna(-1.0))
    g = g.sort_values(["_val", "num_sources", "method", "run"], ascending=[False, True, True, True], kind="stable")
    return g.drop(columns="_val")


def choose(group: pd.DataFrame) -> dict:
    """The target's merge chosen on validation: the one ranked first."""
    return rank(group).iloc[0].to_dict()


def describe(row: dict) -> str:
    sim = row.get("similarity")
    how = f"{str(sim).upper() if sim in ('real', 'uriel') else sim}, K={row['num_sources']}" if sim else f"K={row['num_sources']}"
    return f"{row['method']}, {how}"


def merge_label(row: dict) -> str:
    """A merge as tables and charts name it: its method, selection and K, and its parameters when it has any."""
    params = row.get("params")
    return f"{describe(row)} {params}" if params and params != "{}" else describe(row)


def comparator(row: dict, split: str) -> tuple[str, float, tuple[float, float, float, float], str]:
    """The single model the merge must beat on ``split``: the best of ALL candidate models on validation when that is
    not one of the merge's sources (judged by ``vs_best_overall``), else the best selected source (``gain``). Returns
    its name, accuracy, (delta, ci_low, ci_high, p) and how to call it."""
    overall = row.get(f"{split}_best_overall")
    if isinstance(overall, str) and overall != row.get(f"{split}_best_source"):
        stats = tuple(as_float(row.get(f"{split}_overall_{k}")) for k in ("delta", "ci_low", "ci_high", "p"))
        return overall, as_float(row[f"{split}_best_overall_accuracy"]), stats, "best single model (not merged)"
    stats = tuple(as_float(row.get(f"{split}_{k}")) for k in ("gain", "gain_ci_low", "gain_ci_high", "gain_p"))
    return row[f"{split}_best_source"], as_float(row[f"{split}_best_source_accuracy"]), stats, "best source"


def verdict(target: str, group: pd.DataFrame) -> Verdict:
    row = choose(group)
    split = "test" if not math.isnan(as_float(row.get("test_gain"))) else "val"
    name = "test" if split == "test" else "validation"
    acc = as_float(row[f"{split}_accuracy"])
    best, best_acc, (gain, lo, hi, p), called = comparator(row, split)
    sure = f"gain {points(gain)} pts [95% CI {points(lo)}, {points(hi)}], p = {p:.2g}"
    where = "" if split == "test" else " (validation only: no test judgement)"
    if lo > 0:
        line = f"{target}: merge ({describe(row)}): {acc:.3f} vs {called} {best} {best_acc:.3f}, {sure}{where}"
        return Verdict(target, True, line, row)
    instead = f"use {best} ({best_acc:.3f} {name})"
    ens = {e: v for e in ENSEMBLES if not math.isnan(v := as_float(row.get(f"val_ensemble_{e}")))}
    val_best = comparator(row, "val")[1]
    top = max(ens, key=lambda e: ens[e]) if ens else None
    if top and not math.isnan(val_best) and ens[top] > val_best:
        instead += (f", or the {top.replace('_', ' ')} ensemble of the same sources ({as_float(row.get(f'{split}_ensemble_{top}')):.3f} "
                    f"{name}, {int(row['num_sources'])}x the inference cost)")
    line = (f"{target}: no merge beats the {called}: {instead}; the merge chosen on validation ({describe(row)}) "
            f"scores {acc:.3f}, {sure}{where}")
    return Verdict(target, False, line, row)


def verdicts(table: pd.DataFrame) -> list[Verdict]:
    return [verdict(t, g) for t, g in table.groupby("target", sort=True)]
