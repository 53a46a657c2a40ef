"""A whole study, on one machine or a cluster: the per-locale fine-tunes, the NxN matrices and a sweep of merge jobs,
as three dependent stages, each skipping what is finished.

1. ``fit``: one task per locale without a finished fine-tune (:func:`merginguriel.models.finetune.finetune`; an
   interrupted fit resumes from its last epoch).
2. ``nxn``: for every split, one task per source model whose row has missing cells (a shard). A shard evaluates its
   model on every study locale into its own cells file, ``Layout.nxn_shard(split, locale)``; once every shard has
   finished, the launcher merges their cells into the split's ``cells.jsonl`` and writes the matrix (nothing is left
   to evaluate then). One file per shard, not a shared one: ``cells.jsonl`` is appended to, and a torn last line is
   repaired by rewriting the file, which is safe for one writer only.
3. ``sweep``: :func:`merginguriel.experiments.runner.run_sweep` over the study's backbone, root, data and locales (its
   points resume from the results database).

Launchers: ``local`` runs every task in this process, one after another; ``submitit`` runs each stage's tasks as
jobs (``cluster: local`` on this machine, at most ``local_max_jobs`` at once; ``slurm``: one job array per stage) and
this process waits for a stage before it starts the next. Each stage's time limit is sized to its work unless the
settings give one (:meth:`Study.job_minutes`). Killed anywhere, a rerun resumes: finished fine-tunes, cells and sweep
points are never redone. The study's settings are saved as ``<root>/experiments/<name>/study.yaml`` when it starts,
so ``merginguriel study --config`` that file resumes it, whatever the command line was.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, NXN_CELLS, Layout, is_finished, jobs_dir, study_config
from merginguriel.data.config import EVAL_BATCH_SIZE, DataSource
from merginguriel.errors import InputError
from merginguriel.experiments.launch import Failure, check_settings, local_max_jobs, run_jobs
from merginguriel.experiments.runner import Sweep

STAGES = ("fit", "nxn", "sweep")
# What a default time limit assumes, slow on purpose so that a default limit is seldom what stops a job: training and
# evaluation examples a second, and the seconds a job takes to start (imports, loading models, tokenising a locale).
# The embedded backbone runs on one thread of a busy CPU (quiet, benchmarks/results/finetune.md measured ~2,000 and
# ~8,000 examples/s); any other backbone is taken for a base-size encoder such as XLM-R on an older GPU.
PACE = {EMBEDDED: (400, 1600, 60), "other": (100, 500, 600)}
MASSIVE_ROWS = {"train": 11514, "validation": 2033, "test": 2974}  # a locale's splits (the embedded default's are smaller)
LIMIT_MARGIN = 3  # a default limit is three times the estimate
LIMIT_FLOOR_MIN = 10
DEFAULT_EPOCHS = 15  # a fit's max_epochs when neither the recipe nor the overrides set it (models.finetune.make_cli)


@dataclass
class Study:
    """A study: which locales, how each is fine-tuned, the NxN splits, the sweep, and where it all runs.

    Args:
        name: the study's name (its sweep's default name; job files under ``<root>/experiments/<name>/jobs/``).
        locales: the locales fine-tuned (one task each) and evaluated in the NxN (rows and columns).
        backbone: the backbone (``embedded``, a hub id or a folder).
        root: the checkpoints root.
        data: the MASSIVE data source.
        fit: the fit recipe (a shipped config name or a YAML path); default: the backbone's own recipe.
        fit_overrides: settings over the recipe for every fit, nested as in the recipe (``trainer: {max_epochs: 3}``).
        nxn_splits: the NxN matrices computed (validation feeds REAL similarity; test gives the baselines).
        nxn_batch_size: the NxN evaluation batch size.
        sweep: the sweep (``merginguriel experiment``'s settings: fixed, grid, zip, db, ...); its fixed backbone,
            root, data and ``selection.candidates`` default to the study's.
        launcher: ``local`` (in this process) or ``submitit`` (job arrays, locally or on SLURM).
        submitit: submitit settings for every stage (``cluster``, ``timeout_min``, ``slurm_partition``,
            ``gpus_per_node``, ``slurm_array_parallelism``, ``local_max_jobs``, ...), and per stage under ``fit``,
            ``nxn``, ``sweep`` (e.g. ``fit: {timeout_min: 240}``); a stage without ``timeout_min`` gets one sized to its
            work (:meth:`job_minutes`).
        device: the NxN evaluation device (``auto``: the GPU when there is one).
        torch_threads: CPU threads for torch in every task (0: torch's default).
    """

    name: str = "study"
    locales: list[str] = field(default_factory=list)
    backbone: str = EMBEDDED
    root: str = DEFAULT_ROOT
    data: DataSource = field(default_factory=DataSource)
    fit: Optional[str] = None
    fit_overrides: dict = field(default_factory=dict)
    nxn_splits: list[str] = field(default_factory=lambda: ["validation", "test"])
    nxn_batch_size: int = EVAL_BATCH_SIZE
    sweep: dict = field(default_factory=dict)
    launcher: Literal["local", "submitit"] = "local"
    submitit: dict = field(default_factory=dict)
    device: str = "auto"
    torch_threads: int = 0

    def __post_init__(self) -> None:
        from merginguriel.locales import check_locales

        if isinstance(self.data, dict):
            self.data = DataSource(**self.data)
        self.root = str(self.root)
        if not self.locales:
            raise InputError("a study needs locales to fine-tune: set locales: [es-ES, pt-PT, ...]")
        self.locales = check_locales(list(self.locales))
        bad = [s for s in self.nxn_splits if s not in ("validation", "test")]
        if bad or not self.nxn_splits:
            raise InputError(f"nxn_splits {self.nxn_splits}: use validation and/or test")
        if self.launcher not in ("local", "submitit"):
            raise InputError(f"unknown launcher {self.launcher!r}; use local or submitit")
        if not isinstance(self.submitit, dict):
            raise InputError(f"submitit must be a mapping of submitit settings, got {self.submitit!r}")
        for stage in STAGES:
            if stage in self.submitit and not isinstance(self.submitit[stage], dict):
                raise InputError(f"submitit.{stage} must be a mapping of that stage's submitit settings")
        # every setting checked and typed now, before anything is written or submitted
        shared = check_settings({k: v for k, v in self.submitit.items() if k not in STAGES}, "submitit")
        self.submitit = {**shared, **{stage: check_settings(self.submitit[stage], f"submitit.{stage}")
                                      for stage in STAGES if stage in self.submitit}}

    @property
    def layout(self) -> Layout:
        return Layout.for_backbone(self.backbone, self.root)

    def recipe(self) -> Optional[str]:
        from merginguriel.models.finetune import recipe_for

        return self.fit or recipe_for(self.backbone)

    def fit_config(self, locale: str) -> dict:
        """The overrides of one locale's fit: the study's backbone, root and data over the user's overrides."""
        from merginguriel.models.finetune import deep_update

        config = deep_update(json.loads(json.dumps(self.fit_overrides)), {
            "model": {"backbone": self.backbone, "root": self.root},
            "data": {"locales": locale, **dataclasses.asdict(self.data)},
        })
        config.setdefault("trainer", {}).setdefault("enable_progress_bar", False)
        if self.torch_threads > 0:
            config["torch_threads"] = self.torch_threads
        return config

    def _fit_setting(self, section: str, key: str) -> Any:
        """A setting of every fit: the overrides', else the recipe's (None when neither sets it)."""
        import yaml

        from merginguriel.configs import config_path

        recipe = self.recipe()
        config = (yaml.safe_load(config_path(recipe).read_text(encoding="utf-8")) if recipe else None) or {}
        value = (self.fit_overrides.get(section) or {}).get(key)
        return value if value is not None else (config.get(section) or {}).get(key)

    def base_seed(self) -> Optional[int]:
        """The head seed of the shared base the recipe asks for (None: the default)."""
        seed = self._fit_setting("model", "base_seed")
        return None if seed is None else int(seed)

    def job_minutes(self, stage: str) -> int:
        """A time limit sized to one job of ``stage``: its work (a fine-tune's epochs over a locale's training and
        validation rows; a shard's model on every locale's split; a sweep point's merge and the judging of it, its
        sources, the target's own model and the base on both splits) at the pace of :data:`PACE`, times
        :data:`LIMIT_MARGIN`, in whole minutes, at least :data:`LIMIT_FLOOR_MIN`."""
        train, evaluate, start = PACE[EMBEDDED if self.backbone == EMBEDDED else "other"]
        if stage == "fit":
            epochs = int(self._fit_setting("trainer", "max_epochs") or DEFAULT_EPOCHS)
            seconds = start + epochs * (MASSIVE_ROWS["train"] / train + MASSIVE_ROWS["validation"] / evaluate)
        elif stage == "nxn":
            seconds = start + len(self.locales) * max(MASSIVE_ROWS[s] for s in self.nxn_splits) / evaluate
        else:
            seconds = 2 * start + (len(self.locales) + 2) * (MASSIVE_ROWS["validation"] + MASSIVE_ROWS["test"]) / evaluate
        return max(LIMIT_FLOOR_MIN, math.ceil(LIMIT_MARGIN * seconds / 60))

    def stage_settings(self, stage: str) -> dict:
        """The submitit settings of one stage: the shared ones, then the stage's own, then a time limit sized to the
        stage's work and a job folder where neither gives them."""
        settings = {k: v for k, v in self.submitit.items() if k not in STAGES}
        settings.update(self.submitit.get(stage) or {})
        settings.setdefault("timeout_min", self.job_minutes(stage))
        settings.setdefault("folder", str(jobs_dir(self.root, self.name, stage)))
        return settings

    def sweep_plan(self) -> Sweep:
        """The study's sweep: its fixed backbone, root, data and candidate locales default to the study's."""
        spec = json.loads(json.dumps(self.sweep))
        fixed = spec.pop("fixed", None) or {}
        fixed.setdefault("backbone", self.backbone)
        fixed.setdefault("root", self.root)
        fixed.setdefault("data", dataclasses.asdict(self.data))
        selection = fixed.setdefault("selection", {})
        if isinstance(selection, dict):
            selection.setdefault("candidates", list(self.locales))
        spec.setdefault("name", self.name)
        if self.launcher == "submitit":
            spec.setdefault("launcher", "submitit")
            spec.setdefault("submitit", self.stage_settings("sweep"))
        return Sweep.from_dict({**spec, "fixed": fixed}, "the study's sweep")


# -- the tasks (module functions, so that submitit can pickle them) ---------------------------------------------------
def _enter(study: Study, workdir: str) -> None:
    """A task starts where the study was launched (relative roots and data paths), with the study's thread count."""
    os.chdir(workdir)
    if study.torch_threads > 0:
        import torch

        torch.set_num_threads(study.torch_threads)


def fit_task(study: Study, locale: str, workdir: str) -> str:
    """Fine-tune one locale (or resume its interrupted fit, or reuse its finished fine-tune)."""
    from merginguriel.evaluation.evaluate import quiet_lightning
    from merginguriel.models.finetune import finetune

    _enter(study, workdir)
    with quiet_lightning():
        return str(finetune(study.recipe(), study.fit_config(locale)))


def nxn_task(study: Study, split: str, locale: str, workdir: str) -> str:
    """One shard: ``locale``'s model on every study locale, into its own cells file (resuming cell by cell)."""
    from merginguriel.evaluation.nxn import compute_nxn

    _enter(study, workdir)
    return str(compute_nxn(study.backbone, study.root, split, list(study.locales), [locale], study.data,
                           study.nxn_batch_size, study.device, str(study.layout.nxn_shard(split, locale)), progress=False))


# -- the NxN shards -------------------------------------------------------------------------------------------------
def missing_cells(study: Study, split: str) -> dict[str, int]:
    """Per source model, how many of its cells neither the split's cells file nor its shard holds (still valid)."""
    from merginguriel.evaluation.nxn import model_hashes, usable_cells

    layout = study.layout
    key = study.data.at(study.root).key(split)
    hashes = model_hashes(layout, study.locales)
    done = set(usable_cells(layout.nxn(split) / NXN_CELLS, key, hashes))
    out = {}
    for model in study.locales:
        shard = set(usable_cells(layout.nxn_shard(split, model) / NXN_CELLS, key, hashes))
        n = sum((model, t) not in done and (model, t) not in shard for t in study.locales)
        if n:
            out[model] = n
    return out


def merge_shards(study: Study, split: str) -> Path:
    """Fold every shard's cells into the split's cells file (written atomically, duplicates dropped), remove the
    shards, and write the matrix from the cells (nothing left to evaluate)."""
    from merginguriel.evaluation.nxn import compute_nxn, read_cells
    from merginguriel.io.atomic import atomic_write_text

    folder = study.layout.nxn(split)
    shards = sorted((folder / "shards").glob(f"*/{NXN_CELLS}"))
    if shards:
        cells = read_cells(folder / NXN_CELLS)
        seen = {json.dumps(c, sort_keys=True) for c in cells}
        for path in shards:
            for cell in read_cells(path):
                line = json.dumps(cell, sort_keys=True)
                if line not in seen:
                    seen.add(line)
                    cells.append(cell)
        atomic_write_text(folder / NXN_CELLS, "".join(json.dumps(c) + "\n" for c in cells))
        shutil.rmtree(folder / "shards")
    left = missing_cells(study, split)
    if left:  # never evaluate in the launcher (a login node): the shards must have done it
        raise RuntimeError(f"NxN {split}: cells still missing after the shards ran: {left}")
    return compute_nxn(study.backbone, study.root, split, list(study.locales), list(study.locales),
                       study.data, study.nxn_batch_size, study.device, progress=False)


# -- launching ------------------------------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _launch(study: Study, stage: str, fn: Callable, calls: list[tuple], labels: list[str]) -> dict[str, Failure]:
    """Run ``fn(*call)`` for every call (in this process, or as submitit jobs); returns label -> failure of the failed
    ones."""
    failed: dict[str, Failure] = {}
    if not calls:
        return failed
    if study.launcher == "local":
        for i, (call, label) in enumerate(zip(calls, labels), 1):
            try:
                fn(*call)
                _log(f"[{stage} {i}/{len(calls)}] done    {label}")
            except Exception as err:  # one failed task does not stop the others of its stage
                failed[label] = Failure("", f"{type(err).__name__}: {err}", [], "")
                _log(f"[{stage} {i}/{len(calls)}] failed  {label}: {failed[label].reason}")
        return failed
    settings = study.stage_settings(stage)
    return run_jobs(fn, calls, labels, settings, settings["folder"], stage, _log)[1]


def plan_text(study: Study) -> str:
    """What a run would do now, stage by stage (nothing is written)."""
    layout = study.layout
    todo = [loc for loc in study.locales if not is_finished(layout.finetuned(loc))]
    lines = [f"study {study.name!r}: {len(study.locales)} locales, backbone {study.backbone}, root {study.root}, "
             f"launcher {study.launcher}",
             f"  fit: {len(study.locales) - len(todo)} finished, {len(todo)} to run{': ' + ' '.join(todo) if todo else ''}"]
    for split in study.nxn_splits:
        left = missing_cells(study, split)
        lines.append(f"  nxn {split}: {sum(left.values())} of {len(study.locales) ** 2} cells to evaluate "
                     f"({len(left)} shard(s))")
    lines.append(f"  sweep: {len(study.sweep_plan().points())} points into {study.sweep_plan().db}")
    if study.launcher == "submitit":
        for stage in STAGES:
            settings = study.stage_settings(stage)
            cap = local_max_jobs(settings) if settings.get("cluster") == "local" else settings.get("slurm_array_parallelism")
            lines.append(f"  {stage} jobs: time limit {settings['timeout_min']} min"
                         f"{f', at most {cap} at once' if cap else ''}, logs in {settings['folder']}")
    return "\n".join(lines)


def save_settings(study: Study) -> Path:
    """The study's settings as a config that ``merginguriel study --config`` reads: the command that resumes it."""
    import yaml

    from merginguriel.io.atomic import atomic_write_text

    path = study_config(study.root, study.name)
    atomic_write_text(path, yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(study))), sort_keys=False))
    return path


def run_study(study: Study, dry_run: bool = False) -> dict[str, Any]:
    """Run (or resume) the study; returns ``{"failed": {stage: {task: Failure}}, "sweep": run_sweep's result,
    "interrupted": the stage a Ctrl-C stopped (or None), "resume": the config that resumes it}``. A stage with failed
    tasks stops the study there (the next stages need its outputs)."""
    sweep = study.sweep_plan()
    sweep.points()  # every point checked before anything runs
    if dry_run:
        return {"failed": {}, "sweep": None, "interrupted": None, "resume": None, "plan": plan_text(study)}
    resume = save_settings(study)
    stage = ["setup"]
    interrupted = []
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):  # remembered: Lightning turns a Ctrl-C during a fit into SystemExit(1)
        interrupted.append(signum)
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()  # signal handlers belong to the main thread
    if in_main:
        signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = _run_stages(study, sweep, stage)
    except (KeyboardInterrupt, SystemExit) as err:
        if not (isinstance(err, KeyboardInterrupt) or interrupted):
            raise
        result = {"failed": {}, "sweep": None, "interrupted": stage[0]}
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    return {"interrupted": None, **result, "resume": str(resume)}


def _run_stages(study: Study, sweep: Sweep, stage: list[str]) -> dict[str, Any]:
    """The three stages, ``stage[0]`` naming the one running (for the message of a Ctrl-C)."""
    from merginguriel.checkpoints import embedded_home
    from merginguriel.experiments.runner import run_sweep
    from merginguriel.models.base import ensure_base

    workdir = os.getcwd()
    if study.backbone == EMBEDDED:  # built once here, not by every task at the same time
        from merginguriel.embedded.build import ensure_embedded_backbone

        ensure_embedded_backbone(embedded_home(study.root))
    seed = study.base_seed()
    if seed is None:
        ensure_base(study.backbone, study.root)
    else:
        ensure_base(study.backbone, study.root, seed)
    layout = study.layout

    todo = [loc for loc in study.locales if not is_finished(layout.finetuned(loc))]
    stage[0] = "fit"
    _log(f"[fit] {len(study.locales)} locales: {len(study.locales) - len(todo)} finished already, {len(todo)} to run")
    failed = _launch(study, "fit", fit_task, [(study, loc, workdir) for loc in todo], todo)
    if failed:
        return {"failed": {"fit": failed}, "sweep": None}

    stage[0] = "nxn"
    shards = [(split, model) for split in study.nxn_splits for model in missing_cells(study, split)]
    _log(f"[nxn] {len(shards)} shard(s) to run over {', '.join(study.nxn_splits)}")
    labels = [f"{split} {model}" for split, model in shards]
    failed = _launch(study, "nxn", nxn_task, [(study, split, model, workdir) for split, model in shards], labels)
    if failed:
        return {"failed": {"nxn": failed}, "sweep": None}
    for split in study.nxn_splits:
        _log(f"[nxn] {split} matrix: {merge_shards(study, split)}")

    stage[0] = "sweep"
    _log(f"[sweep] {sweep.name!r} into {sweep.db}")
    result = run_sweep(sweep)
    failed = {**failed_points(sweep), **result["died"]}
    return {"failed": {"sweep": failed} if failed else {}, "sweep": result}


def failed_points(sweep: Sweep) -> dict[str, Failure]:
    """The sweep's points recorded as failed, each with the end of its recorded error."""
    from merginguriel.experiments.db import ResultsDB
    from merginguriel.jobs.spec import job_from_dict

    with ResultsDB(sweep.db, readonly=True) as db:
        rows = db.rows(sweep=sweep.name, status="failed")
    out = {}
    for r in rows:
        lines = [line for line in (r["error"] or "failed").splitlines() if line.strip()]
        out[f"{r['key'][:12]} {job_from_dict(r['config']).describe()}"] = Failure("", lines[-1].strip(), lines[-5:-1], "")
    return out
