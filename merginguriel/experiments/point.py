"""One sweep point, select -> merge -> test, as one function of its resolved config (testable alone, no database).

The merged model goes to ``Layout.merged(target, "sweep-<key[:12]>")``: the run name is derived from the point's config
hash, so a point retried after a crash finds its own finished merge (and reuses it) or its own half-written temporary
folder (and removes it), and never collides with another point.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError
from merginguriel.experiments.grid import point_key
from merginguriel.checkpoints import Layout

# Ensemble baselines run as a "method" of the point: all four votes from one pass of the K sources' logits.
ENSEMBLE_METHOD = "ensemble"
NXN_FILE = "evaluation_matrix.csv"
# The studies' names for the linear merge (methods.md): `similarity` weights by the selection's scores, `average` 1/K.
METHOD_ALIASES = {"similarity": ("linear", {"weighting": "similarity"}), "average": ("linear", {"weighting": "average"})}


def engine_method(method: str, params: dict) -> tuple[str, dict]:
    """The merge engine's (method, params) for a sweep's method name (aliases resolved unless the engine has the name)."""
    from merginguriel.merging import METHODS

    if method in METHOD_ALIASES and method not in METHODS:
        name, implied = METHOD_ALIASES[method]
        return name, {**implied, **params}
    return method, dict(params)


@dataclass
class PointResult:
    """What a finished point records: metrics on the target, the merge manifest, the selection, timings, features."""

    metrics: dict
    manifest: Optional[str]
    selection: dict
    timings: dict
    features: dict = field(default_factory=dict)


def data_config(config: dict) -> DataConfig:
    d = config["data"]
    return DataConfig(source=d["source"], data_path=d.get("data_path"), root=str(config["root"]), max_length=int(d["max_length"]))


def nxn_csv(config: dict, split: str = "validation") -> Optional[Path]:
    """The NxN matrix a point uses for REAL similarity (validation: the test split stays unseen), if present."""
    given = config["selection"].get("nxn_csv")
    if given and split == "validation":
        return Path(given)
    path = Layout.for_backbone(config["backbone"], config["root"]).nxn(split) / NXN_FILE
    return path if path.is_file() else None


def select(config: dict):
    """Run the selection of a point: ``select_for_target`` over the fine-tuned candidates, then the optional
    similarity x compatibility reweighting."""
    from merginguriel.compatibility.weighting import WEIGHTING, apply_compatibility, compatibility_for
    from merginguriel.similarity import select_for_target

    sel = config["selection"]
    layout = Layout.for_backbone(config["backbone"], config["root"])
    candidates = sel.get("candidates") or layout.finetuned_locales()
    if not candidates:
        raise InputError(
            f"no fine-tuned models under {layout.home / 'finetuned'} to select sources from; run `merginguriel fit` "
            "for some locales first, or set backbone/root to where they are"
        )
    weighting = sel["weighting"]
    nxn = nxn_csv(config)
    if sel["similarity"] == "real" and nxn is None:
        raise InputError(
            f"REAL similarity needs the validation NxN matrix, expected at {layout.nxn('validation') / NXN_FILE}: "
            f"run `merginguriel nxn --backbone {config['backbone']} --root {config['root']}`, or set selection.nxn_csv"
        )
    selection = select_for_target(
        config["target"],
        sel["similarity"],
        int(sel["num_sources"]),
        bool(sel["include_target"]),
        "scores" if weighting == WEIGHTING else weighting,
        list(candidates),
        nxn_csv=str(nxn) if nxn else None,
        **{"root": config["root"], **dict(sel.get("options") or {})},
    )
    if weighting == WEIGHTING:
        compat = compatibility_for(
            list(selection.sources),
            layout.base,
            {s: layout.finetuned(s) for s in selection.sources},
            sel.get("compatibility_csv"),
        )
        selection = apply_compatibility(selection, compat)
    return selection


def selection_record(selection: Any) -> dict:
    if hasattr(selection, "to_dict"):
        return selection.to_dict()
    return dataclasses.asdict(selection) if dataclasses.is_dataclass(selection) else dict(selection)


def _remove_stale_temporaries(output: Path) -> None:
    """A merge killed mid-write leaves ``.<run>.tmp-<pid>-<id>`` beside its output; this point owns those names."""
    if output.parent.is_dir():
        for tmp in output.parent.glob(f".{output.name}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def merge_point(config: dict, selection: Any, output: Path) -> Path:
    """Merge the selected sources into ``output`` (through the merge engine, or AdaMerging)."""
    from merginguriel.merging import MergeSpec, Source, merge

    layout = Layout.for_backbone(config["backbone"], config["root"])
    m = config["merge"]
    method, params = engine_method(m["method"], dict(m.get("params") or {}))
    spec = MergeSpec(
        base=layout.base,
        sources=[Source(path=layout.finetuned(s), locale=s, weight=float(w)) for s, w in zip(selection.sources, selection.weights)],
        method=method,
        params=params,
        output=output,
        exclude=list(m.get("exclude") or []),
        device=config.get("device", "auto"),
        dtype=m.get("dtype", "float32"),
        seed=int(m.get("seed", 42)),
        target=config["target"],
        selection=selection_record(selection),
        overwrite=True,
        include_target=bool(config["selection"]["include_target"]),
        progress=False,
    )
    if m["method"] == "adamerging":
        from merginguriel.adamerging.options import AdaMergingOptions, TrainerOptions
        from merginguriel.adamerging.run import run_adamerging

        return Path(
            run_adamerging(spec, AdaMergingOptions(**config.get("adamerging", {})), TrainerOptions(**config.get("trainer", {})), data_config(config))
        )
    return Path(merge(spec))


def source_accuracies_on_target(config: dict, sources: list[str], split: str) -> Optional[list[float]]:
    """acc(source on target) on the point's evaluation split: from that split's NxN matrix when it exists, else (with
    ``evaluate.sources: true``) by evaluating each source now; None otherwise. The merging effect needs these."""
    from merginguriel.experiments.features import read_nxn, source_accuracies

    accs = source_accuracies(read_nxn(nxn_csv(config, split)), sources, config["target"])
    if accs is not None or not config["evaluate"].get("sources"):
        return accs
    from merginguriel.evaluation.evaluate import evaluate_checkpoint

    layout = Layout.for_backbone(config["backbone"], config["root"])
    ev = config["evaluate"]
    return [
        float(evaluate_checkpoint(layout.finetuned(s), [config["target"]], split=split, data=data_config(config),
                                  batch_size=int(ev["batch_size"]), device=config.get("device", "auto"))[config["target"]]["accuracy"])
        for s in sources
    ]


def run_point(config: dict, keep_models: bool = False, manifests_dir: Optional[Path] = None) -> PointResult:
    """select -> merge -> test for one resolved point config; returns what its database row records.

    The merged model is deleted after evaluation unless ``keep_models``; its manifest is first copied to
    ``manifests_dir/<key>.json`` so the row keeps a readable record of how the model was made.
    """
    from merginguriel.checkpoints import is_finished
    from merginguriel.evaluation.evaluate import evaluate_checkpoint

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    key = point_key(config)
    target = config["target"]
    layout = Layout.for_backbone(config["backbone"], config["root"])
    data = data_config(config)
    ev = config["evaluate"]

    selection = select(config)
    timings["select_s"] = time.perf_counter() - t0
    record = selection_record(selection)

    if config["merge"]["method"] == ENSEMBLE_METHOD:
        from merginguriel.ensembles import evaluate_ensembles

        t = time.perf_counter()
        results = evaluate_ensembles(
            [layout.finetuned(s) for s in selection.sources], list(selection.weights), target, ev["split"], data,
            batch_size=int(ev["batch_size"]), device=config.get("device", "auto"),
        )
        timings["evaluate_s"] = time.perf_counter() - t
        timings["merge_s"] = 0.0
        metrics = {"split": ev["split"], "ensembles": results}
        manifest_path = None
    else:
        output = layout.merged(target, f"sweep-{key[:12]}")
        t = time.perf_counter()
        reused = is_finished(output)
        if not reused:
            _remove_stale_temporaries(output)
            output = merge_point(config, selection, output)
        timings["merge_s"] = time.perf_counter() - t
        timings["merge_reused"] = float(reused)
        t = time.perf_counter()
        result = evaluate_checkpoint(output, [target], split=ev["split"], data=data, batch_size=int(ev["batch_size"]), device=config.get("device", "auto"))
        timings["evaluate_s"] = time.perf_counter() - t
        metrics = {"split": ev["split"], **result[target]}
        manifest_path = str(output / "manifest.json")
        if manifests_dir is not None:
            manifests_dir.mkdir(parents=True, exist_ok=True)
            from merginguriel.io import atomic_write_text

            copy = manifests_dir / f"{key}.json"
            atomic_write_text(copy, (output / "manifest.json").read_text(encoding="utf-8"))
            manifest_path = str(copy)
        if not keep_models:
            shutil.rmtree(output, ignore_errors=True)

    t = time.perf_counter()
    accs = source_accuracies_on_target(config, list(selection.sources), ev["split"])
    timings["sources_s"] = time.perf_counter() - t
    if accs is not None:
        metrics["source_accuracy"] = dict(zip(selection.sources, accs))
        metrics["source_mean"] = sum(accs) / len(accs)
        metrics["source_best"] = max(accs)
        if "accuracy" in metrics:
            metrics["merging_effect"] = metrics["accuracy"] - metrics["source_mean"]

    t = time.perf_counter()
    features: dict = {}
    if config.get("features", {}).get("enabled", True):
        from merginguriel.experiments.features import point_features

        features = point_features(config, selection)
    timings["features_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    timings["overhead_s"] = (
        timings["total_s"] - timings["merge_s"] - timings["evaluate_s"] - timings["features_s"] - timings["sources_s"]
    )
    return PointResult(metrics=metrics, manifest=manifest_path, selection=record, timings=timings, features=features)
