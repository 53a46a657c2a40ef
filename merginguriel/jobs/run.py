"""The one function that runs a merge job: choose the sources -> compute statistics on demand -> merge (the streaming
engine, or AdaMerging) -> judge on the job's splits.

The merged model goes to ``Layout.merged(target, job.run_name())`` unless an output is given. A finished output made
by the same job from the same inputs (base and source weights unchanged) is reused, so a rerun, or a rerun that only
adds evaluation, never merges again; an output whose inputs changed needs ``overwrite``. Merges into one output are
serialised by a lock file, and the hidden temporaries of killed runs are removed first.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from merginguriel.errors import InputError
from merginguriel.jobs.select import Chosen, choose_sources
from merginguriel.jobs.spec import ADAMERGING, MergeJob


@dataclass
class JobPlan:
    """A job resolved: its sources and weights, the engine's method and parameters, and where the output goes."""

    job: MergeJob
    chosen: Chosen
    method: str
    params: dict
    output: Path
    derived: bool = True  # the output path is the job's own (not one the user gave)

    def describe(self) -> str:
        lines = [f"merge job {self.job.key()[:12]}: {self.job.describe()}",
                 f"  method: {self.job.merge.method} -> {self.method} {self.params}"]
        total = sum(self.chosen.weights)
        for name, w in zip(self.chosen.names, self.chosen.weights):
            lines.append(f"  source {name:<8} weight {w / total:.4f}")
        for warning in self.chosen.warnings:
            lines.append(f"  warning: {warning}")
        lines.append(f"  output: {self.output}")
        return "\n".join(lines)


@dataclass
class JobResult:
    """What a finished job reports: the plan, whether the merge was reused, the judgement per split, timings, and the
    output's manifest as it was when the job let go of the output (a concurrent sweep may remove the folder after)."""

    plan: JobPlan
    reused: bool
    evaluation: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    @property
    def output(self) -> Path:
        return self.plan.output


def plan_job(job: MergeJob, output: Optional[str | Path] = None, run: Optional[str] = None) -> JobPlan:
    """Check the job and choose its sources; nothing is written."""
    job.check()
    chosen = choose_sources(job)
    if job.merge.method == ADAMERGING:
        method, params = ADAMERGING, {}
    else:
        method, params = job.engine_method()
        if method in ("linear", "dare_linear") and "weighting" not in params:
            params["weighting"] = chosen.record["origin"]  # similarity, manual or average: where the weights came from
    if output is not None:
        out = Path(output)
    else:
        out = job.layout.merged(job.target or "untargeted", run or job.run_name())
    return JobPlan(job, chosen, method, params, out, derived=output is None)


def engine_spec(plan: JobPlan, overwrite: bool = False, progress: bool = False, memory_mb: float = 256.0,
                shard_mb: float = 2048.0, origin: str = "merge"):
    """The merge engine's input for a plan."""
    from merginguriel.merging.spec import MergeSpec, Source

    job = plan.job
    include = job.selection.include_target
    if job.selection.similarity:
        include = bool(include)
    return MergeSpec(
        base=job.layout.base,
        sources=[Source(p, loc, w) for loc, p, w in zip(plan.chosen.locales, plan.chosen.paths, plan.chosen.weights)],
        method=plan.method, params=plan.params, output=plan.output, exclude=list(job.merge.exclude or []),
        device=job.device, dtype=job.merge.dtype, seed=job.merge.seed, target=job.target, selection=plan.chosen.record,
        overwrite=overwrite, include_target=include, memory_mb=memory_mb, shard_mb=shard_mb, progress=progress,
        job={"key": job.key(), "model_key": job.model_key(), "origin": origin, "config": job.to_dict()},
    )


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``output`` (released when the process dies): one merge per output at a time."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output.parent / f".{output.name}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _changed_inputs(manifest: dict, plan: JobPlan) -> list[str]:
    """Why a finished output cannot stand for this job: another job made it, or its base or sources changed since."""
    from merginguriel.io import checkpoint_ref

    recorded_job = (manifest.get("job") or {}).get("model_key")
    if recorded_job != plan.job.model_key():
        return ["it was made by another merge job" if recorded_job else "it records no merge job"]
    why = []
    base = manifest.get("base") or {}
    if base.get("hash") != checkpoint_ref(plan.job.layout.base)["hash"]:
        why.append("the shared base changed")
    for rec in manifest.get("sources") or []:
        if not Path(rec["path"]).is_dir() or checkpoint_ref(rec["path"])["hash"] != rec.get("hash"):
            why.append(f"source {rec.get('locale') or rec['path']} changed")
    return why


def _merge(plan: JobPlan, overwrite: bool, progress: bool, memory_mb: float, shard_mb: float, origin: str) -> None:
    job = plan.job
    spec = engine_spec(plan, overwrite, progress, memory_mb, shard_mb, origin)
    if plan.method == ADAMERGING:
        from merginguriel.adamerging.run import run_adamerging

        run_adamerging(spec, job.adamerging_options, job.trainer_options, job.data_config)
        return
    if job.needs_statistics():
        from merginguriel.statistics.cache import ensure_statistics

        spec = ensure_statistics(spec, job.data_config, job.layout)
    from merginguriel.merging.engine import merge

    merge(spec)


def run_job(
    job: MergeJob,
    output: Optional[str | Path] = None,
    run: Optional[str] = None,
    overwrite: bool = False,
    evaluate: bool = True,
    progress: bool = False,
    memory_mb: float = 256.0,
    shard_mb: float = 2048.0,
    plan: Optional[JobPlan] = None,
    origin: str = "merge",
) -> JobResult:
    """Run ``job``: choose, merge (or reuse a finished merge of the same job and inputs), and judge it on
    ``job.evaluate.splits`` when ``evaluate`` and the job has a target. The evaluation is also written into the merged
    model's manifest and its model card. ``origin`` records who made the merge (``merge``, ``sweep``): a sweep removes only sweeps' merges."""
    from merginguriel.checkpoints import is_finished
    from merginguriel.io import read_manifest, remove_dead_temporaries, write_json_atomic

    t0 = time.perf_counter()
    plan = plan or plan_job(job, output, run)
    judged = evaluate and job.target and job.evaluate.splits
    if judged:
        from merginguriel.jobs.judge import check_judged_rows

        check_judged_rows(job, list(job.evaluate.splits))
    timings = {"select_s": time.perf_counter() - t0}
    out = plan.output
    with output_lock(out):
        remove_dead_temporaries(out)
        t = time.perf_counter()
        reused = False
        if is_finished(out):
            why = _changed_inputs(read_manifest(out), plan)
            if not why:
                reused = not overwrite
            elif not overwrite:
                raise InputError(
                    f"{out} already holds a merged model, but {'; '.join(why)}; pass --overwrite true to merge again, "
                    "or choose another --run/--output"
                )
        elif out.exists() and not overwrite:
            if not plan.derived:
                raise InputError(f"{out} exists but is not a finished merged model; remove it or pass --overwrite true")
            # the job's own folder, left unfinished (e.g. weights removed by a sweep killed while cleaning up): redo it
            import shutil

            shutil.rmtree(out)
        if not reused:
            _merge(plan, overwrite or out.exists(), progress, memory_mb, shard_mb, origin)
        timings["merge_s"] = time.perf_counter() - t
        evaluation: dict[str, dict] = {}
        manifest = read_manifest(out)
        if judged:
            from merginguriel.jobs.judge import judge

            t = time.perf_counter()
            evaluation = judge(job, out, plan.chosen, list(job.evaluate.splits))
            timings["evaluate_s"] = time.perf_counter() - t
            manifest["evaluation"] = {**(manifest.get("evaluation") or {}), **evaluation}
            write_json_atomic(out / "manifest.json", manifest)
            from merginguriel.models.card import write_card

            write_card(out, manifest)  # the card shows the judgement too
    timings["total_s"] = time.perf_counter() - t0
    return JobResult(plan, reused, evaluation, timings, manifest)


PROCESS_MB = 400.0  # Python, torch and the libraries, measured before any model is read


def estimate_peak_mb(plan: JobPlan, memory_mb: float = 256.0) -> float:
    """A rough peak-memory estimate for a plan (shown by `merge --dry-run`): the streaming engine holds its block budget;
    AdaMerging holds the base and K task vectors (embeddings stay in the files); statistics hold a model and a buffer."""
    from merginguriel.merging.checkpoint import Checkpoint

    base = Checkpoint(plan.job.layout.base, "base")
    total = sum(t.numel * 4 for t in base.tensors.values()) / 2**20
    embeddings = sum(t.numel * 4 for n, t in base.tensors.items() if "word_embeddings" in n) / 2**20
    k = len(plan.chosen.paths)
    if plan.method == ADAMERGING:
        return PROCESS_MB + (k + 2) * (total - embeddings) + embeddings
    if plan.job.needs_statistics():
        return PROCESS_MB + max(memory_mb * 1.25, 3 * total)
    return PROCESS_MB + memory_mb * 1.25


def evaluation_line(job: MergeJob, record: dict[str, Any]) -> str:
    """One line per split: the merged accuracy beside the validation-chosen best source, with the paired interval."""
    from merginguriel.units import points

    lo, hi = record["gain_ci"]
    line = (f"{job.target} {record['split']}: accuracy {record['accuracy']:.4f} (n={record['n']}) vs best source "
            f"{record['best_source']} {record['best_source_accuracy']:.4f} (chosen on validation): gain "
            f"{points(record['gain'])} pts [95% CI {points(lo)}, {points(hi)}], McNemar p = {record['gain_p']:.2g}; "
            f"merging effect {points(record['merging_effect'])} pts over the sources' mean {record['source_mean']:.4f}")
    if record.get("best_overall") not in (None, record["best_source"]):
        vs = record["vs_best_overall"]
        line += (f"; vs the best of all {record['candidates']} candidates, {record['best_overall']} "
                 f"{record['best_overall_accuracy']:.4f} (chosen on validation, not merged): {points(vs['delta'])} pts "
                 f"[95% CI {points(vs['ci_low'])}, {points(vs['ci_high'])}]")
    if "self_accuracy" in record:
        line += f"; own model {record['self_accuracy']:.4f}"
    return line
