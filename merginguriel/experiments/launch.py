"""Running tasks as submitit jobs (a study's stages, a sweep's points): settings checked and typed before anything is
submitted, a cap on the jobs that run at once on this machine, a failed job's reason, and a clean stop on Ctrl-C.

Settings are submitit's own (``timeout_min``, ``gpus_per_node``, ``slurm_partition``, ...; whatever
``submitit.AutoExecutor.update_parameters`` takes) plus three of ours: ``folder`` (job files and logs), ``cluster``
(``slurm``, ``local``, ``debug``, or null to auto-detect) and ``local_max_jobs``. submitit's local cluster starts every
job of an array at once; here at most ``local_max_jobs`` of a stage run together (default: ``slurm_array_parallelism``
when given, else the number of CPU cores). On SLURM, ``slurm_array_parallelism`` caps each array.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from merginguriel.errors import InputError

OWN_KEYS = ("folder", "cluster", "local_max_jobs")
CLUSTERS = ("slurm", "local", "debug")
# settings that count something: a zero or negative value is a mistake, refused before anything is submitted
POSITIVE = ("timeout_min", "mem_gb", "nodes", "cpus_per_task", "tasks_per_node", "local_max_jobs",
            "slurm_array_parallelism", "slurm_time")
STDERR_TAIL = 8  # lines of a failed job's stderr shown with its failure
POLL_S = 0.5


def _declared_types() -> dict[str, Any]:
    """Every setting submitit takes, with the type it declares: the shared ones (``timeout_min: int``) and each
    executor's own under its prefix (``slurm_array_parallelism: int``, ``local_setup``)."""
    from submitit import AutoExecutor
    from submitit.core import plugins
    from submitit.slurm import slurm

    declared: dict[str, Any] = dict(AutoExecutor._typed_parameters())
    sbatch = inspect.signature(slurm._make_sbatch_string).parameters
    for name, executor in plugins.get_executors().items():
        for arg in executor._valid_parameters():
            hint = sbatch[arg].annotation if name == "slurm" and arg in sbatch else Any
            declared[f"{name}_{arg}"] = hint
        declared.update({f"{name}_{arg}": hint for arg, hint in AutoExecutor._typed_parameters().items()})
    declared["local_max_jobs"] = int
    return declared


def _typed(key: str, value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type submitit declares for ``key`` (``"30"`` -> 30 for an int), or a clear error."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
    target = next((a for a in (bool, int, float, str) if a in args), None)
    if target is None or value is None or isinstance(value, target) and not (target is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if target is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if target is int:
            number = float(text)
            if number != int(number):
                raise ValueError
            return int(number)
        return target(text)
    except ValueError:
        raise InputError(f"{where}.{key} = {value!r}: submitit takes {target.__name__} there") from None


def check_settings(settings: dict, where: str = "submitit") -> dict:
    """Submitit settings checked (every key known, counts positive, the cluster known) and typed as submitit
    declares them; raises before anything is submitted or written."""
    declared = _declared_types()
    unknown = sorted(k for k in settings if k not in OWN_KEYS and k not in declared)
    if unknown:
        raise InputError(f"unknown submitit setting(s) {', '.join(f'{where}.{k}' for k in unknown)}; known: "
                         f"{', '.join(sorted(set(declared) | set(OWN_KEYS)))}")
    out = {k: v if k in ("folder", "cluster") else _typed(k, v, declared[k], where) for k, v in settings.items()}
    if out.get("cluster") not in (None, *CLUSTERS):
        raise InputError(f"{where}.cluster = {out['cluster']!r}: use slurm, local, debug, or leave it unset to detect it")
    for key in POSITIVE:
        value = out.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise InputError(f"{where}.{key} = {value}: it must be positive")
    return out


def make_executor(settings: dict, folder: str | Path):
    """A submitit executor from checked settings (``folder`` overrides the default ``folder``)."""
    import submitit

    opts = {k: v for k, v in settings.items() if k != "local_max_jobs"}
    executor = submitit.AutoExecutor(folder=str(opts.pop("folder", folder)), cluster=opts.pop("cluster", None))
    if opts:
        executor.update_parameters(**opts)
    return executor


def local_max_jobs(settings: dict) -> int:
    """How many jobs of a stage run at once on the local cluster."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(settings.get("local_max_jobs") or settings.get("slurm_array_parallelism") or cores)


@dataclass
class Failure:
    """Why a job failed: the last line of its error, the tail of its stderr and where its logs are."""

    job_id: str
    reason: str
    stderr_tail: list[str]
    log: str

    def lines(self) -> list[str]:
        return [f"job {self.job_id}: {self.reason}" if self.job_id else self.reason,
                *(f"    | {line}" for line in self.stderr_tail), *([f"    log: {self.log}"] if self.log else [])]


def _failure(job: Any, err: BaseException) -> Failure:
    text = str(err).strip()
    # a task's error comes as submitit's FailedJobError: the trace between two dashed lines, then where the logs are
    trace = text.split("----------------------\n")[1] if text.count("----------------------\n") >= 2 else text
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    reason = lines[-1] if lines else type(err).__name__
    stderr = job.stderr() or ""
    tail = [line for line in stderr.splitlines() if line.strip()][-STDERR_TAIL:]
    if "timed-out" in stderr or "has timed out" in stderr:
        reason = f"killed at its time limit ({reason})"
    return Failure(str(job.job_id), reason, tail, str(job.paths.stderr))


@contextlib.contextmanager
def _output_to(path: Path):
    """Local jobs' controllers inherit this process's stdout and stderr; a Ctrl-C reaches them too (the terminal
    signals the whole process group) and each would print its traceback there. Started while the two point at a file,
    they write there instead."""
    sys.stdout.flush()
    sys.stderr.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def run_jobs(fn: Callable, calls: list[tuple], labels: list[str], settings: dict, folder: str | Path, stage: str,
             log: Callable[[str], None], status: Callable[[Any], str] = lambda result: "done",
             ) -> tuple[dict[str, Any], dict[str, Failure]]:
    """Run ``fn(*call)`` for every call as a submitit job; returns (label -> result, label -> failure). ``status``
    names a finished job's outcome in the log.

    On SLURM the calls go as one job array; on the local cluster at most ``local_max_jobs`` run at once. Ctrl-C
    cancels the jobs that have not finished and is raised again (the caller says how to resume)."""
    folder = settings.get("folder", folder)
    executor = make_executor(settings, folder)
    cluster = executor.cluster
    limit = settings.get("timeout_min")
    results: dict[str, Any] = {}
    failed: dict[str, Failure] = {}
    order = {label: i for i, label in enumerate(labels, 1)}

    def collect(label: str, job: Any) -> None:
        try:
            results[label] = job.result()
            log(f"[{stage} {order[label]}/{len(calls)}] {status(results[label]):<7} {label} (job {job.job_id})")
        except Exception as err:  # the task raised, or its job died (time limit, killed, out of memory, node failure)
            failed[label] = _failure(job, err)
            log(f"[{stage} {order[label]}/{len(calls)}] failed  {label}: " + "\n".join(failed[label].lines()))

    running: dict[str, Any] = {}
    try:
        if cluster != "local":
            jobs = executor.map_array(fn, *[list(column) for column in zip(*calls)])
            running = dict(zip(labels, jobs))
            log(f"[{stage}] submitted {len(jobs)} jobs to {cluster}{f', time limit {limit} min each' if limit else ''} "
                f"(logs in {folder})")
            for label, job in list(running.items()):
                collect(label, job)
                running.pop(label)
            return results, failed
        cap = local_max_jobs(settings)
        log(f"[{stage}] submitted {len(calls)} jobs to local, at most {cap} at once"
            f"{f', time limit {limit} min each' if limit else ''} (logs in {folder})")
        pending = list(zip(labels, calls))
        while pending or running:
            while pending and len(running) < cap:
                label, call = pending.pop(0)
                with _output_to(Path(folder) / "controllers.log"):
                    running[label] = executor.submit(fn, *call)
            for label, job in list(running.items()):
                if job.done():
                    collect(label, job)
                    running.pop(label)
            if running:
                time.sleep(POLL_S)
        return results, failed
    except KeyboardInterrupt:
        for job in running.values():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        raise
