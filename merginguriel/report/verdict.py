"""One verdict per target: which merge to use, or that none beats the best source -- chosen on validation, judged on
test with a paired interval.

The merge is the target's best merge by VALIDATION accuracy (ties: fewer sources, then the method's name). Its TEST
gain over the best of its own sources (chosen on validation) decides: a merge is recommended only when the 95%
bootstrap interval of that gain lies above zero. Otherwise the verdict names what to use instead: that source (and,
when one of the ensembles of the same sources did better on validation, that ensembles costs K times the inference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from merginguriel.report.rows import ENSEMBLES, as_float


@dataclass
class Verdict:
    target: str
    merge: bool
    line: str
    row: dict


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def choose(group: pd.DataFrame) -> dict:
    """The target's merge chosen on validation (test accuracy is never looked at)."""
    g = group.assign(_val=pd.to_numeric(group["val_accuracy"], errors="coerce").fillna(-1.0))
    g = g.sort_values(["_val", "num_sources", "method", "run"], ascending=[False, True, True, True], kind="stable")
    return g.iloc[0].drop(labels="_val").to_dict()


def describe(row: dict) -> str:
    sim = row.get("similarity")
    how = f"{str(sim).upper() if sim in ('real', 'uriel') else sim}, K={row['num_sources']}" if sim else f"K={row['num_sources']}"
    return f"{row['method']}, {how}"


def verdict(target: str, group: pd.DataFrame) -> Verdict:
    row = choose(group)
    split = "test" if not math.isnan(as_float(row.get("test_gain"))) else "val"
    name = "test" if split == "test" else "validation"
    acc, best, best_acc = as_float(row[f"{split}_accuracy"]), row[f"{split}_best_source"], as_float(row[f"{split}_best_source_accuracy"])
    gain, lo, hi, p = (as_float(row[f"{split}_{k}"]) for k in ("gain", "gain_ci_low", "gain_ci_high", "gain_p"))
    sure = f"gain {_pts(gain)} pts [95% CI {_pts(lo)}, {_pts(hi)}], p = {p:.2g}"
    where = "" if split == "test" else " (validation only: no test judgement)"
    if lo > 0:
        line = f"{target}: merge ({describe(row)}): {acc:.3f} vs best source {best} {best_acc:.3f}, {sure}{where}"
        return Verdict(target, True, line, row)
    instead = f"use {best} ({best_acc:.3f} {name})"
    ens = {e: v for e in ENSEMBLES if not math.isnan(v := as_float(row.get(f"val_ensemble_{e}")))}
    val_best = as_float(row.get("val_best_source_accuracy"))
    top = max(ens, key=lambda e: ens[e]) if ens else None
    if top and not math.isnan(val_best) and ens[top] > val_best:
        instead += (f", or the {top.replace('_', ' ')} ensemble of the same sources ({as_float(row.get(f'{split}_ensemble_{top}')):.3f} "
                    f"{name}, {int(row['num_sources'])}x the inference cost)")
    line = (f"{target}: no merge beats the best source: {instead}; the merge chosen on validation ({describe(row)}) "
            f"scores {acc:.3f}, {sure}{where}")
    return Verdict(target, False, line, row)


def verdicts(table: pd.DataFrame) -> list[Verdict]:
    return [verdict(t, g) for t, g in table.groupby("target", sort=True)]
