"""`merginguriel study`."""

from __future__ import annotations

from typing import Any, Literal, Optional

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED
from merginguriel.data.config import EVAL_BATCH_SIZE, DataSource


def study(
    name: str = "study",
    locales: Optional[list[str]] = None,
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    data: DataSource = DataSource(),
    fit: Optional[str] = None,
    fit_overrides: dict = {},  # noqa: B006 (jsonargparse reads the default)
    nxn_splits: list[Literal["validation", "test"]] = ["validation", "test"],  # noqa: B006
    nxn_batch_size: int = EVAL_BATCH_SIZE,
    sweep: dict = {},  # noqa: B006
    launcher: Literal["local", "submitit"] = "local",
    submitit: dict = {},  # noqa: B006
    device: str = "auto",
    torch_threads: int = 0,
    dry_run: bool = False,
) -> tuple[Any, dict]:
    """A whole study as three dependent stages: a fine-tune per locale (one job each), the NxN matrices (one job per
    source model) and a sweep of merge jobs; locally or on SLURM through submitit. A rerun skips finished work, so a
    killed study resumes.

    Args:
        name: the study's name (the sweep's default name; job files under <root>/experiments/<name>/jobs/).
        locales: the locales fine-tuned and evaluated in the NxN.
        backbone: embedded, a hub id (FacebookAI/xlm-roberta-base) or a folder.
        root: the checkpoints root.
        data: the MASSIVE data source.
        fit: the fit recipe (a shipped config name or a path; default: the backbone's recipe).
        fit_overrides: settings over the recipe for every fit (e.g. {trainer: {max_epochs: 3}}).
        nxn_splits: the NxN matrices computed.
        nxn_batch_size: the NxN evaluation batch size.
        sweep: the sweep (as `merginguriel experiment` takes it: fixed, grid, zip, db, ...); fixed backbone, root, data
            and selection.candidates default to the study's.
        launcher: local (in this process) or submitit (job arrays; cluster local or slurm).
        submitit: submitit settings for every stage (timeout_min, gpus_per_node, slurm_partition,
            slurm_array_parallelism, local_max_jobs: jobs at once on the local cluster, default the core count, ...),
            and per stage under fit, nxn, sweep; a stage without timeout_min gets a limit sized to its work.
        device: the NxN evaluation device.
        torch_threads: CPU threads for torch in every task (0: torch's default).
        dry_run: print what each stage would run and stop; nothing is written.
    """
    from merginguriel.experiments.study import Study, run_study

    plan = Study(name=name, locales=locales or [], backbone=backbone, root=root, data=data, fit=fit,
                 fit_overrides=fit_overrides, nxn_splits=list(nxn_splits), nxn_batch_size=nxn_batch_size, sweep=sweep,
                 launcher=launcher, submitit=submitit, device=device, torch_threads=torch_threads)
    return plan, run_study(plan, dry_run=dry_run)
