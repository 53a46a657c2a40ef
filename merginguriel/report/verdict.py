"""One verdict per target: which merge to use, or that none beats the best source -- chosen on validation, judged on
test with a paired interval.

The merge is the target's best merge by VALIDATION accuracy (ties: fewer sources, then the method's name). It is
judged on TEST against the single model a user would otherwise deploy, chosen on validation: the best of all candidate
models (which may not be among the merge's sources), or, where the judgement does not record that, the best of its own
sources. A merge is recommended only when the 95% bootstrap interval of its difference lies above zero. When it scores
higher but the interval reaches zero, the verdict says it is not significantly better than that model; otherwise that
no merge beats it. Either way it names what to use instead: that model (and, when one of the ensembles of the merge's
sources did better on validation, that ensemble, at K times the inference cost).

Every verdict says what the merge was chosen from: how many merges were tried on validation (each value of a
parameter list counts, merginguriel.jobs.choose) and how many distinct models they were (merges with the same weights'
hash are one model, shown and counted once), and shows the target's own model beside it when there is one.

Names: ``gain`` is methods.md's (merged - the best SELECTED source chosen on validation); the difference from the best
single model of ALL candidates (chosen on validation, merged or not) is the ``margin`` over it.
"""

from __future__ import annotations

import json
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


def _hashes(row: dict) -> list[str]:
    """The weights' hashes of every merge a row's job made (one per candidate setting); a merge that records none is
    its own model."""
    given = str(row.get("candidate_hashes") or "").split(" ")
    n = as_float(row.get("candidates"))
    n = 1 if math.isnan(n) else max(int(n), 1)
    given = (given + [""] * n)[:n]
    return [h or f"{row.get('key')}#{i}" for i, h in enumerate(given)]


def distinct(ranked: pd.DataFrame) -> pd.DataFrame:
    """A target's ranked merges with each model once: merges with the same weights' hash are one model, shown by the
    first in rank order; its ``same_as`` column names the others."""
    keep, same = [], {}
    for i, r in ranked.iterrows():
        h = str(r.get("hash") or "") or f"{r.get('key')}#{i}"
        if h in same:
            same[h].append(merge_label(r.to_dict()))
        else:
            same[h] = []
            keep.append((i, h))
    out = ranked.loc[[i for i, _ in keep]].copy()
    out["same_as"] = [", ".join(same[h]) for _, h in keep]
    return out


def tried(group: pd.DataFrame) -> tuple[int, int]:
    """How many merges a target's jobs made and tried on validation (each value of a parameter list counts) and how
    many distinct models they were (by the weights' hash)."""
    hashes = [h for _, r in group.iterrows() for h in _hashes(r.to_dict())]
    return len(hashes), len(set(hashes))


def chosen_from(group: pd.DataFrame) -> str:
    merges, models = tried(group)
    if merges == 1:
        return "the only merge tried"
    return f"best of {merges} merges ({models} distinct model{'s' if models != 1 else ''}), chosen on validation"


def choose(group: pd.DataFrame) -> dict:
    """The target's merge chosen on validation: the one ranked first."""
    return rank(group).iloc[0].to_dict()


def describe(row: dict) -> str:
    sim = row.get("similarity")
    how = f"{str(sim).upper() if sim in ('real', 'uriel') else sim}, K={row['num_sources']}" if sim else f"K={row['num_sources']}"
    return f"{row['method']}, {how}"


def merge_label(row: dict) -> str:
    """A merge as tables and charts name it: its method, selection and K, and its parameters when it has any (the
    values chosen on validation in place of a list, with the number of candidates)."""
    params = row.get("params")
    chosen = row.get("chosen")
    if isinstance(chosen, str) and chosen:
        merged = {**json.loads(params or "{}"), **json.loads(chosen)}
        n = int(as_float(row.get("candidates")))
        return f"{describe(row)} {json.dumps(merged, sort_keys=True)} (chosen on validation from {n})"
    return f"{describe(row)} {params}" if params and params != "{}" else describe(row)


MARGIN = "margin over the best single model"  # merged - the best of ALL candidates (not methods.md's gain)


def comparator(row: dict, split: str) -> tuple[str, float, tuple[float, float, float, float], str, str]:
    """The single model the merge must beat on ``split``: the best of ALL candidate models on validation when that is
    not one of the merge's sources (judged by ``vs_best_overall``: the ``margin``), else the best selected source
    (``gain``). Returns its name, accuracy, (delta, ci_low, ci_high, p), how to call it and the difference's name."""
    overall = row.get(f"{split}_best_overall")
    if isinstance(overall, str) and overall != row.get(f"{split}_best_source"):
        stats = tuple(as_float(row.get(f"{split}_overall_{k}")) for k in ("delta", "ci_low", "ci_high", "p"))
        return overall, as_float(row[f"{split}_best_overall_accuracy"]), stats, "best single model (not merged)", MARGIN
    stats = tuple(as_float(row.get(f"{split}_{k}")) for k in ("gain", "gain_ci_low", "gain_ci_high", "gain_p"))
    return row[f"{split}_best_source"], as_float(row[f"{split}_best_source_accuracy"]), stats, "best source", "gain"


def verdict(target: str, group: pd.DataFrame) -> Verdict:
    row = choose(group)
    split = "test" if not math.isnan(as_float(row.get("test_gain"))) else "val"
    name = "test" if split == "test" else "validation"
    acc = as_float(row[f"{split}_accuracy"])
    best, best_acc, (gain, lo, hi, p), called, named = comparator(row, split)
    sure = f"{named} {points(gain)} pts [95% CI {points(lo)}, {points(hi)}], p = {p:.2g}"
    where = "" if split == "test" else " (validation only: no test judgement)"
    own = as_float(row.get(f"{split}_self_accuracy"))
    own = "" if math.isnan(own) else f"; the target's own model scores {own:.3f} {name}"
    label = f"{merge_label(row)}; {chosen_from(group)}"
    if lo > 0:
        line = f"{target}: merge ({label}): {acc:.3f} vs {called} {best} {best_acc:.3f}, {sure}{own}{where}"
        return Verdict(target, True, line, row)
    instead = f"use {best} ({best_acc:.3f} {name})"
    ens = {e: v for e in ENSEMBLES if not math.isnan(v := as_float(row.get(f"val_ensemble_{e}")))}
    val_best = comparator(row, "val")[1]
    top = max(ens, key=lambda e: ens[e]) if ens else None
    if top and not math.isnan(val_best) and ens[top] > val_best:
        instead += (f", or the {top.replace('_', ' ')} ensemble of the same sources ({as_float(row.get(f'{split}_ensemble_{top}')):.3f} "
                    f"{name}, {int(row['num_sources'])}x the inference cost)")
    if gain > 0:  # higher, but the interval reaches zero
        line = (f"{target}: not significantly better than {best} ({called}): the merge ({label}) scores {acc:.3f} vs "
                f"{best_acc:.3f}, {sure}; {instead}{own}{where}")
    else:
        line = (f"{target}: no merge beats the {called}: {instead}; the merge ({label}) scores {acc:.3f}, "
                f"{sure}{own}{where}")
    return Verdict(target, False, line, row)


def verdicts(table: pd.DataFrame) -> list[Verdict]:
    return [verdict(t, g) for t, g in table.groupby("target", sort=True)]
