"""Result rows (``table.RESULT_COLUMNS``) from merged models' manifests.

A merged manifest (kind ``merged``) records the target, method, sources with weights, ``include_target`` and the
selection (similarity kind, K); ``merge --evaluate true`` adds ``evaluation = {"split", "metrics": {target: {...}}}``.
A merged folder whose manifest has no evaluation (or one on another split than the report's) is evaluated here (its
weights must still be there).
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pandas as pd

from merginguriel.errors import InputError


def find_manifests(patterns: list[str]) -> list[Path]:
    """Every merged manifest named by ``patterns``: manifest files, merged folders, folders above them, or globs."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern), recursive=True)) if glob.has_magic(str(pattern)) else [str(pattern)]
        if not matches:
            raise InputError(f"--merged {pattern!r} matches nothing; pass merged folders, manifest.json files or a glob")
        for m in map(Path, matches):
            if m.is_file() and m.name == "manifest.json":
                candidates = [m]
            elif m.is_dir():
                candidates = [m / "manifest.json"] if (m / "manifest.json").is_file() else sorted(m.rglob("manifest.json"))
            else:
                raise InputError(f"{m} is neither a merged model folder nor a manifest.json; check --merged")
            for c in candidates:
                if _kind(c) == "merged" and c not in found:
                    found.append(c)
    if not found:
        raise InputError(f"no merged manifests (kind 'merged') under {', '.join(map(str, patterns))}; run `merginguriel merge` first")
    return found


def _kind(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def manifest_accuracy(manifest: dict, target: str) -> tuple[float | None, str | None]:
    """(accuracy, split) recorded in a merged manifest, or (None, None)."""
    for key in ("evaluation", "metrics"):
        ev = manifest.get(key)
        if not isinstance(ev, dict):
            continue
        metrics = ev.get("metrics", ev)
        if isinstance(metrics.get(target), dict) and "accuracy" in metrics[target]:
            return float(metrics[target]["accuracy"]), ev.get("split")
        if "accuracy" in metrics:
            return float(metrics["accuracy"]), ev.get("split")
    return None, None


def row_from_manifest(path: Path, split: str, data=None, device: str = "auto") -> dict:
    """One result row; a merged model without a recorded evaluation on ``split`` is evaluated now."""
    manifest = json.loads(path.read_text(encoding="utf-8"))
    target = manifest.get("target")
    if not target:
        raise InputError(f"{path} records no target locale; the report compares merges for a target (merge with --target)")
    sources = [s.get("locale") for s in manifest.get("sources", [])]
    if not sources or any(s is None for s in sources):
        raise InputError(f"{path}: every source needs a locale to be compared with the NxN matrix")
    weights = manifest.get("weights_normalised") or [float(s.get("weight", 0.0)) for s in manifest["sources"]]
    selection = manifest.get("selection") or {}
    accuracy, acc_split = manifest_accuracy(manifest, target)
    if accuracy is None or (acc_split is not None and acc_split != split):
        from merginguriel.data.config import DataConfig
        from merginguriel.evaluation.evaluate import evaluate_checkpoint

        folder = path.parent
        if not any(folder.glob("*.safetensors")):
            raise InputError(
                f"{folder} has no {split} accuracy for {target} in its manifest and no weights to evaluate; "
                "rerun the merge with --evaluate true --eval_split " + split
            )
        accuracy = float(evaluate_checkpoint(folder, [target], split, data or DataConfig(), device=device)[target]["accuracy"])
    include = manifest.get("include_target", selection.get("include_target"))
    return {
        "target": target,
        "method": manifest.get("method"),
        "similarity": selection.get("similarity"),
        "num_sources": len(sources),
        "include_target": bool(include) if include is not None else target in sources,
        "accuracy": accuracy,
        "sources": sources,
        "weights": [float(w) for w in weights],
        "run": path.parent.name,
        "manifest_path": str(path),
    }


def rows_from_manifests(patterns: list[str], split: str, data=None, device: str = "auto") -> pd.DataFrame:
    """The result frame of every merged manifest named by ``patterns``."""
    return pd.DataFrame([row_from_manifest(p, split, data, device) for p in find_manifests(patterns)])


def base_of(paths: list[str | os.PathLike]) -> Path:
    """The shared base the merged manifests record (all must agree)."""
    bases = {json.loads(Path(p).read_text(encoding="utf-8")).get("base", {}).get("path") for p in paths}
    bases.discard(None)
    if len(bases) != 1:
        raise InputError(
            f"the merged models record {len(bases)} different shared bases ({', '.join(map(str, bases)) or 'none'}); "
            "report merges of one backbone at a time, or pass --base"
        )
    return Path(bases.pop())
