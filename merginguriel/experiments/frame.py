"""The results database as DataFrames in the report core's schema (``merginguriel.report.table.RESULT_COLUMNS``).

One row per finished merge point; an ``ensemble`` point becomes four rows (``ensemble_majority``, ...), so ensemble
baselines sit beside the merges in every table and chart. Extra columns keep what the sweep knows beyond the schema:
the point's weighting, method parameters, sweep name, macro-F1, the evaluation split and the sources' own accuracies.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import pandas as pd

from merginguriel.experiments.db import ResultsDB

EXTRA_COLUMNS = ("sweep", "weighting", "params", "split", "macro_f1", "source_mean", "source_best", "merging_effect", "key",
                 "backbone", "root", "data")


_FRAME_SQL = """
SELECT key, sweep, target, method, manifest, metrics, selection,
       json_extract(config, '$.selection.similarity') AS c_similarity,
       json_extract(config, '$.selection.num_sources') AS c_num_sources,
       json_extract(config, '$.selection.include_target') AS c_include_target,
       json_extract(config, '$.selection.weighting') AS c_weighting,
       json_extract(config, '$.merge.params') AS c_params,
       json_extract(config, '$.evaluate.split') AS c_split,
       json_extract(config, '$.backbone') AS c_backbone,
       json_extract(config, '$.root') AS c_root,
       json_extract(config, '$.data') AS c_data
FROM points WHERE status = 'done' {where} ORDER BY created, key
"""


def _rows(db: ResultsDB, sweep: Optional[str]) -> list[dict]:
    # Only the config fields the frame needs, extracted by SQLite: decoding every full config is the slow part at 10k rows.
    sql = _FRAME_SQL.format(where="AND sweep = ?" if sweep is not None else "")
    out = []
    for r in db.conn.execute(sql, (sweep,) if sweep is not None else ()):
        metrics = json.loads(r["metrics"]) if r["metrics"] else {}
        sel = json.loads(r["selection"]) if r["selection"] else {}
        params = json.loads(r["c_params"]) if r["c_params"] else {}
        common = {
            "target": r["target"],
            "similarity": sel.get("similarity", r["c_similarity"]),
            "num_sources": int(len(sel.get("sources") or []) or r["c_num_sources"]),
            "include_target": bool(r["c_include_target"]),
            "sources": list(sel.get("sources") or []),
            "weights": [float(w) for w in sel.get("weights") or []],
            "run": r["key"][:12],
            "manifest_path": r["manifest"],
            "sweep": r["sweep"],
            "weighting": sel.get("weighting", r["c_weighting"]),
            "params": json.dumps(params, sort_keys=True),
            "split": metrics.get("split", r["c_split"]),
            "source_mean": metrics.get("source_mean"),
            "source_best": metrics.get("source_best"),
            "key": r["key"],
            "backbone": r["c_backbone"],
            "root": r["c_root"],
            "data": r["c_data"],
        }
        if "ensembles" in metrics:
            for name, m in metrics["ensembles"].items():
                effect = m["accuracy"] - metrics["source_mean"] if metrics.get("source_mean") is not None else None
                out.append({**common, "method": f"ensemble_{name}", "accuracy": m["accuracy"], "macro_f1": m.get("macro_f1"),
                            "merging_effect": effect})
        else:
            out.append({**common, "method": r["method"], "accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"),
                        "merging_effect": metrics.get("merging_effect")})
    return out


def results_frame(db: ResultsDB | str | os.PathLike, sweep: Optional[str] = None) -> pd.DataFrame:
    """Finished points as report rows (``RESULT_COLUMNS`` + ``EXTRA_COLUMNS``), ordered by target, method, run."""
    from merginguriel.report.table import RESULT_COLUMNS

    own = not isinstance(db, ResultsDB)
    handle = ResultsDB(db) if own else db
    try:
        rows = _rows(handle, sweep)
    finally:
        if own:
            handle.close()
    columns = list(RESULT_COLUMNS) + [c for c in EXTRA_COLUMNS if c not in RESULT_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["target", "method", "run"], kind="stable").reset_index(drop=True)


def features_frame(db: ResultsDB | str | os.PathLike) -> pd.DataFrame:
    """Merging-effect features joined with each point's measured merging effect (merges only, not ensembles)."""
    own = not isinstance(db, ResultsDB)
    handle = ResultsDB(db) if own else db
    try:
        feats = {f["key"]: f for f in handle.features()}
        rows = []
        for r in handle.rows(status="done"):
            f = feats.get(r["key"])
            metrics = r["metrics"] or {}
            if f is None or "ensembles" in metrics:
                continue
            rows.append({"key": r["key"], "target": r["target"], "method": r["method"], "origin": f["origin"],
                         "split": metrics.get("split"), "merging_effect": metrics.get("merging_effect"), **f["features"]})
    finally:
        if own:
            handle.close()
    return pd.DataFrame(rows)
