"""The baselines a merged model for target t with sources S is judged against (reference/methods.md).

All accuracies come from the NxN matrix ``nxn`` (row = source model, column = evaluated locale) of the split the merged
model was evaluated on, except the untrained shared base's, which is measured separately:

* ``self``: t's own fine-tuned model on t, ``nxn[t, t]`` (None when t has no model);
* ``zs_avg`` / ``zs_best``: mean and max over s in S of ``nxn[s, t]`` (``zs_best_source`` the argmax, ties by name);
* ``best_overall``: max over every model s != t of ``nxn[s, t]`` (``best_overall_source``);
* ``base``: the shared base (pretrained encoder + untrained head) on t;
* merging ``effect`` = merged accuracy - ``zs_avg`` (positive: synergy, negative: interference).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from merginguriel.data.config import EVAL_BATCH_SIZE
from merginguriel.errors import InputError
from merginguriel.similarity.real import missing_cells


def _best(values: dict[str, float]) -> tuple[str | None, float]:
    if not values:
        return None, math.nan
    source, acc = min(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return source, float(acc)


def target_baselines(nxn: pd.DataFrame, target: str, sources: list[str], base_accuracy: float | None = None) -> dict:
    """Every baseline of one (target, sources) pair; missing NxN cells raise an InputError listing them."""
    if not sources:
        raise InputError(f"no sources given for target {target}; a merge has at least one source")
    missing = missing_cells(nxn, list(sources), [target])
    others = [s for s in nxn.index if s != target]
    if target not in nxn.columns:
        missing.append(f"(every model)->{target}")
    else:
        missing += [f"{s}->{target}" for s in others if pd.isna(nxn.at[s, target]) and f"{s}->{target}" not in missing]
    if missing:
        raise InputError(
            f"the NxN matrix lacks cell(s) (source model -> evaluated locale) {', '.join(sorted(set(missing)))}; "
            "run `merginguriel nxn` on the same split for these models and locales"
        )
    zs = {s: float(nxn.at[s, target]) for s in sources}
    zs_best_source, zs_best = _best(zs)
    best_source, best_overall = _best({s: float(nxn.at[s, target]) for s in others})
    return {
        "self": float(nxn.at[target, target]) if target in nxn.index else math.nan,
        "zs_avg": sum(zs.values()) / len(zs),
        "zs_best": zs_best,
        "zs_best_source": zs_best_source,
        "best_overall": best_overall,
        "best_overall_source": best_source,
        "base": math.nan if base_accuracy is None else float(base_accuracy),
    }


def base_accuracies(base: str | os.PathLike, targets: list[str], split: str, data, cache_file: str | os.PathLike | None,
                    batch_size: int = EVAL_BATCH_SIZE, device: str = "auto") -> dict[str, float]:
    """Accuracy of the untrained shared base on each target: read from ``cache_file`` when it is there, otherwise
    evaluated now (one load for all targets) and added to the cache (keyed by the base's weights hash and the split)."""
    import json

    from merginguriel.io import read_manifest, write_json_atomic

    base = Path(base)
    try:
        base_hash = str(read_manifest(base).get("hash", ""))
    except FileNotFoundError:
        raise InputError(f"shared base {base} not found (no manifest.json); build it with `merginguriel base`") from None
    cached: dict = {}
    if cache_file is not None and Path(cache_file).is_file():
        try:
            cached = json.loads(Path(cache_file).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            cached = {}
    entry = cached.get(f"{base_hash}:{split}", {})
    todo = [t for t in targets if t not in entry]
    if todo:
        from merginguriel.evaluation.evaluate import evaluate_checkpoint

        results = evaluate_checkpoint(base, todo, split, data, batch_size, device)
        entry.update({t: float(results[t]["accuracy"]) for t in todo})
        cached[f"{base_hash}:{split}"] = entry
        if cache_file is not None:
            write_json_atomic(cache_file, cached)
    return {t: float(entry[t]) for t in targets}
