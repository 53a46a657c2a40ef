"""`merginguriel advise --target X`: merge or not? A cheap pilot on the target's VALIDATION split decides.

The research log's lesson: no source-level feature reliably predicts whether merging helps a target (LOTO accuracy near
chance on 21 targets), so the advice measures instead. It runs the chosen merges (methods x K x similarity) as a small
sweep judged on the VALIDATION split only (the test split stays for the final number), and compares the best of them
with the best single source model chosen on validation among all candidates (the margin over the best single model,
as the report's verdicts call it; the report's ``gain`` is the same comparison restricted to a merge's own sources). It recommends the merge only when it beats that source by ``margin``;
otherwise it recommends using that source model as is. It says how sure it is: a paired bootstrap 95% interval and
an exact McNemar p-value on the validation rows (optimistic, since the best of several pilots was picked on the same
rows). With ``--db`` the pilot's rows and merging-effect features are kept in a results database.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED
from merginguriel.data.config import EVAL_BATCH_SIZE, DataSource
from merginguriel.errors import InputError
from merginguriel.units import points


@dataclass
class Advice:
    """The recommendation and its evidence."""

    target: str
    recommendation: str  # "merge" or "no_merge"
    choice: dict
    evidence: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        c = self.choice
        sure = (f"margin over the best single model {points(c['delta'])} pts [95% CI {points(c['ci'][0])}, {points(c['ci'][1])}], "
                f"McNemar p = {c['p_value']:.3g} on the {c['split']} split (best of {c['pilots']} pilots, picked on the "
                "same rows: optimistic)")
        if self.recommendation == "merge":
            return (
                f"{self.target}: MERGE with {c['method']} over K={c['num_sources']} sources chosen by {c['similarity']} "
                f"({', '.join(c['sources'])}): validation accuracy {c['accuracy']:.4f} vs {c['baseline']} "
                f"{c['best_single']:.4f}; {sure}"
            )
        return (
            f"{self.target}: DO NOT MERGE; use the {c['source']} model as is (validation accuracy {c['accuracy']:.4f}, "
            f"the best single source chosen on validation); the best pilot merge ({c['best_merge']}) reached "
            f"{c['best_merge_accuracy']:.4f}: {sure}"
        )

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "recommendation": self.recommendation,
            "choice": self.choice,
            "notes": self.notes,
            "evidence": json.loads(self.evidence.to_json(orient="records")),
        }


def candidate_outputs(target: str, candidates: list[str], layout, data, batch_size: int, device: str) -> dict:
    """Each candidate source's validation outputs on the target (cached by the evaluation layer)."""
    from merginguriel.evaluation.outputs import checkpoint_outputs

    return {c: checkpoint_outputs(layout.finetuned(c), target, "validation", data, batch_size, device) for c in candidates}


def advise(
    target: str,
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    data: DataSource = DataSource(),
    candidates: Optional[list[str]] = None,
    methods: list[str] = ["similarity", "ties"],  # noqa: B006 (jsonargparse reads the default)
    num_sources: list[int] = [3, 5],  # noqa: B006
    similarities: list[str] = ["uriel", "real"],  # noqa: B006
    include_target: bool = False,
    weighting: str = "scores",
    params: Optional[dict] = None,
    margin: float = 0.005,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    db: Optional[str] = None,
    output: Optional[str] = None,
) -> Advice:
    """Run the pilot merges on ``target``'s validation split and recommend merge (method, K, similarity) or no merge.

    Args:
        target: the target locale.
        backbone: backbone of the fine-tuned models (``embedded`` or a hub id / folder).
        root: checkpoints root.
        data: MASSIVE data source.
        candidates: locales allowed as sources (default: every locale with a fine-tuned model, the target excluded).
        methods: pilot merge methods (any `merginguriel merge` method, data-dependent ones included).
        num_sources: pilot values of K.
        similarities: pilot similarity kinds (``real`` is skipped when there is no validation NxN matrix).
        include_target: IncTar pilots (the target's own model among the sources).
        weighting: source weighting (``scores``, ``softmax``, ``sinkhorn``, ``similarity_x_compatibility``).
        params: merge parameters shared by the pilots, per method: ``{ties: {density: 0.3}}``.
        margin: how much (absolute validation accuracy) the best merge must beat the best single source by.
        batch_size: evaluation batch size.
        device: evaluation device.
        db: keep the pilot rows and merging-effect features in this results database (default: a temporary one).
        output: also write the advice (recommendation + evidence) as JSON here.
    """
    from merginguriel.checkpoints import Layout
    from merginguriel.evaluation.paired import compare
    from merginguriel.experiments.db import ResultsDB
    from merginguriel.experiments.runner import Sweep, run_sweep
    from merginguriel.io.predictions import unpack
    from merginguriel.jobs.judge import best_by_validation
    from merginguriel.locales import check_locale, check_locales

    check_locale(target)
    layout = Layout.for_backbone(backbone, root)
    pool = check_locales(candidates) if candidates else layout.finetuned_locales()
    pool = [c for c in pool if c != target]
    if not pool:
        raise InputError(f"no fine-tuned source models for {target} under {layout.home / 'finetuned'}; fine-tune some locales first")
    notes: list[str] = []
    sims = list(similarities)
    if "real" in sims and not layout.nxn_matrix("validation").is_file():
        sims.remove("real")
        notes.append(f"REAL similarity skipped: no validation NxN matrix at {layout.nxn('validation')} (run `merginguriel nxn`)")
    usable = len(pool) + (1 if include_target else 0)
    ks = sorted({k for k in num_sources if k <= usable})
    if len(ks) < len(set(num_sources)):
        notes.append(f"K values above the {usable} available sources skipped")
    if not sims or not ks or not methods:
        raise InputError(
            f"no pilot merges to run for {target} (similarities {similarities}, K {num_sources}, methods {methods} with "
            f"{len(pool)} candidate sources); give at least one usable value of each"
        )
    data_cfg = data.at(root)
    outs = candidate_outputs(target, pool, layout, data_cfg, batch_size, device)
    accs = {c: float(o.correct.float().mean()) for c, o in outs.items()}
    best_source = best_by_validation(accs)
    fixed = {
        "target": target, "backbone": backbone, "root": root,
        "data": {"source": data.source, "data_path": data.data_path, "max_length": data.max_length},
        "selection": {"include_target": include_target, "weighting": weighting,
                      "candidates": sorted(pool + ([target] if include_target else []))},
        # merging-effect features stream every source again; only a kept database (--db) has a use for them
        "evaluate": {"splits": ["validation"], "batch_size": batch_size, "features": db is not None},
        "device": device,
    }
    zipped = [{"merge.method": list(methods), "merge.params": [dict((params or {}).get(m) or {}) for m in methods]}]
    grid = {"selection.similarity": sims, "selection.num_sources": ks}
    with tempfile.TemporaryDirectory(prefix="merginguriel-advise-") as tmp:
        db_path = db or str(Path(tmp) / "advise.sqlite")
        sweep = Sweep(name=f"advise-{target}", fixed=fixed, grid=grid, zip=zipped, db=db_path,
                      manifests=str(Path(tmp) / "manifests"))
        run_sweep(sweep)
        with ResultsDB(db_path, readonly=True) as rdb:
            done = rdb.rows(sweep=sweep.name, status="done")
            failed = rdb.rows(sweep=sweep.name, status="failed")
    for row in failed:
        notes.append(f"pilot {row['method']} failed: {(row['error'] or '').splitlines()[-1] if row['error'] else ''}")
    if not done:
        raise InputError(f"every pilot merge for {target} failed ({'; '.join(notes)}); fix the inputs and rerun")

    rows = []
    best_correct = outs[best_source].correct
    for r in done:
        rec = r["metrics"]["splits"]["validation"]
        sel = r["selection"] or {}
        merged_correct = unpack(rec["predictions"]) == unpack(rec["labels"])
        paired = compare(merged_correct.numpy(), best_correct.numpy())
        rows.append({
            "kind": "merge", "method": r["method"], "similarity": sel.get("similarity"), "num_sources": len(sel.get("sources") or []),
            "sources": ",".join(sel.get("sources") or []), "accuracy": float(rec["accuracy"]),
            "source_mean": rec["source_mean"], "merging_effect": rec["merging_effect"],
            "vs_best_single": paired.delta, "ci_low": paired.ci_low, "ci_high": paired.ci_high, "p_value": paired.p_value,
        })
    rows.append({"kind": "best single source", "method": best_source, "similarity": None, "num_sources": 1,
                 "sources": best_source, "accuracy": accs[best_source], "source_mean": None, "merging_effect": None,
                 "vs_best_single": 0.0, "ci_low": None, "ci_high": None, "p_value": None})
    zs_all = sum(accs.values()) / len(accs)
    rows.append({"kind": "zero-shot mean (all candidates)", "method": None, "similarity": None, "num_sources": len(accs),
                 "sources": ",".join(sorted(accs)), "accuracy": zs_all, "source_mean": None, "merging_effect": None,
                 "vs_best_single": zs_all - accs[best_source], "ci_low": None, "ci_high": None, "p_value": None})
    evidence = pd.DataFrame(rows).sort_values(["accuracy"], ascending=False, kind="stable").reset_index(drop=True)

    merges = [r for r in rows if r["kind"] == "merge"]
    best = min(merges, key=lambda r: (-r["accuracy"], r["method"], r["similarity"], r["num_sources"]))
    label = f"{best['method']} / {best['similarity']} / K={best['num_sources']}"
    sure = {"split": "validation", "baseline": f"best single source chosen on validation ({best_source})",
            "delta": best["vs_best_single"], "ci": [best["ci_low"], best["ci_high"]], "p_value": best["p_value"],
            "pilots": len(merges)}
    if best["accuracy"] > accs[best_source] + margin:
        choice = {"method": best["method"], "similarity": best["similarity"], "num_sources": best["num_sources"],
                  "sources": best["sources"].split(","), "accuracy": best["accuracy"], "best_single": accs[best_source],
                  "best_single_source": best_source, "include_target": include_target, "weighting": weighting, **sure}
        advice = Advice(target, "merge", choice, evidence, notes)
    else:
        choice = {"source": best_source, "accuracy": accs[best_source], "best_merge": label,
                  "best_merge_accuracy": best["accuracy"], **sure}
        advice = Advice(target, "no_merge", choice, evidence, notes)
    if output:
        from merginguriel.io import write_json_atomic

        write_json_atomic(output, advice.to_dict())
    return advice
