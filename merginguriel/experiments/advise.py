"""`merginguriel advise --target X`: merge or not? A cheap pilot on the target's VALIDATION split decides.

The research log's lesson: no source-level feature reliably predicts whether merging helps a target (LOTO accuracy near
chance on 21 targets), so the advice measures instead. It runs the chosen merges (methods x K x similarity) as a small
sweep evaluated on validation data, and compares the best of them with the best single source model and with the
zero-shot average of the merged sources. It recommends the merge only when it beats the best single source by
``margin``; otherwise it recommends using that source model as is. The evidence table shows every number behind it.
With ``--db`` the pilot's rows and merging-effect features are kept in a results database for later analysis.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from merginguriel.data.config import EVAL_BATCH_SIZE, DataConfig
from merginguriel.errors import InputError


@dataclass
class Advice:
    """The recommendation and its evidence."""

    target: str
    recommendation: str  # "merge" or "no_merge"
    choice: dict
    evidence: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.recommendation == "merge":
            c = self.choice
            return (
                f"{self.target}: MERGE with {c['method']} over K={c['num_sources']} sources chosen by {c['similarity']} "
                f"({', '.join(c['sources'])}): validation accuracy {c['accuracy']:.4f} vs best single source "
                f"{c['best_single_source']} {c['best_single']:.4f} ({c['accuracy'] - c['best_single']:+.4f})"
            )
        c = self.choice
        return (
            f"{self.target}: DO NOT MERGE; use the {c['source']} model as is (validation accuracy {c['accuracy']:.4f}); "
            f"the best pilot merge ({c.get('best_merge', 'none')}) reached {c.get('best_merge_accuracy', math.nan):.4f}"
        )

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "recommendation": self.recommendation,
            "choice": self.choice,
            "notes": self.notes,
            "evidence": json.loads(self.evidence.to_json(orient="records")),
        }


def candidate_accuracies(
    target: str, candidates: list[str], backbone: str, root: str, data: DataConfig, batch_size: int, device: str
) -> dict[str, float]:
    """acc(candidate on target validation): from the validation NxN matrix when it has every cell, else evaluated now."""
    from merginguriel.experiments.features import read_nxn, source_accuracies
    from merginguriel.checkpoints import Layout
    from merginguriel.experiments.point import NXN_FILE

    layout = Layout.for_backbone(backbone, root)
    accs = source_accuracies(read_nxn(layout.nxn("validation") / NXN_FILE), candidates, target)
    if accs is not None:
        return dict(zip(candidates, accs))
    from merginguriel.evaluation.evaluate import evaluate_checkpoint

    return {
        c: float(evaluate_checkpoint(layout.finetuned(c), [target], "validation", data, batch_size, device)[target]["accuracy"])
        for c in candidates
    }


def advise(
    target: str,
    backbone: str = "embedded",
    root: str = "checkpoints",
    data: DataConfig = DataConfig(),
    candidates: Optional[list[str]] = None,
    methods: list[str] = ["similarity", "ties"],  # noqa: B006 (jsonargparse reads the default)
    num_sources: list[int] = [3, 5],  # noqa: B006
    similarities: list[str] = ["uriel", "real"],  # noqa: B006
    include_target: bool = False,
    weighting: str = "scores",
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
        methods: pilot merge methods (``similarity``, ``average``, ``ties``, ... any ``merginguriel merge`` method).
        num_sources: pilot values of K.
        similarities: pilot similarity kinds (``real`` is skipped when there is no validation NxN matrix).
        include_target: IncTar pilots (the target's own model among the sources).
        weighting: source weighting (``scores``, ``sinkhorn``, ``similarity_x_compatibility``).
        margin: how much (absolute accuracy) the best merge must beat the best single source by to be recommended.
        batch_size: evaluation batch size.
        device: evaluation device.
        db: keep the pilot rows and merging-effect features in this results database (default: a temporary one).
        output: also write the advice (recommendation + evidence) as JSON here.
    """
    from merginguriel.experiments.frame import results_frame
    from merginguriel.checkpoints import Layout
    from merginguriel.experiments.point import NXN_FILE
    from merginguriel.experiments.runner import Sweep, run_sweep
    from merginguriel.locales import check_locale, check_locales

    check_locale(target)
    layout = Layout.for_backbone(backbone, root)
    pool = check_locales(candidates) if candidates else layout.finetuned_locales()
    pool = [c for c in pool if c != target]
    if not pool:
        raise InputError(f"no fine-tuned source models for {target} under {layout.home / 'finetuned'}; fine-tune some locales first")
    notes: list[str] = []
    sims = list(similarities)
    if "real" in sims and not (layout.nxn("validation") / NXN_FILE).is_file():
        sims.remove("real")
        notes.append(f"REAL similarity skipped: no validation NxN matrix at {layout.nxn('validation')} (run `merginguriel nxn`)")
    ks = sorted({k for k in num_sources if k <= len(pool)})
    if len(ks) < len(set(num_sources)):
        notes.append(f"K values above the {len(pool)} available sources skipped")
    if not sims or not ks or not methods:
        raise InputError(
            f"no pilot merges to run for {target} (similarities {similarities}, K {num_sources}, methods {methods} with "
            f"{len(pool)} candidate sources); give at least one usable value of each"
        )

    accs = candidate_accuracies(target, pool, backbone, root, data, batch_size, device)
    best_source = min(accs, key=lambda c: (-accs[c], c))
    fixed = {
        "target": target,
        "backbone": backbone,
        "root": root,
        "data": {"source": data.source, "data_path": data.data_path, "max_length": data.max_length},
        "selection": {"include_target": include_target, "weighting": weighting,
                      "candidates": sorted(pool + ([target] if include_target else []))},
        "evaluate": {"split": "validation", "batch_size": batch_size, "sources": True},
        "features": {"compatibility": True},
        "device": device,
    }
    grid = {"selection.similarity": sims, "selection.num_sources": ks, "merge.method": list(methods)}
    with tempfile.TemporaryDirectory(prefix="merginguriel-advise-") as tmp:
        db_path = db or str(Path(tmp) / "advise.sqlite")
        sweep = Sweep(name=f"advise-{target}", fixed=fixed, grid=grid, db=db_path, manifests=str(Path(tmp) / "manifests"))
        run_sweep(sweep)
        frame = results_frame(db_path, sweep=sweep.name)
        from merginguriel.experiments.db import ResultsDB

        with ResultsDB(db_path) as rdb:
            failed = rdb.rows(sweep=sweep.name, status="failed")
    for row in failed:
        notes.append(f"pilot {row['method']} failed: {(row['error'] or '').splitlines()[-1] if row['error'] else ''}")
    if frame.empty:
        raise InputError(f"every pilot merge for {target} failed ({'; '.join(notes)}); fix the inputs and rerun")

    rows = []
    for _, r in frame.iterrows():
        rows.append({
            "kind": "merge", "method": r["method"], "similarity": r["similarity"], "num_sources": int(r["num_sources"]),
            "sources": ",".join(r["sources"]), "accuracy": float(r["accuracy"]),
            "zs_avg": r["source_mean"], "merging_effect": r["merging_effect"],
            "d_best_single": float(r["accuracy"]) - accs[best_source],
        })
    rows.append({"kind": "best single source", "method": best_source, "similarity": None, "num_sources": 1,
                 "sources": best_source, "accuracy": accs[best_source], "zs_avg": None, "merging_effect": None, "d_best_single": 0.0})
    zs_all = sum(accs.values()) / len(accs)
    rows.append({"kind": "zero-shot average (all candidates)", "method": None, "similarity": None, "num_sources": len(accs),
                 "sources": ",".join(sorted(accs)), "accuracy": zs_all, "zs_avg": None, "merging_effect": None,
                 "d_best_single": zs_all - accs[best_source]})
    evidence = pd.DataFrame(rows).sort_values(["accuracy"], ascending=False, kind="stable").reset_index(drop=True)

    merges = [r for r in rows if r["kind"] == "merge"]
    best = min(merges, key=lambda r: (-r["accuracy"], r["method"], r["similarity"], r["num_sources"]))
    label = f"{best['method']} / {best['similarity']} / K={best['num_sources']}"
    if best["accuracy"] > accs[best_source] + margin:
        choice = {"method": best["method"], "similarity": best["similarity"], "num_sources": best["num_sources"],
                  "sources": best["sources"].split(","), "accuracy": best["accuracy"], "best_single": accs[best_source],
                  "best_single_source": best_source, "include_target": include_target, "weighting": weighting}
        advice = Advice(target, "merge", choice, evidence, notes)
    else:
        choice = {"source": best_source, "accuracy": accs[best_source], "best_merge": label, "best_merge_accuracy": best["accuracy"]}
        advice = Advice(target, "no_merge", choice, evidence, notes)
    if output:
        from merginguriel.io import write_json_atomic

        write_json_atomic(output, advice.to_dict())
    return advice


def cli(argv: list[str]) -> int:
    """`merginguriel advise`."""
    from merginguriel.cli.function import parse_function_args

    from merginguriel.report.table import _to_markdown

    advice = advise(**parse_function_args(advise, argv, "merginguriel advise"))
    print(f"pilot on {advice.target} validation split:\n")
    print(_to_markdown(advice.evidence, 4))
    for note in advice.notes:
        print(f"note: {note}")
    print(f"\n{advice.summary()}")
    return 0
