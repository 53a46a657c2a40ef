"""The report: one verdict per target first, then per-target tables of every merge beside every baseline, plots with
intervals, and (only where it can mean something) the synergy predictor.

Everything is ranked on validation; test numbers are shown beside them. Files written (atomically) into the output
folder: ``summary.md`` (verdicts, tables, notes), ``report.csv`` (every row, every column), ``<target>.png`` and
``<target>.svg`` (the chart beside each target's table, drawn from the same rows), ``loto.csv`` when shown, and a
manifest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pandas as pd

from merginguriel.errors import InputError
from merginguriel.report.rows import ENSEMBLES, as_float
from merginguriel.report.verdict import Verdict, distinct, merge_label, rank, tried, verdicts
from merginguriel.units import points

MIN_LOTO_TARGETS = 4  # leave-one-target-out needs several targets to train on and both outcomes to mean anything


def _pts(x) -> str:
    x = as_float(x)
    return "" if math.isnan(x) else points(x)


def _acc(x) -> str:
    x = as_float(x)
    return "" if math.isnan(x) else f"{x:.3f}"


def _ci(lo, hi) -> str:
    lo, hi = as_float(lo), as_float(hi)
    return "" if math.isnan(lo) else f"[{points(lo)}, {points(hi)}]"


def _p(x) -> str:
    x = as_float(x)
    return "" if math.isnan(x) else f"{x:.2g}"


def baseline_rows(first: pd.Series) -> list[tuple[str, float, float]]:
    """The baselines of the merge ranked first, on its rows: (label, validation accuracy, test accuracy), those with a
    number only. The table and the chart both show exactly these."""
    rows = [
        (f"best selected source, chosen on validation ({first['val_best_source']})", first["val_best_source_accuracy"],
         first["test_best_source_accuracy"]),
        (f"ORACLE: best selected source on test ({first['test_oracle_source']})", None, first["test_oracle_source_accuracy"]),
        (f"best single model of all candidates, chosen on validation ({first.get('val_best_overall')})",
         first.get("val_best_overall_accuracy"), first.get("test_best_overall_accuracy")),
        ("mean of the selected sources (zero-shot)", first["val_source_mean"], first["test_source_mean"]),
        *((f"ensemble {e.replace('_', ' ')} of the same sources", first[f"val_ensemble_{e}"], first[f"test_ensemble_{e}"])
          for e in ENSEMBLES),
        ("self: the target's own fine-tuned model", first["val_self_accuracy"], first["test_self_accuracy"]),
        ("untrained shared base", first["val_base_accuracy"], first["test_base_accuracy"]),
    ]
    return [(label, as_float(v), as_float(t)) for label, v, t in rows if not (math.isnan(as_float(v)) and math.isnan(as_float(t)))]


def _label(r: pd.Series) -> str:
    same = r.get("same_as")
    return merge_label(r.to_dict()) + (f" (= {same}: the same weights)" if isinstance(same, str) and same else "")


def target_table(ranked: pd.DataFrame) -> str:
    """Merges ranked on validation (``verdict.rank``), each model once (``verdict.distinct``), then the baselines of the
    first on the same rows (test numbers beside validation ones)."""
    head = ("| merge | sources (weights) | val acc | test acc | test gain vs best source, pts [95% CI] | p | "
            "merging effect (test) | vs self, pts [95% CI] |")
    lines = [head, "|" + "---|" * 8]
    for _, r in ranked.iterrows():
        srcs = ", ".join(f"{s} {w:.2f}" for s, w in zip(r["sources"], r["weights"]))
        lines.append(
            f"| {_label(r)} | {srcs} | {_acc(r['val_accuracy'])} | "
            f"{_acc(r['test_accuracy'])} | {_pts(r['test_gain'])} {_ci(r['test_gain_ci_low'], r['test_gain_ci_high'])} | "
            f"{_p(r['test_gain_p'])} | {_pts(r['test_merging_effect'])} | "
            f"{_pts(r['test_self_delta'])} {_ci(r['test_self_ci_low'], r['test_self_ci_high'])} |"
        )
    lines += ["", "| baseline (same rows) | val acc | test acc |", "|---|---|---|"]
    lines += [f"| {label} | {_acc(v)} | {_acc(t)} |" for label, v, t in baseline_rows(ranked.iloc[0])]
    if ranked["sources"].map(tuple).nunique() > 1:
        lines.append("\n(baselines of the merge ranked first; other merges' own best sources are in report.csv)")
    return "\n".join(lines)


def _loto(features: Optional[pd.DataFrame], notes: list[str]) -> Optional[pd.DataFrame]:
    """The leave-one-target-out synergy predictor, only where it can mean something."""
    from merginguriel.experiments.effect import loto_accuracy
    from merginguriel.experiments.features import FEATURES

    if features is None or features.empty or "merging_effect" not in features:
        notes.append("synergy predictor not shown: no merging-effect features recorded (sweeps record them)")
        return None
    data = features[pd.to_numeric(features["merging_effect"], errors="coerce").notna()]
    targets = data["target"].nunique()
    outcomes = set((pd.to_numeric(data["merging_effect"]) > 0).tolist())
    if targets < MIN_LOTO_TARGETS or len(outcomes) < 2:
        notes.append(f"synergy predictor not shown: it needs at least {MIN_LOTO_TARGETS} targets and both outcomes "
                     f"(synergy and interference); here {targets} target(s), outcomes {sorted(outcomes)}")
        return None
    usable = [f for f in FEATURES if f in data and pd.to_numeric(data[f], errors="coerce").nunique(dropna=True) > 1]
    dropped = [f for f in FEATURES if f in data and f not in usable]
    if dropped:
        notes.append(f"constant or missing features dropped from the predictor: {', '.join(dropped)}")
    return loto_accuracy(data, usable)


def build_report(table: pd.DataFrame, output: str, overwrite: bool = False, features: Optional[pd.DataFrame] = None,
                 sources: dict | None = None) -> tuple[Path, list[Verdict]]:
    """Write the report of ``table`` (report rows, merginguriel.report.rows) into ``output``; return it and the verdicts."""
    from merginguriel.io import atomic_dir, write_manifest
    from merginguriel.plots import target_chart

    if table.empty:
        raise InputError("no merge results to report; run merges (merginguriel merge) or a sweep (merginguriel experiment) first")
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; choose another --output or pass --overwrite true")
    found = verdicts(table)
    notes: list[str] = []
    loto = _loto(features, notes)
    counts = [tried(g) for _, g in table.groupby("target", sort=True)]
    merges, n_cmp = sum(c[0] for c in counts), sum(c[1] for c in counts)
    summary = ["# Verdicts (merge chosen on validation, judged on test)", ""]
    summary += [v.line for v in found]
    summary += ["", f"The verdicts were chosen from {merges} merge(s) tried on validation, {n_cmp} distinct model(s) (each "
                "value of a parameter list counts; merges with the same weights count once): "
                f"{n_cmp} comparison(s), of which at 95% about {0.05 * n_cmp:.1f} would look significant by chance alone. "
                "Merging effect = merged accuracy - unweighted mean of the selected sources; gain = merged - the best "
                "selected source chosen on validation; margin over the best single model = merged - the best of all "
                "candidate models chosen on validation.", ""]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        plots: list[Path] = []
        for target, group in table.groupby("target", sort=True):
            ranked = distinct(rank(group))  # one order, each model once, one set of baselines for table, chart, verdict
            summary += [f"## {target}", "", target_table(ranked), ""]
            shown = [(_label(r), as_float(r["test_accuracy"]), int(as_float(r["test_n"]) or 0))
                      for _, r in ranked.iterrows()]
            baselines = [(label, t) for label, _, t in baseline_rows(ranked.iloc[0])]
            first = ranked.iloc[0]
            plots += target_chart(shown, baselines, tmp / target, f"{target}: merges ranked on validation, judged on test",
                                  "test", reference=as_float(first["test_best_source_accuracy"]))
        if loto is not None:
            loto.to_csv(tmp / "loto.csv", index=False, float_format="%.6f")
            from merginguriel.report.table_text import to_markdown

            summary += ["## Does a feature predict synergy? Leave-one-target-out accuracy", "", to_markdown(loto, 3), ""]
        summary += [f"note: {n}" for n in notes]
        csv = table.copy()
        for col in ("sources", "weights"):
            csv[col] = csv[col].map(lambda v: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
        csv.to_csv(tmp / "report.csv", index=False, float_format="%.6f")
        (tmp / "summary.md").write_text("\n".join(summary) + "\n", encoding="utf-8")
        write_manifest(tmp, "report", sources=sources or {}, rows=len(table), verdicts=[v.line for v in found],
                       notes=notes, files=sorted(["summary.md", "report.csv", *(p.name for p in plots),
                                                  *(["loto.csv"] if loto is not None else [])]))
    return out, found
