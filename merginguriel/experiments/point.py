"""One sweep point: a merge job (merginguriel.jobs.run_job) plus the sweep's bookkeeping -- the manifest copy, the
merging-effect features, and removing a merged model the point made once it has been judged.

The merged model goes where the job puts it (``Layout.merged(target, job.run_name())``), so a point retried after a
crash finds its own finished merge and reuses it, and a merge the user already made for the same job is reused (and
kept) too.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from merginguriel.jobs.spec import MergeJob


@dataclass
class PointResult:
    """What a finished point records: the judgement per split, the merge manifest, the selection, timings, features."""

    metrics: dict
    manifest: Optional[Path]
    selection: dict
    timings: dict
    features: dict = field(default_factory=dict)


def run_point(job: MergeJob, keep_models: bool = False, manifests_dir: Optional[Path] = None) -> PointResult:
    """Run one point's job; returns what its database row records.

    A merged model a sweep created is deleted after evaluation unless ``keep_models`` (its manifest is first
    copied to ``manifests_dir/<key>.json``, so the row keeps a readable record of how the model was made).
    """
    from merginguriel.io import write_json_atomic
    from merginguriel.jobs.run import output_lock, run_job

    t0 = time.perf_counter()
    result = run_job(job, origin="sweep")
    timings = dict(result.timings)
    timings["merge_reused"] = float(result.reused)
    out = result.output
    # From here on, the folder is read only through the manifest run_job returned: another sweep judging the same
    # point may remove the folder as soon as run_job lets go of it.
    manifest_path: Optional[Path] = out / "manifest.json"
    if manifests_dir is not None:
        manifest_path = write_json_atomic(Path(manifests_dir) / f"{result.plan.checked.key()}.json", result.manifest)
    made_by_sweep = ((result.manifest.get("job") or {}).get("origin")) == "sweep"
    if not keep_models and made_by_sweep:  # a merge the user made for the same job is theirs to keep
        with output_lock(out):  # a concurrent sweep judging the same merge holds this lock until it is done
            shutil.rmtree(out, ignore_errors=True)
        if manifests_dir is None:
            manifest_path = None
    t = time.perf_counter()
    features: dict = {}
    if result.plan.checked.evaluate.features:
        from merginguriel.experiments.features import point_features

        features = point_features(result.plan.checked, result.plan.chosen)
    timings["features_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    # the merged weights' hash (equal merges are one model) and, when a parameter list was tried, the choice
    metrics = {"splits": result.evaluation, "hash": result.manifest.get("hash"), "choice": result.manifest.get("choice")}
    return PointResult(metrics=metrics, manifest=manifest_path, selection=result.plan.chosen.record, timings=timings,
                       features=features)
