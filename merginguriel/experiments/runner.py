"""Running a sweep: plan every point into the results database, then execute the points that are not done.

``execute_point`` is the unit of work every launcher runs (in this process, or as a submitit job on a cluster): claim
the point in one transaction, run select -> merge -> test while a heartbeat thread keeps the claim fresh, then record
``done`` or ``failed`` in one transaction. Because the claim and the result are each atomic and the row's key is the
config hash, a process killed at any moment leaves the point either ``planned``/``failed`` or ``running`` with a dead
owner (which the next run detects and retries): nothing is lost and nothing is recorded twice.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from merginguriel.errors import DiskFullError, InputError, restore_signals, stop_on_signals
from merginguriel.checkpoints import DEFAULT_ROOT, SWEEP_DB, experiment_dir
from merginguriel.experiments.db import DEFAULT_STALE_AFTER, ResultsDB
from merginguriel.experiments.grid import expand
from merginguriel.jobs.spec import CheckedJob


@dataclass
class Sweep:
    """A sweep: fixed settings + a grid over any merge-job keys, and how to run it.

    Args:
        name: the sweep's name (rows of several sweeps can share one database).
        fixed: merge-job settings shared by every point (nested, or dotted keys; see merginguriel.jobs.MergeJob).
        grid: dotted key -> list of values; the points are the cartesian product.
        zip: groups of dotted keys whose lists vary together (each group is one axis of the product).
        db: the results database (SQLite file); default ``<root>/experiments/<name>/results.sqlite``.
        keep_models: keep merged models after evaluation (each XLM-R-base merge is 1.1 GB).
        launcher: ``local`` (points run in this process, one after another) or ``submitit`` (each point a job).
        submitit: submitit settings: ``folder`` (logs and job files), ``cluster`` (``slurm``, ``local``, or null to
            auto-detect), and any executor parameter (``timeout_min``, ``slurm_partition``, ``gpus_per_node``, ...).
        retry_failed: rerun points recorded as failed (done points are always skipped).
        stale_after: seconds without a heartbeat after which another host may take over a running point.
        heartbeat_s: how often a running point refreshes its heartbeat.
        manifests: where the manifests of deleted merged models are kept (default ``<db>.manifests/`` beside the db).
    """

    name: str = "sweep"
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    zip: list = field(default_factory=list)
    db: Optional[str] = None
    keep_models: bool = False
    launcher: Literal["local", "submitit"] = "local"
    submitit: dict = field(default_factory=dict)
    retry_failed: bool = True
    stale_after: float = DEFAULT_STALE_AFTER
    heartbeat_s: float = 10.0
    manifests: Optional[str] = None

    @classmethod
    def from_dict(cls, spec: dict[str, Any], where: str = "the sweep") -> "Sweep":
        """A sweep from its YAML mapping; a misspelt key is refused, not ignored."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise InputError(f"unknown sweep key(s) {', '.join(unknown)} in {where}; known: {', '.join(known)}")
        return cls(**spec)

    def __post_init__(self) -> None:
        from merginguriel.experiments.launch import check_settings

        if self.db is None:
            self.db = str(experiment_dir(self.fixed.get("root", DEFAULT_ROOT), self.name) / SWEEP_DB)
        self.submitit = check_settings(self.submitit or {}, "submitit")  # typed, checked before anything is written

    def points(self) -> list[CheckedJob]:
        return expand(self.fixed, self.grid, self.zip)

    def manifests_dir(self) -> Path:
        if self.manifests:
            return Path(self.manifests)
        db = Path(self.db)
        return db.with_name(db.stem + ".manifests")


class _Heartbeat:
    """Refreshes a running point's heartbeat from a thread with its own connection (sqlite connections are per thread)."""

    def __init__(self, db_path: str, key: str, every: float):
        self.db_path, self.key, self.every = db_path, key, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{key[:8]}")

    def _run(self) -> None:
        db = ResultsDB(self.db_path)
        try:
            while not self.stop.wait(self.every):
                db.heartbeat(self.key)
        finally:
            db.close()

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def execute_point(
    db_path: str,
    key: str,
    keep_models: bool = False,
    retry_failed: bool = True,
    stale_after: float = DEFAULT_STALE_AFTER,
    heartbeat_s: float = 10.0,
    manifests_dir: Optional[str] = None,
    workdir: Optional[str] = None,
) -> str:
    """Claim, run and record one planned point. Returns its status afterwards: ``done``, ``failed``, ``skipped``
    (done already, or held by a live worker) or ``lost`` (this worker's claim was taken over as stale while it ran)."""
    db = ResultsDB(db_path)
    if workdir is None:  # relative paths in the point config (root, data) start where the sweep was planned
        workdir = str(db.workdir())
    os.chdir(workdir)
    # A submitit worker has no CLI boundary: a SIGTERM from the cluster must still give the point back (below)
    previous = stop_on_signals()
    try:
        try:
            return _claim_and_run(db, key, keep_models, retry_failed, stale_after, heartbeat_s, manifests_dir)
        except KeyboardInterrupt:  # stopped (SIGTERM, Ctrl-C) at any moment once the claim may be written, even inside
            db.release(key)        # it or between recording steps: the point goes back to planned (a no-op if not held)
            raise
    finally:
        db.close()
        restore_signals(previous)


def _claim_and_run(db: ResultsDB, key: str, keep_models: bool, retry_failed: bool, stale_after: float, heartbeat_s: float,
                   manifests_dir: Optional[str]) -> str:
    from merginguriel.experiments.point import run_point
    from merginguriel.jobs.spec import job_from_dict

    config = db.claim(key, retry_failed=retry_failed, stale_after=stale_after)
    if config is None:
        return "skipped"
    start = time.perf_counter()
    try:
        job = job_from_dict(config)
        with _Heartbeat(str(db.path), key, heartbeat_s):
            result = run_point(job, keep_models=keep_models, manifests_dir=Path(manifests_dir) if manifests_dir else None)
    except DiskFullError:  # not the point's fault: stop; the row stays held by this (then dead) process, so a rerun
        raise              # takes the point over at once
    except Exception as err:  # a failed point is recorded and the sweep goes on
        detail = str(err) if isinstance(err, InputError) else "".join(traceback.format_exception(err)[-3:])
        db.fail(key, f"{type(err).__name__}: {detail}".strip(), {"total_s": time.perf_counter() - start})
        return "failed"
    if result.features:
        db.put_features(key, config["target"], result.features, origin="sweep")
    manifest = db.stored(result.manifest) if result.manifest is not None else None
    if not db.finish(key, result.metrics, result.timings, manifest, result.selection):
        return "lost"  # declared stale and taken over meanwhile; the new holder records the point
    return "done"


def plan_table(sweep: Sweep, points: list[CheckedJob]) -> str:
    """The plan as text: one line per point with its key, status (from the database when it exists) and settings."""
    status: dict[str, str] = {}
    if Path(sweep.db).is_file():
        with ResultsDB(sweep.db, readonly=True) as db:
            status = {r["key"]: r["status"] for r in db.rows()}
    lines = [f"sweep {sweep.name!r}: {len(points)} points, database {sweep.db}, launcher {sweep.launcher}"]
    for p in points:
        k = p.key()
        lines.append(f"  {k[:12]}  {status.get(k, 'new'):<8} {p.describe()}")
    return "\n".join(lines)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run_local(sweep: Sweep, keys: list[str], labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for i, key in enumerate(keys, 1):
        start = time.perf_counter()
        status = execute_point(
            sweep.db, key, sweep.keep_models, sweep.retry_failed, sweep.stale_after, sweep.heartbeat_s, str(sweep.manifests_dir())
        )
        out[key] = status
        _log(f"[{i}/{len(keys)}] {status:<7} {labels[key]}  ({time.perf_counter() - start:.1f} s)")
    return out


def _run_submitit(sweep: Sweep, keys: list[str], labels: dict[str, str]) -> tuple[dict[str, str], dict]:
    from merginguriel.experiments.launch import run_jobs

    folder = sweep.submitit.get("folder", str(Path(sweep.db).with_name(Path(sweep.db).stem + ".submitit")))
    db, manifests = str(Path(sweep.db).resolve()), str(sweep.manifests_dir().resolve())
    calls = [(db, key, sweep.keep_models, sweep.retry_failed, sweep.stale_after, sweep.heartbeat_s, manifests, None)
             for key in keys]
    named = [f"{key[:12]} {labels[key]}" for key in keys]
    ran, died = run_jobs(execute_point, calls, named, sweep.submitit, folder, "sweep", _log, status=str)
    # a job that died outside execute_point (time limit, killed, out of memory, node failure) counts as failed
    return {key: ran.get(name, "failed") for key, name in zip(keys, named)}, died


def run_sweep(sweep: Sweep, dry_run: bool = False) -> dict[str, Any]:
    """Plan and run a sweep; returns ``{"points", "ran": {key: status}, "counts": {status: n}, "died": {point: why its
    job died}}`` (jobs that died outside the point: a time limit, a kill; submitit only). With ``dry_run``,
    ``{"points", "plan": the plan as text}`` and nothing run."""
    points = sweep.points()  # every point validated before anything is written
    if not points:
        raise InputError(f"sweep {sweep.name!r} has no points; give grid values (e.g. grid: {{target: [sw-KE]}})")
    idle = [p for p in points if not p.target or not p.job.evaluate.splits]
    if idle:  # its row would read as a finished result that holds no number
        raise InputError(f"sweep point ({idle[0].describe()}) evaluates nothing (no target, or evaluate.splits []), so "
                         "its row would hold no result; give each point a target and evaluate.splits (e.g. "
                         "[validation, test]), or run single merges with `merginguriel merge`")
    if sweep.launcher not in ("local", "submitit"):
        raise InputError(f"unknown launcher {sweep.launcher!r}; use local or submitit")
    if dry_run:
        return {"points": len(points), "ran": {}, "counts": {}, "died": {}, "plan": plan_table(sweep, points)}
    keyed = [(p.key(), p.to_dict()) for p in points]
    labels = {p.key(): p.describe() for p in points}
    with ResultsDB(sweep.db) as db:
        db.set_workdir(os.getcwd())
        added = db.plan(sweep.name, keyed)
        done = {r["key"] for r in db.rows(status="done")}
    todo = [k for k, _ in keyed if k not in done]
    _log(f"sweep {sweep.name!r}: {len(points)} points ({added} new, {len(points) - len(todo)} done already), database {sweep.db}")
    ran, died = _run_submitit(sweep, todo, labels) if sweep.launcher == "submitit" and todo else (_run_local(sweep, todo, labels), {})
    with ResultsDB(sweep.db) as db:
        counts = db.counts(sweep.name)
    return {"points": len(points), "ran": ran, "counts": counts, "died": died}
