"""The one function that runs a merge job: check the job and everything it reads, once (:func:`plan_job`), then merge
(whatever the method: the plan carries what it needs) and judge on the job's splits, without checking again.

The merged model goes to ``Layout.merged(target, job.run_name())`` unless an output is given. A finished output made
by the same job from the same inputs (base and source weights unchanged) is reused, so a rerun, or a rerun that only
adds evaluation, never merges again; an output whose inputs changed needs ``overwrite``. Merges into one output are
serialised by a lock file, and the hidden temporaries of killed runs are removed first.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from merginguriel.errors import InputError
from merginguriel.jobs.judge import Judging
from merginguriel.jobs.select import Chosen, Pool
from merginguriel.jobs.spec import CheckedJob, MergeJob


@dataclass(frozen=True)
class JobPlan:
    """A job ready to run: the checked job, its checked models, the sources chosen, the checked merge plan
    (merginguriel.merging.validate.Plan: method, typed parameters, base, sources, weights, output) and what its
    judgement reads (None when it is not judged). A job that lists parameter values has one merge plan per candidate
    setting in ``options`` (``merge`` is the first's); run_job merges each and keeps the best on validation."""

    checked: CheckedJob
    pool: Pool
    chosen: Chosen
    merge: Any
    judging: Optional[Judging] = None
    derived: bool = True  # the output path is the job's own (not one the user gave)
    options: tuple[Any, ...] = ()  # one merge plan per candidate setting (checked.options) when merge.params lists values

    @property
    def output(self) -> Path:
        return self.merge.output

    def describe(self) -> str:
        checked = self.checked
        lines = [f"merge job {checked.key()[:12]}: {checked.describe()}", f"  method: {checked.method.name} {checked.canonical}"]
        if len(self.options) > 1:
            lines.append(f"  {len(self.options)} candidate settings, each merged and scored on {checked.target}'s "
                         "validation split; the best is kept")
        total = sum(self.merge.weights)
        for name, w in zip(self.chosen.names, self.merge.weights):
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


def plan_job(job: Union[MergeJob, CheckedJob], output: Optional[str | Path] = None, run: Optional[str] = None,
             evaluate: bool = True) -> JobPlan:
    """The job's one check: the job itself (unless given checked), its models (the base and the pool, each once), the
    data its method and its judgement read, the merge; then the choice of sources. Nothing is written."""
    from merginguriel.jobs.judge import judged_rows, plan_judgement
    from merginguriel.jobs.select import check_pool, choose_sources
    from merginguriel.merging.validate import check_request, plan_merge

    checked = job if isinstance(job, CheckedJob) else job.check()
    layout, target, method = checked.layout, checked.target, checked.method
    pool = check_pool(checked)
    chosen = choose_sources(checked, pool)
    models = [pool.models[token] for token in (checked.selection.sources or chosen.locales)]
    splits = list(checked.evaluate.splits) if evaluate and target else []
    tried = len(checked.options) > 1  # candidate settings are tried on validation, whether or not the job is judged
    reads = [pair for option in checked.options for pair in
             (method.needs.rows(option.params, target, [m.locale for m in models]) if method.needs.rows else [])]
    check_rows(checked, judged_rows(target, splits) + ([(target, "validation")] if tried else []) + reads)
    judging = plan_judgement(checked, splits) if splits else None
    out = Path(output) if output is not None else layout.merged(target or "untargeted", run or checked.run_name())
    include = checked.selection.include_target
    if checked.selection.similarity:
        include = bool(include)
    merges = []
    for option in checked.options:
        weights, device = check_request(
            method, option.params, [(m.path, m.locale, w) for m, w in zip(models, chosen.weights)],
            weights_from=checked.weights_from, dtype=checked.merge.dtype, device=checked.job.device, output=out,
            base=pool.base.path, target=target, include_target=include,
        )
        merges.append(plan_merge(method, option.params, pool.base, models, weights, device, out,
                                 exclude=list(checked.merge.exclude or []), seed=checked.merge.seed, dtype=checked.merge.dtype,
                                 target=target, include_target=include, selection=chosen.record))
    return JobPlan(checked, pool, chosen, merges[0], judging, derived=output is None, options=tuple(merges))


def check_rows(checked: CheckedJob, pairs: list[tuple[str, str]]) -> None:
    """Every (locale, split) the job reads has rows (the data layer refuses an empty split, naming its file), each
    checked once, with the base's tokenizer."""
    if not pairs:
        return
    from transformers import AutoTokenizer

    from merginguriel.data.tokenized import tokenized_split
    from merginguriel.io import model_files_checked

    with model_files_checked(checked.base, "base"):
        tokenizer = AutoTokenizer.from_pretrained(checked.base)
    for locale, split in dict.fromkeys(pairs):
        tokenized_split(checked.data, tokenizer, locale, split)


def output_lock(output: Path):
    """Hold ``.<name>.lock`` beside ``output``, removed on release (merginguriel.io.lock): one merge per output at a time."""
    from merginguriel.io.lock import file_lock

    return file_lock(output.parent / f".{output.name}.lock")


def _changed_inputs(manifest: dict, plan: JobPlan) -> list[str]:
    """Why a finished output cannot stand for this job: another job made it, or its base or sources are not the ones
    this job checked (compared by the hashes the check took: nothing is read again)."""
    recorded_job = (manifest.get("job") or {}).get("model_key")
    if recorded_job != plan.checked.model_key():
        return ["it was made by another merge job" if recorded_job else "it records no merge job"]
    why = []
    if (manifest.get("base") or {}).get("hash") != plan.merge.base.hash:
        why.append("the shared base changed")
    now = {str(s.path): s.hash for s in plan.merge.sources}
    for rec in manifest.get("sources") or []:
        if now.get(rec["path"]) != rec.get("hash"):
            why.append(f"source {rec.get('locale') or rec['path']} changed")
    return why


def _job_record(plan: JobPlan, origin: str) -> dict:
    checked = plan.checked
    return {"key": checked.key(), "model_key": checked.model_key(), "origin": origin, "config": checked.to_dict()}


def run_job(
    job: Union[JobPlan, MergeJob, CheckedJob],
    overwrite: bool = False,
    evaluate: bool = True,
    progress: bool = False,
    memory_mb: float = 256.0,
    shard_mb: float = 2048.0,
    origin: str = "merge",
) -> JobResult:
    """Run a job (planned here, into its own output) or a plan (:func:`plan_job`, which also takes another output):
    merge, or reuse a finished merge of the same job and inputs, and judge it on the job's splits when ``evaluate`` and
    the job has a target. The evaluation is also written into the merged model's manifest and its model card.
    ``origin`` records who made the merge (``merge``, ``sweep``): a sweep removes only sweeps' merges."""
    from merginguriel.checkpoints import is_finished
    from merginguriel.io import read_manifest, remove_dead_temporaries, write_json_atomic
    from merginguriel.merging import MergeContext, RunOptions, run_plan

    t0 = time.perf_counter()
    plan = job if isinstance(job, JobPlan) else plan_job(job, evaluate=evaluate)
    judged = evaluate and plan.judging is not None
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
            checked = plan.checked
            context = MergeContext(data=checked.data, layout=checked.layout, trainer=checked.trainer)
            options = RunOptions(memory_mb=memory_mb, shard_mb=shard_mb, progress=progress, overwrite=overwrite or out.exists())
            if len(plan.options) > 1:
                from merginguriel.jobs.choose import merge_best_on_validation

                merge_best_on_validation(plan, _job_record(plan, origin), options, context)
            else:
                run_plan(dataclasses.replace(plan.merge, job=_job_record(plan, origin)), options, context)
        timings["merge_s"] = time.perf_counter() - t
        evaluation: dict[str, dict] = {}
        manifest = read_manifest(out)
        if judged:
            from merginguriel.jobs.judge import judge

            t = time.perf_counter()
            evaluation = judge(plan.judging, out, plan.chosen)
            timings["evaluate_s"] = time.perf_counter() - t
            manifest["evaluation"] = {**(manifest.get("evaluation") or {}), **evaluation}
            write_json_atomic(out / "manifest.json", manifest)
            from merginguriel.models.card import write_card

            write_card(out, manifest)  # the card shows the judgement too
    timings["total_s"] = time.perf_counter() - t0
    return JobResult(plan, reused, evaluation, timings, manifest)


def choice_line(choice: dict) -> str:
    """What a job with parameter lists chose: every candidate's validation accuracy, the one kept."""
    tried = ", ".join(f"{_values(c['values'])} {c['validation_accuracy']:.4f}" for c in choice["candidates"])
    return (f"chosen on {choice['split']}: {_values(choice['chosen'])}, the best of {choice['count']} candidates "
            f"({tried})")


def _values(values: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items())


PROCESS_MB = 400.0  # Python, torch and the libraries, measured before any model is read


def estimate_peak_mb(plan: JobPlan, memory_mb: float = 256.0) -> float:
    """A rough peak-memory estimate for a plan (shown by `merge --dry-run`): the streaming engine holds its block budget;
    a method that trains holds the base and K task vectors (embeddings stay in the files); statistics hold a model and
    a buffer."""
    tensors = plan.merge.base.checkpoint.tensors
    total = sum(t.numel * 4 for t in tensors.values()) / 2**20
    embeddings = sum(t.numel * 4 for n, t in tensors.items() if "word_embeddings" in n) / 2**20
    k = len(plan.merge.sources)
    needs = plan.checked.method.needs
    if needs.trainer:
        return PROCESS_MB + (k + 2) * (total - embeddings) + embeddings
    if needs.statistics:
        return PROCESS_MB + max(memory_mb * 1.25, 3 * total)
    return PROCESS_MB + memory_mb * 1.25


def evaluation_line(target: str, record: dict[str, Any]) -> str:
    """One line per split: the merged accuracy beside the validation-chosen best source, with the paired interval."""
    from merginguriel.units import points

    lo, hi = record["gain_ci"]
    line = (f"{target} {record['split']}: accuracy {record['accuracy']:.4f} (n={record['n']}) vs best source "
            f"{record['best_source']} {record['best_source_accuracy']:.4f} (chosen on validation): gain "
            f"{points(record['gain'])} pts [95% CI {points(lo)}, {points(hi)}], McNemar p = {record['gain_p']:.2g}; "
            f"merging effect {points(record['merging_effect'])} pts over the sources' mean {record['source_mean']:.4f}")
    if record.get("best_overall") not in (None, record["best_source"]):
        vs = record["vs_best_overall"]
        line += (f"; margin over the best single model of all {record['candidates']} candidates, {record['best_overall']} "
                 f"{record['best_overall_accuracy']:.4f} (chosen on validation, not merged): {points(vs['delta'])} pts "
                 f"[95% CI {points(vs['ci_low'])}, {points(vs['ci_high'])}]")
    if "self_accuracy" in record:
        line += f"; own model {record['self_accuracy']:.4f}"
    return line
