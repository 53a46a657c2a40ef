"""`merginguriel merge --merge.method adamerging`: learn the coefficients with a Lightning Trainer, then write the merged model.

The written model is exactly task arithmetic with the learned coefficients, θ_b + Σ_i λ_i τ_i (per tensor for
layer-wise), saved as a Hugging Face folder with ``coefficients.json``, the step-by-step log (``metrics.csv``) and
``manifest.json``, atomically. Lightning logs and checkpoints live beside it in ``<output>.lightning/``; a rerun of
the same run continues from the last checkpoint (``adamerging.resume``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from merginguriel.adamerging.options import AdaMergingOptions
from merginguriel.adamerging.rows import TensorLocation
from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError
from merginguriel.training import TrainerOptions

TEST_SPLIT_WARNING = (
    "AdaMerging adapted its coefficients on the TEST split of the target locale: test-set accuracy of this model is "
    "not an unbiased estimate (the evaluation data were seen during adaptation)"
)


@dataclass(frozen=True)
class Adaptation:
    """What AdaMerging adapts, from a checked merge plan (merginguriel.merging.methods.adamerging builds it): the base
    and the sources (folders, names, weights), the parameter tensors it merges (``learn``; the others keep the
    base's values), where each tensor lies in the checked files (``locate``: the base's first, then the sources'),
    the target and the output."""

    base: Path
    sources: tuple[Path, ...]
    names: tuple[str, ...]
    weights: tuple[float, ...]
    learn: frozenset[str]
    locate: Callable[[str], list[TensorLocation]]
    target: str
    output: Path
    overwrite: bool = False
    device: Optional[str] = None


def _lightning_dir(task: Adaptation, trainer: TrainerOptions) -> Path:
    if trainer.default_root_dir:
        return Path(trainer.default_root_dir)
    from merginguriel.checkpoints import Layout

    return Layout.lightning_logs(task.output)


def _resume_path(options: AdaMergingOptions, root: Path) -> str | None:
    if options.resume == "never":
        return None
    if options.resume == "auto":
        last = root / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return options.resume


def build_module(task: Adaptation, options: AdaMergingOptions, device: str | torch.device = "cpu"):
    """The base model, the (optionally TIES-processed) stacked task vectors and the LightningModule over them."""
    from transformers import AutoModelForSequenceClassification

    from merginguriel.adamerging.module import AdaMergingModule
    from merginguriel.adamerging.vectors import load_task_vectors, ties_process
    from merginguriel.io import model_files_checked

    with model_files_checked(task.base, "base"):
        model = AutoModelForSequenceClassification.from_pretrained(task.base)
    params = {n: p.detach() for n, p in model.named_parameters() if n in task.learn}
    if not params:
        raise InputError("every tensor is excluded (--exclude); nothing is left to merge")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[options.task_vector_dtype]
    embedding = next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight)
    rows = None
    # AdaMerging++ trims globally over the whole task vector, so it needs the embedding's task vectors in memory.
    if options.embedding_storage == "file" and embedding in params and not options.plus_plus:
        from merginguriel.adamerging.rows import FileRows

        rows = FileRows(embedding, task.locate(embedding))
        params.pop(embedding)
    tvs = load_task_vectors(params, list(task.sources), dtype=dtype, device=device)
    if options.plus_plus:
        ties_process(tvs, options.ties_density)
    if options.init == "weights":
        init = [float(w) for w in task.weights]
    else:
        init = [float(options.init_value)] * len(task.sources)
    return AdaMergingModule(
        model, tvs, init, granularity=options.granularity, clamp=options.clamp, lr=options.lr,
        embedding=options.embedding, source_names=list(task.names), embedding_rows=rows,
    )


def run_adamerging(task: Adaptation, options: AdaMergingOptions, trainer: TrainerOptions, data: DataConfig,
                   record: Callable[[Path, dict], None]) -> Path:
    """Learn AdaMerging coefficients for ``task`` and write the merged model.

    Runs on whatever the Trainer options ask for (``devices=4, strategy="ddp"`` shards the target utterances over
    four devices). ``record(folder, fields)`` writes the manifest (merginguriel.merging.manifest) inside the atomic
    write, with AdaMerging's own fields. Returns the output folder (written by global rank 0; the other ranks,
    launched by Lightning for the fit, exit when it ends).
    """
    from merginguriel.memory import PeakMemory

    with PeakMemory(task.device if task.device != "auto" else None) as probe:
        return _run(task, options, trainer, data, record, probe)


def _run(task: Adaptation, options: AdaMergingOptions, trainer: TrainerOptions, data: DataConfig,
         record: Callable[[Path, dict], None], probe) -> Path:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from transformers import AutoTokenizer

    from merginguriel.adamerging.data import TargetUtterances, target_utterances
    from merginguriel.io import model_files_checked

    t0 = time.perf_counter()
    # The base model is deliberately in eval mode (no dropout in the entropy objective).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings_out = []
    if options.split == "test":
        warnings.warn(TEST_SPLIT_WARNING, stacklevel=2)
        warnings_out.append(TEST_SPLIT_WARNING)

    with model_files_checked(task.base, "base"):
        tokenizer = AutoTokenizer.from_pretrained(task.base)
    rows = target_utterances(data, tokenizer, task.target, options.split, options.max_examples, options.seed)

    L.seed_everything(options.seed, workers=True, verbose=False)
    root = _lightning_dir(task, trainer)
    ckpt = _resume_path(options, root)
    attempt = _log_attempt(root, resuming=ckpt is not None)
    loggers = [CSVLogger(str(root), name="logs", version=attempt)]
    if options.tensorboard:
        loggers.append(TensorBoardLogger(str(root), name="tensorboard", version=attempt))
    checkpointing = ModelCheckpoint(
        dirpath=str(root / "checkpoints"), filename="step{step}", every_n_train_steps=max(1, options.checkpoint_every),
        save_last=True, save_top_k=1,
    )
    pl_trainer = L.Trainer(
        accelerator=trainer.accelerator, devices=trainer.devices, strategy=trainer.strategy, num_nodes=trainer.num_nodes,
        precision=trainer.precision, max_steps=options.steps, max_epochs=-1, logger=loggers, callbacks=[checkpointing],
        log_every_n_steps=trainer.log_every_n_steps, default_root_dir=str(root), deterministic=trainer.deterministic,
        use_distributed_sampler=False, limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False,
        enable_progress_bar=False,
    )
    if options.batch_size % pl_trainer.world_size:
        raise InputError(
            f"adamerging.batch_size={options.batch_size} is the global batch and must divide evenly over "
            f"{pl_trainer.world_size} devices; use a multiple of {pl_trainer.world_size}"
        )
    module = build_module(task, options)
    datamodule = TargetUtterances(rows, tokenizer.pad_token_id, options.batch_size, options.steps, options.seed)
    t_load = time.perf_counter()
    pl_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    if pl_trainer.global_step == 0:  # nothing adapted: no merged model may claim otherwise
        raise InputError(f"adamerging ran no optimisation step ({len(rows)} utterance(s) in {options.split}, batch size "
                         f"{options.batch_size}); nothing was written: give the target more rows or a smaller batch")
    t_fit = time.perf_counter()
    if not pl_trainer.is_global_zero:
        # Under DDP the other ranks are copies of this process that Lightning launched to run `fit`; what follows
        # (writing, and whatever the caller does with the result, e.g. `merge --evaluate`) belongs to rank 0 only.
        sys.exit(0)

    log_rows = _read_logs(root / "logs")
    entropies = [float(r["entropy"]) for r in log_rows if r.get("entropy")]
    model = module.install_merged_weights()
    timings = {"load_s": round(t_load - t0, 3), "fit_s": round(t_fit - t_load, 3)}
    from merginguriel.adamerging.trajectory import trajectory

    adaptation = {
        "split": options.split, "utterances": len(rows), "world_size": pl_trainer.world_size,
        "steps_done": pl_trainer.global_step, "entropy_first": entropies[0] if entropies else None,
        "entropy_last": entropies[-1] if entropies else None, "resumed_from": ckpt,
        "step_time_s": _steady_step_time(module.step_times),
        "trajectory": trajectory(log_rows, module),  # entropy and λ per step
    }
    fields = {
        "params": {**dataclasses.asdict(options), "trainer": dataclasses.asdict(trainer)},
        "device": str(pl_trainer.strategy.root_device), "adaptation": adaptation, "warnings": warnings_out,
    }
    return write_merged(task, model, tokenizer, module, fields, timings, t0, log_rows, probe, record)


def _steady_step_time(times: list[float]) -> float | None:
    """Mean step time after the first two (warm-up) steps of this process."""
    steady = times[2:] if len(times) > 2 else times
    return round(sum(steady) / len(steady), 5) if steady else None


def _log_attempt(root: Path, resuming: bool) -> str:
    """The log folder of this attempt: ``attempt-<n>``. A fresh (not resumed) run first drops the logs of earlier
    attempts, so the run's log is always the concatenation of the attempts that produced its coefficients."""
    logs = root / "logs"
    is_launcher = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    if not resuming and is_launcher and logs.is_dir():
        shutil.rmtree(logs)
    n = len(list(logs.glob("attempt-*"))) if logs.is_dir() else 0
    if not is_launcher:  # DDP children start after the launcher created its folder: share it
        n = max(0, n - 1)
    return f"attempt-{n}"


def _read_logs(logs: Path) -> list[dict[str, str]]:
    """Rows of every attempt's metrics.csv, in attempt order (the columns are the union of theirs)."""
    import csv

    rows: list[dict[str, str]] = []
    for path in sorted(logs.glob("attempt-*/metrics.csv"), key=lambda p: int(p.parent.name.split("-")[1])):
        with open(path, newline="", encoding="utf-8") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


def write_merged(task: Adaptation, model, tokenizer, module, fields: dict, timings: dict, t0: float, log_rows: list[dict],
                 probe, record: Callable[[Path, dict], None]) -> Path:
    """Write the merged model (HF folder), its coefficients, the coefficient log and the manifest, atomically."""
    from merginguriel.io import atomic_dir, write_json_atomic

    out = Path(task.output)
    coefficients = module.coefficient_table()
    with atomic_dir(out, overwrite=task.overwrite) as tmp:
        t_write = time.perf_counter()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "coefficients.json", {"granularity": module.granularity, "coefficients": coefficients})
        if log_rows:
            _write_csv(tmp / "metrics.csv", log_rows)
        from merginguriel.adamerging.trajectory import PLOT_NAME, plot_trajectory

        plot_trajectory(fields["adaptation"]["trajectory"], tmp / PLOT_NAME, title=f"AdaMerging for {task.target}")
        timings = {**timings, "write_s": round(time.perf_counter() - t_write, 3), "total_s": round(time.perf_counter() - t0, 3)}
        if module.granularity == "task":
            summary = coefficients
        else:
            summary = {s: sum(v.values()) / len(v) for s, v in coefficients.items()}
        record(tmp, {**fields, "dtype": "float32", "statistics": {}, "timings": timings,
                     "memory": probe.stop().record(), "coefficients": summary})
    return out


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    import csv

    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("step", "epoch", "entropy"), k))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
