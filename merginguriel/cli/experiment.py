"""`merginguriel experiment`."""

from __future__ import annotations

from typing import Any, Literal, Optional

from merginguriel.experiments.db import DEFAULT_STALE_AFTER


def experiment(
    name: str = "sweep",
    fixed: dict = {},  # noqa: B006 (jsonargparse reads the default)
    grid: dict = {},  # noqa: B006
    zip: list = [],  # noqa: B006
    db: Optional[str] = None,
    keep_models: bool = False,
    launcher: Literal["local", "submitit"] = "local",
    submitit: dict = {},  # noqa: B006
    retry_failed: bool = True,
    stale_after: float = DEFAULT_STALE_AFTER,
    heartbeat_s: float = 10.0,
    manifests: Optional[str] = None,
    dry_run: bool = False,
) -> tuple[Any, dict]:
    """Run a sweep (fixed merge-job settings + a grid over any job keys): every point is one merge job, recorded as
    one row of a results database. Rerunning skips finished points; a killed run resumes.

    Args:
        name: the sweep's name.
        fixed: merge-job settings shared by every point (see `merginguriel merge --help` for the keys).
        grid: dotted job key -> list of values; the points are the cartesian product.
        zip: groups of dotted keys whose lists vary together.
        db: the results database (default <root>/experiments/<name>/results.sqlite).
        keep_models: keep merged models after evaluation.
        launcher: local (one after another in this process) or submitit (each point a job, e.g. on SLURM).
        submitit: submitit settings (folder, cluster, timeout_min, slurm_partition, gpus_per_node, ...).
        retry_failed: rerun points recorded as failed.
        stale_after: seconds without a heartbeat after which another host may take over a running point.
        heartbeat_s: how often a running point refreshes its heartbeat.
        manifests: where the manifests of deleted merged models are kept (default <db>.manifests/).
        dry_run: list the points (with their status in the database) and stop; nothing is written.
    """
    from merginguriel.experiments.runner import Sweep, run_sweep

    sweep = Sweep(name=name, fixed=fixed, grid=grid, zip=zip, db=db, keep_models=keep_models, launcher=launcher,
                  submitit=submitit, retry_failed=retry_failed, stale_after=stale_after, heartbeat_s=heartbeat_s,
                  manifests=manifests)
    return sweep, run_sweep(sweep, dry_run=dry_run)
