"""`merginguriel report --db results.sqlite`: the report over a sweep's results database, from one command.

It builds the report core's rows from the database (``experiments.frame.results_frame``), adds every baseline with
``table.compare`` (from the NxN matrix of the evaluation split; without one, from the zero-shot accuracies the points
measured themselves), and writes: ``report.csv`` / ``report.md`` and one bar chart per target (the core's
``write_report``: each method against its baselines), ``pivot.csv`` / ``pivot.md`` (target x method accuracy with the
baselines, and the deltas), ``nxn.png`` (the NxN heatmap), ``methods.png`` (method comparison per target),
``effect_vs_features.png`` (the merging effect against each feature) and ``loto.csv`` (leave-one-target-out accuracy of
each feature as a predictor of synergy), plus ``summary.md`` with the tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pandas as pd

from merginguriel.errors import InputError
from merginguriel.io import atomic_dir, write_manifest

PIVOT_BASELINES = ("self", "zs_best", "best_overall", "base")


def _nxn_for(frame: pd.DataFrame, nxn: Optional[str]) -> Optional[Path]:
    if nxn:
        path = Path(nxn)
        path = path / "evaluation_matrix.csv" if path.is_dir() else path
        if not path.is_file():
            raise InputError(f"NxN matrix {path} not found; compute it with `merginguriel nxn --split test` or leave --nxn out")
        return path
    from merginguriel.checkpoints import Layout
    from merginguriel.experiments.point import NXN_FILE

    homes = {(r.backbone, r.root, r.split) for r in frame.itertuples()}
    if len(homes) != 1:
        return None
    backbone, root, split = homes.pop()
    path = Layout.for_backbone(backbone, root).nxn(split) / NXN_FILE
    return path if path.is_file() else None


def _fallback_baselines(frame: pd.DataFrame) -> pd.DataFrame:
    """Baselines from the points' own measurements when there is no NxN matrix (self and best overall unknown)."""
    from merginguriel.report.table import BASELINES

    out = frame.copy()
    out["self"] = math.nan
    out["zs_avg"] = pd.to_numeric(out["source_mean"], errors="coerce")
    out["zs_best"] = pd.to_numeric(out["source_best"], errors="coerce")
    out["zs_best_source"] = None
    out["best_overall"] = math.nan
    out["best_overall_source"] = None
    out["base"] = math.nan
    out["effect"] = out["accuracy"] - out["zs_avg"]
    out["mode"] = out["include_target"].map(lambda inc: "IncTar" if inc else "ExcTar")
    for name in BASELINES:
        out[f"d_{name}"] = out["accuracy"] - out[name]
        out[f"beats_{name}"] = (out["accuracy"] > out[name]).fillna(False).astype(bool)
    return out


def variant_labels(table: pd.DataFrame) -> pd.Series:
    """A column label per row: the method plus whichever of similarity, K, IncTar/ExcTar, weighting and parameters
    vary within the table (so the pivot has one column per distinct configuration)."""
    parts = ["similarity", "num_sources", "mode", "weighting", "params"]
    varying = [p for p in parts if p in table and table[p].astype(str).nunique() > 1]

    def label(row) -> str:
        bits = []
        for p in varying:
            v = row[p]
            bits.append(f"K={v}" if p == "num_sources" else ("" if v in ("{}", None) else str(v)))
        bits = [b for b in bits if b]
        return row["method"] + (f" [{' '.join(bits)}]" if bits else "")

    return table.apply(label, axis=1)


def pivot_tables(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accuracy pivot target x variant with baseline columns, delta pivot: accuracy - best available baseline)."""
    t = table.assign(variant=variant_labels(table))
    acc = t.pivot_table(index="target", columns="variant", values="accuracy", aggfunc="max")
    base = t.groupby("target")[list(PIVOT_BASELINES)].first()
    acc_full = pd.concat([acc, base.add_prefix("baseline: ")], axis=1)
    # The delta is against the strongest baseline we know for the target (best overall zero-shot, else best source).
    ref = base["best_overall"].where(base["best_overall"].notna(), base["zs_best"])
    delta = acc.sub(ref, axis=0).add_prefix("Δ ")
    return acc_full, delta


def _plots(table: pd.DataFrame, acc: pd.DataFrame, feats: pd.DataFrame, nxn_path: Optional[Path], out: Path) -> list[Path]:
    from merginguriel.report.plots import _pyplot, _save, heatmap

    paths = []
    if nxn_path is not None:
        matrix = pd.read_csv(nxn_path, index_col=0)
        paths.append(heatmap(matrix, out / "nxn.png", "NxN transfer (row: source model, column: evaluated locale)",
                             "evaluated locale", "source model"))
    plt = _pyplot()
    variants = [c for c in acc.columns if not str(c).startswith("baseline: ")]
    baselines = [c for c in acc.columns if str(c).startswith("baseline: ") and acc[c].notna().any()]
    cols = variants + baselines
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(acc.index) * max(1, len(cols)) / 4), 4.5))
    try:
        width = 0.8 / max(1, len(cols))
        palette = plt.get_cmap("tab20")  # up to 20 distinct colours (the default cycle repeats after 10)
        for i, c in enumerate(cols):
            ax.bar([x + i * width for x in range(len(acc.index))], acc[c].fillna(0).tolist(), width,
                   label=str(c), hatch="//" if c in baselines else None, color=palette(i % 20))
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(acc.index))], list(acc.index))
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title("method comparison per target")
        ax.legend(fontsize=7, ncol=2)
        paths.append(_save(fig, out / "methods.png"))
    finally:
        plt.close(fig)
    from merginguriel.experiments.features import FEATURES

    usable = [f for f in FEATURES if not feats.empty and f in feats and pd.to_numeric(feats[f], errors="coerce").notna().any()]
    if usable and "merging_effect" in feats and feats["merging_effect"].notna().any():
        n = len(usable)
        ncols = min(3, n)
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.2 * nrows), squeeze=False)
        try:
            for ax, f in zip(axes.flat, usable):
                sub = feats[[f, "merging_effect", "target"]].dropna()
                for target, g in sub.groupby("target"):
                    ax.scatter(g[f], g["merging_effect"], label=target, s=18)
                ax.axhline(0.0, color="grey", lw=0.8)
                ax.set_xlabel(f)
                ax.set_ylabel("merging effect")
            for ax in list(axes.flat)[n:]:
                ax.axis("off")
            axes.flat[0].legend(fontsize=6)
            fig.suptitle("merging effect (merged - mean source accuracy) against each feature")
            paths.append(_save(fig, out / "effect_vs_features.png"))
        finally:
            plt.close(fig)
    return paths


def _base_accuracy(frame, nxn_path: Path) -> Optional[dict[str, float]]:
    """The untrained shared base's accuracy on each target (evaluated once per split, cached beside the NxN matrix)."""
    import json as _json

    from merginguriel.checkpoints import Layout
    from merginguriel.data.config import DataConfig
    from merginguriel.report.baselines import base_accuracies
    from merginguriel.report.cli import BASE_CACHE

    first = frame.iloc[0]
    base = Layout.for_backbone(first["backbone"], first["root"]).base
    if not (base / "manifest.json").is_file():
        return None
    data = _json.loads(first["data"]) if isinstance(first["data"], str) else dict(first["data"] or {})
    data = DataConfig(**{"root": first["root"], **{k: v for k, v in data.items() if k in DataConfig.__dataclass_fields__}})
    split = str(first["split"] or "test")
    return base_accuracies(base, sorted(set(frame["target"])), split, data, nxn_path.parent / BASE_CACHE)


def build_sweep_report(
    db: str,
    output: str = "report",
    nxn: Optional[str] = None,
    sweep: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Report over a results database: tables against baselines, pivots, CSV/markdown, plots, feature LOTO.

    Args:
        db: the results database a sweep wrote (``merginguriel experiment``).
        output: output folder (written atomically).
        nxn: the NxN ``evaluation_matrix.csv`` (or its folder) of the split the points were evaluated on; default:
            ``<root>/<backbone>/nxn/<split>`` of the points when it exists, else the points' own source accuracies.
        sweep: only this sweep's rows (default: every row of the database).
        overwrite: replace an existing output folder.
    """
    from merginguriel.experiments.effect import loto_accuracy
    from merginguriel.experiments.frame import features_frame, results_frame
    from merginguriel.report.table import _to_markdown, compare, write_report

    if not Path(db).is_file():
        raise InputError(f"results database {db} not found; run a sweep first (`merginguriel experiment --config ...`)")
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; choose another --output or pass --overwrite true")
    frame = results_frame(db, sweep)
    if frame.empty:
        raise InputError(f"no finished points in {db}{f' for sweep {sweep!r}' if sweep else ''}; run the sweep first")
    nxn_path = _nxn_for(frame, nxn)
    notes = []
    table = None
    if nxn_path is not None:
        from merginguriel.similarity.real import read_nxn

        try:
            table = compare(frame, read_nxn(nxn_path), _base_accuracy(frame, nxn_path))
        except InputError as err:
            notes.append(f"NxN baselines unavailable ({err}); using the points' own source accuracies")
    else:
        notes.append("no NxN matrix for the evaluation split: self and best-overall baselines left empty "
                     "(run `merginguriel nxn --split test`, or pass --nxn)")
    if table is None:
        table = _fallback_baselines(frame)
    acc, delta = pivot_tables(table)
    feats = features_frame(db)
    if sweep is not None and not feats.empty:
        feats = feats[feats["key"].isin(set(frame["key"]))]
    loto = loto_accuracy(feats)
    loto = loto[loto["points"] > 0].reset_index(drop=True)  # features never measured (or no merging effect) say nothing
    with atomic_dir(out, overwrite=overwrite) as tmp:
        paths = write_report(table, tmp)
        acc.to_csv(tmp / "pivot.csv", float_format="%.6f")
        delta.to_csv(tmp / "pivot_delta.csv", float_format="%.6f")
        loto.to_csv(tmp / "loto.csv", index=False, float_format="%.6f")
        if not feats.empty:
            feats.to_csv(tmp / "features.csv", index=False, float_format="%.6f")
        plots = _plots(table, acc, feats, nxn_path, tmp)
        summary = [
            "## Accuracy: target x method (with baselines)\n", _to_markdown(acc.reset_index(), 4), "",
            "## Delta against the strongest baseline (best overall zero-shot, else best source)\n",
            _to_markdown(delta.reset_index(), 4), "",
            "## Does a feature predict synergy? Leave-one-target-out accuracy\n",
            _to_markdown(loto, 3) if not loto.empty else
            "(no points with both features and a merging effect: enable `features` and give the sources' accuracies "
            "through the split's NxN matrix or `evaluate.sources: true`)", "",
        ]
        summary += [f"note: {n}" for n in notes]
        (tmp / "summary.md").write_text("\n".join(summary) + "\n", encoding="utf-8")
        write_manifest(tmp, "report", db=str(Path(db).resolve()), sweep=sweep, nxn=str(nxn_path) if nxn_path else None,
                       rows=len(table), notes=notes,
                       files=sorted({p.name for p in paths.values()} | {p.name for p in plots}
                                    | {"pivot.csv", "pivot_delta.csv", "loto.csv", "summary.md"}))
    print((out / "summary.md").read_text(encoding="utf-8"))
    print("plots: " + ", ".join(str(out / p.name) for p in plots))
    return out


def main(argv: list[str]) -> int:
    """`merginguriel report --db results.sqlite [--output report] [--nxn matrix.csv] [--sweep name]`."""
    from merginguriel.cli.function import parse_function_args

    out = build_sweep_report(**parse_function_args(build_sweep_report, argv, "merginguriel report"))
    print(f"report written to {out} (report.csv, report.md, pivot.csv, summary.md, plots)")
    return 0
