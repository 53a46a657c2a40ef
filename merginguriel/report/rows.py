"""Report rows: one per merged model, from a sweep's results database or from merged models' manifests.

Both sources hold the same records (merginguriel.jobs.judge): per split, the merged model's accuracy and every
baseline on the same rows. A row flattens them: ``val_*`` columns come from the validation split (where choices are
made), ``test_*`` from the test split (the final number).

Columns: target, method, similarity, num_sources, include_target, weighting, params (as the job gave them: a list of
values is a list), chosen (the values chosen on validation from those lists, JSON; empty without lists), candidates
(how many settings the job merged and tried on validation: 1 without lists), hash (the merged weights' hash) and
candidate_hashes (one per candidate, space-separated), sources, weights, run, key, manifest; per split prefix (``val_``, ``test_``): accuracy, macro_f1, n, source_mean, source_mean_weighted,
merging_effect, best_source, best_source_accuracy, gain, gain_ci_low, gain_ci_high, gain_p, oracle_source,
oracle_source_accuracy, best_overall, best_overall_accuracy, overall_delta, overall_ci_low, overall_ci_high,
overall_p, self_accuracy, self_delta, self_ci_low, self_ci_high, self_p, base_accuracy and ensemble_<name> for the
four ensembles.
"""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path
from typing import Optional

import pandas as pd

from merginguriel.errors import InputError

PREFIX = {"validation": "val", "test": "test"}
SPLIT_FIELDS = ("accuracy", "macro_f1", "n", "source_mean", "source_mean_weighted", "merging_effect", "best_source",
                "best_source_accuracy", "gain", "oracle_source", "oracle_source_accuracy", "best_overall",
                "best_overall_accuracy", "self_accuracy", "base_accuracy")
PAIRED = {"vs_self": "self", "vs_best_overall": "overall"}  # paired comparisons: record key -> column stem
ENSEMBLES = ("majority", "weighted_majority", "soft_vote", "logit_vote")


def flatten(meta: dict, evaluation: dict[str, dict]) -> dict:
    """One report row from a merge's identity (``meta``) and its per-split records."""
    row = dict(meta)
    for split, prefix in PREFIX.items():
        rec = evaluation.get(split) or {}
        for f in SPLIT_FIELDS:
            row[f"{prefix}_{f}"] = rec.get(f)
        ci = rec.get("gain_ci") or [None, None]
        row[f"{prefix}_gain_ci_low"], row[f"{prefix}_gain_ci_high"] = ci
        row[f"{prefix}_gain_p"] = rec.get("gain_p")
        for key, stem in PAIRED.items():
            vs = rec.get(key) or {}
            row[f"{prefix}_{stem}_delta"] = vs.get("delta")
            row[f"{prefix}_{stem}_ci_low"], row[f"{prefix}_{stem}_ci_high"] = vs.get("ci_low"), vs.get("ci_high")
            row[f"{prefix}_{stem}_p"] = vs.get("p_value")
        for name in ENSEMBLES:
            row[f"{prefix}_ensemble_{name}"] = (rec.get("ensembles") or {}).get(name)
    return row


def _meta(config: dict, selection: dict, key: str, manifest: Optional[str], record: dict) -> dict:
    """A row's identity from the job's config, the selection, and the merge ``record`` (its manifest, or a sweep
    row's metrics: both hold ``hash`` and, for a job with parameter lists, ``choice``)."""
    sel_cfg = config.get("selection") or {}
    merge = config.get("merge") or {}
    sources = list(selection.get("sources") or [])
    choice = record.get("choice") or {}
    tried = choice.get("candidates") or [{"hash": record.get("hash")}]
    return {
        "target": config.get("target"),
        "method": merge.get("method"),
        "similarity": sel_cfg.get("similarity"),
        "num_sources": len(sources),
        "include_target": bool(sel_cfg.get("include_target")),
        "weighting": selection.get("weighting", selection.get("origin")),
        "params": json.dumps(merge.get("params") or {}, sort_keys=True),
        "chosen": json.dumps(choice["chosen"], sort_keys=True) if choice else "",
        "candidates": len(tried),
        "hash": record.get("hash") or "",
        "candidate_hashes": " ".join(t.get("hash") or "" for t in tried),
        "sources": sources,
        "weights": [float(w) for w in selection.get("weights") or []],
        "run": key[:12],
        "key": key,
        "manifest": manifest,
    }


def rows_from_db(db_path: str, sweep: Optional[str] = None) -> pd.DataFrame:
    """Finished points of a results database (opened read-only), one row each."""
    from merginguriel.experiments.db import ResultsDB

    with ResultsDB(db_path, readonly=True) as db:
        rows = []
        for r in db.rows(sweep=sweep, status="done"):
            metrics = r["metrics"] or {}
            manifest = db.resolve(r["manifest"])
            meta = _meta(r["config"], r["selection"] or {}, r["key"], str(manifest) if manifest else None, metrics)
            rows.append({**flatten(meta, metrics.get("splits") or {}), "sweep": r["sweep"]})
    return pd.DataFrame(rows)


def find_manifests(patterns: list[str]) -> list[Path]:
    """Every merged manifest named by ``patterns``: manifest files, merged folders, folders above them, or globs."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern), recursive=True)) if glob.has_magic(str(pattern)) else [str(pattern)]
        for m in map(Path, matches):
            if m.is_file() and m.name == "manifest.json":
                candidates = [m]
            elif m.is_dir():
                candidates = [m / "manifest.json"] if (m / "manifest.json").is_file() else sorted(m.rglob("manifest.json"))
            else:
                raise InputError(f"{m} is neither a merged model folder nor a manifest.json; check --merged")
            for c in candidates:
                try:
                    kind = json.loads(c.read_text(encoding="utf-8")).get("kind")
                except (OSError, ValueError, AttributeError):
                    kind = None
                if kind == "merged" and c not in found:
                    found.append(c)
    if not found:
        raise InputError(f"no merged models (manifests of kind 'merged') under {', '.join(map(str, patterns))}; "
                         "run `merginguriel merge` first")
    return found


def rows_from_manifests(patterns: list[str], splits: tuple[str, ...] = ("validation", "test")) -> pd.DataFrame:
    """Merged models named by ``patterns``, one row each; a model not yet judged on ``splits`` is judged now (its
    weights must still be there) and the judgement is added to its manifest."""
    from merginguriel.io import read_manifest
    from merginguriel.jobs.spec import job_from_dict

    rows = []
    for path in find_manifests(patterns):
        manifest = read_manifest(path.parent)
        job_record = manifest.get("job") or {}
        if not job_record.get("config"):
            raise InputError(f"{path} records no merge job (made by an older merginguriel); merge it again with `merginguriel merge`")
        job = job_from_dict(job_record["config"])
        if not job.target:
            raise InputError(f"{path} records no target locale; the report compares merges for a target (merge with --target)")
        evaluation = dict(manifest.get("evaluation") or {})
        missing = [s for s in splits if s not in evaluation]
        if missing:
            evaluation.update(_judge_now(path.parent, job, manifest, missing))
        rows.append(flatten(_meta(job_record["config"], manifest.get("selection") or {}, job_record.get("key", ""), str(path),
                                  manifest), evaluation))
    return pd.DataFrame(rows)


def _judge_now(folder: Path, job, manifest: dict, splits: list[str]) -> dict:
    """Judge a merged model the report finds without a judgement on ``splits``: the job it records, checked, with the
    sources its manifest records."""
    from merginguriel.checkpoints import is_finished
    from merginguriel.io import write_json_atomic
    from merginguriel.jobs.judge import judge, judged_rows, plan_judgement
    from merginguriel.jobs.run import check_rows
    from merginguriel.jobs.select import Chosen

    if not is_finished(folder):
        raise InputError(f"{folder} has no {', '.join(splits)} judgement and no weights to evaluate; merge it again")
    checked = job.check()
    check_rows(checked, judged_rows(checked.target, list(splits)))
    srcs = manifest.get("sources") or []
    chosen = Chosen([s.get("locale") for s in srcs], [Path(s["path"]) for s in srcs],
                    [float(w) for w in manifest.get("weights_normalised") or [s["weight"] for s in srcs]],
                    manifest.get("selection") or {})
    result = judge(plan_judgement(checked, list(splits)), folder, chosen)
    manifest["evaluation"] = {**(manifest.get("evaluation") or {}), **result}
    write_json_atomic(folder / "manifest.json", manifest)
    return result


def as_float(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def features_from_db(db_path: str, sweep: Optional[str] = None) -> pd.DataFrame:
    """Each finished point's merging-effect features beside its measured merging effect on validation (the split the
    features and every choice come from)."""
    from merginguriel.experiments.db import ResultsDB

    with ResultsDB(db_path, readonly=True) as db:
        feats = {f["key"]: f for f in db.features()}
        rows = []
        for r in db.rows(sweep=sweep, status="done"):
            f = feats.get(r["key"])
            if f is None:
                continue
            rec = ((r["metrics"] or {}).get("splits") or {}).get("validation") or {}
            rows.append({"key": r["key"], "target": r["target"], "method": r["method"], "origin": f["origin"],
                         "merging_effect": rec.get("merging_effect"), **f["features"]})
    return pd.DataFrame(rows)
