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
from pathlib import Path
from typing import Any

import torch

from merginguriel.adamerging.options import AdaMergingOptions, TrainerOptions
from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError

TEST_SPLIT_WARNING = (
    "AdaMerging adapted its coefficients on the TEST split of the target locale: test-set accuracy of this model is "
    "not an unbiased estimate (the evaluation data were seen during adaptation)"
)


def check_options(options: AdaMergingOptions) -> None:
    """The options alone, before any model is read (sweeps check every point this way at planning)."""
    if options.split == "test" and not options.allow_test_split:
        raise InputError(
            "adamerging.split=test adapts on the evaluation data (test-set leakage); use validation (the default) or "
            "train, or pass --adamerging.allow_test_split true to accept the leak (it is recorded in the manifest)"
        )
    if options.steps < 0 or options.batch_size < 1 or options.lr < 0:
        raise InputError(
            f"adamerging needs steps >= 0, batch_size >= 1 and lr >= 0 (got steps={options.steps}, "
            f"batch_size={options.batch_size}, lr={options.lr})"
        )
    if not 0 < options.ties_density <= 1:
        raise InputError(f"adamerging.ties_density must be in (0, 1], got {options.ties_density}")


def check_spec(spec: Any, options: AdaMergingOptions):
    """Validate everything before anything heavy is loaded or written: the options, the target, and every input
    check any merge makes (merging.validate.check_inputs: base, sources, labels, architecture, weights, IncTar/ExcTar)."""
    if getattr(spec, "target", None) is None:
        raise InputError(
            "AdaMerging adapts on the target locale's unlabelled utterances, but no target was given; set the target (--target LOCALE)"
        )
    from merginguriel.locales import check_locale

    check_locale(spec.target)
    check_options(options)
    if options.init == "weights" and not any(float(s.weight) != 0 for s in spec.sources):
        raise InputError("adamerging.init=weights but every source weight is 0; give weights or use init=constant")
    from merginguriel.merging.validate import check_inputs

    return check_inputs(spec)


def _lightning_dir(spec: Any, trainer: TrainerOptions) -> Path:
    if trainer.default_root_dir:
        return Path(trainer.default_root_dir)
    from merginguriel.checkpoints import Layout

    return Layout.lightning_logs(spec.output)


def _resume_path(options: AdaMergingOptions, root: Path) -> str | None:
    if options.resume == "never":
        return None
    if options.resume == "auto":
        last = root / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(options.resume).is_file():
        raise InputError(f"adamerging.resume={options.resume!r} is not a checkpoint file; use auto, never or a .ckpt path")
    return options.resume


def build_module(spec: Any, options: AdaMergingOptions, device: str | torch.device = "cpu"):
    """The base model, the (optionally TIES-processed) stacked task vectors and the LightningModule over them."""
    from transformers import AutoModelForSequenceClassification

    from merginguriel.adamerging.module import AdaMergingModule
    from merginguriel.adamerging.vectors import load_task_vectors, ties_process
    from merginguriel.io import model_files_checked
    from merginguriel.merging.validate import exclude_matches

    with model_files_checked(spec.base, "base"):
        model = AutoModelForSequenceClassification.from_pretrained(spec.base)
    names = [n for n, _ in model.named_parameters()]
    skip = exclude_matches(list(spec.exclude or []), names)  # the engine's glob / re: pattern semantics
    params = {n: p.detach() for n, p in model.named_parameters() if n not in skip}
    if not params:
        raise InputError("every tensor is excluded (--exclude); nothing is left to merge")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[options.task_vector_dtype]
    embedding = next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight)
    rows = None
    # AdaMerging++ trims globally over the whole task vector, so it needs the embedding's task vectors in memory.
    if options.embedding_storage == "file" and embedding in params and not options.plus_plus:
        from merginguriel.adamerging.rows import FileRows

        rows = FileRows(spec.base, [s.path for s in spec.sources], embedding)
        params.pop(embedding)
    tvs = load_task_vectors(params, [s.path for s in spec.sources], dtype=dtype, device=device)
    if options.plus_plus:
        ties_process(tvs, options.ties_density)
    if options.init == "weights":
        init = [float(s.weight) for s in spec.sources]
    else:
        init = [float(options.init_value)] * len(spec.sources)
    names = [s.locale or Path(s.path).name for s in spec.sources]
    return AdaMergingModule(
        model, tvs, init, granularity=options.granularity, clamp=options.clamp, lr=options.lr,
        embedding=options.embedding, source_names=names, embedding_rows=rows,
    )


def run_adamerging(spec: Any, options: AdaMergingOptions, trainer: TrainerOptions, data: DataConfig) -> Path:
    """Learn AdaMerging coefficients for ``spec`` (base, sources, target, output) and write the merged model.

    Runs on whatever the Trainer options ask for (``devices=4, strategy="ddp"`` shards the target utterances over
    four devices). Returns the output folder (written by global rank 0; the other ranks, launched by Lightning for the
    fit, exit when it ends).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from transformers import AutoTokenizer

    from merginguriel.adamerging.data import TargetUtterances, target_utterances
    from merginguriel.io import model_files_checked
    from merginguriel.memory import PeakMemory

    t0 = time.perf_counter()
    probe = PeakMemory(spec.device if spec.device != "auto" else None).__enter__()
    # The base model is deliberately in eval mode (no dropout in the entropy objective).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    inputs = check_spec(spec, options)
    warnings_out = []
    if options.split == "test":
        warnings.warn(TEST_SPLIT_WARNING, stacklevel=2)
        warnings_out.append(TEST_SPLIT_WARNING)

    with model_files_checked(spec.base, "base"):
        tokenizer = AutoTokenizer.from_pretrained(spec.base)
    rows = target_utterances(data, tokenizer, spec.target, options.split, options.max_examples, options.seed)

    L.seed_everything(options.seed, workers=True, verbose=False)
    root = _lightning_dir(spec, trainer)
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
    module = build_module(spec, options)
    datamodule = TargetUtterances(rows, tokenizer.pad_token_id, options.batch_size, options.steps, options.seed)
    t_load = time.perf_counter()
    if options.steps > 0:
        pl_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    t_fit = time.perf_counter()
    if not pl_trainer.is_global_zero:
        # Under DDP the other ranks are copies of this process that Lightning launched to run `fit`; what follows
        # (writing, and whatever the caller does with the result, e.g. `merge --evaluate`) belongs to rank 0 only.
        sys.exit(0)

    log_rows = _read_logs(root / "logs")
    entropies = [float(r["entropy"]) for r in log_rows if r.get("entropy")]
    model = module.install_merged_weights()
    timings = {"load_s": round(t_load - t0, 3), "fit_s": round(t_fit - t_load, 3)}
    params = {**dataclasses.asdict(options), "trainer": dataclasses.asdict(trainer)}
    extra = {
        "adaptation": {
            "split": options.split, "utterances": len(rows), "world_size": pl_trainer.world_size,
            "steps_done": pl_trainer.global_step, "entropy_first": entropies[0] if entropies else None,
            "entropy_last": entropies[-1] if entropies else None, "resumed_from": ckpt,
            "step_time_s": _steady_step_time(module.step_times),
        },
        "warnings": warnings_out,
    }
    from merginguriel.adamerging.trajectory import trajectory

    extra["adaptation"]["trajectory"] = trajectory(log_rows, module)  # entropy and λ per step
    write_merged(spec, inputs, model, tokenizer, module, params, timings, extra, t0, log_rows, probe, str(pl_trainer.strategy.root_device))
    return Path(spec.output)


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


def write_merged(
    spec: Any, inputs, model, tokenizer, module, params: dict, timings: dict, extra: dict, t0: float,
    log_rows: list[dict], probe, device: str,
) -> Path:
    """Write the merged model (HF folder), its coefficients, the coefficient log and the manifest, atomically."""
    from merginguriel.io import atomic_dir, write_json_atomic
    from merginguriel.merging.manifest import write_merged_manifest

    out = Path(spec.output)
    coefficients = module.coefficient_table()
    with atomic_dir(out, overwrite=getattr(spec, "overwrite", False)) as tmp:
        t_write = time.perf_counter()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "coefficients.json", {"granularity": module.granularity, "coefficients": coefficients})
        if log_rows:
            _write_csv(tmp / "metrics.csv", log_rows)
        from merginguriel.adamerging.trajectory import PLOT_NAME, plot_trajectory

        plot_trajectory(extra["adaptation"]["trajectory"], tmp / PLOT_NAME, title=f"AdaMerging for {spec.target}")
        timings = {**timings, "write_s": round(time.perf_counter() - t_write, 3), "total_s": round(time.perf_counter() - t0, 3)}
        if module.granularity == "task":
            summary = coefficients
        else:
            summary = {s: sum(v.values()) / len(v) for s, v in coefficients.items()}
        total = sum(inputs.weights)
        write_merged_manifest(
            tmp,
            method="adamerging",
            params=params,
            base={"path": str(spec.base), "hash": inputs.base_hash},
            sources=inputs.records,
            weights_normalised=[w / total for w in inputs.weights],
            seed=spec.seed,
            target=spec.target,
            include_target=spec.include_target,
            selection=spec.selection,
            exclude={"patterns": list(spec.exclude or []), "tensors": inputs.excluded},
            statistics={},
            dtype="float32",
            device=device,
            timings=timings,
            memory=probe.stop().record(),
            job=spec.job,
            coefficients=summary,
            **extra,
        )
    return out


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    import csv

    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("step", "epoch", "entropy"), k))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
