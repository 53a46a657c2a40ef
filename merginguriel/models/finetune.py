"""Fine-tuning one model per locale: the recipe (a LightningCLI parser over IntentClassifier, MassiveDataModule and
the Trainer), resuming, and the export to ``<root>/<backbone>/finetuned/<locale>/``. `merginguriel fit` and the quick
start both run :func:`finetune`.

Resuming. ``last.ckpt`` is saved at the end of EVERY epoch (Lightning's own ``save_last`` only saves it with a new best
when ``save_top_k`` is set, so a resumed run would retrain later epochs), and ``final.ckpt`` once training has ended,
before the export starts. A fit killed during training resumes from ``last.ckpt``; one killed after training goes
straight to the export from ``final.ckpt``: either way the exported model is the one an uninterrupted run exports.

Disk. Lightning's working files live in ``<root>/<backbone>/runs/<locale>/`` (``Layout.fit_run``), not beside the
export. Once the export is written and its weights are checked tensor by tensor against the trained model, the .ckpt
files are removed (a rerun reuses the export and needs none of them); ``--keep_checkpoints true`` keeps them. A fit
killed between the two removes them on its rerun (the manifest's config says whether they were to be kept), once the
export's weights match its manifest's hash.

Determinism. The seed is applied right before training, so a fit gives the same weights whatever ran before it in
the process (building the embedded backbone, other fits).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from merginguriel.checkpoints import EMBEDDED
from merginguriel.data.datamodule import MassiveDataModule
from merginguriel.errors import InputError
from merginguriel.models.classifier import IntentClassifier

LAST = "last.ckpt"
FINAL = "final.ckpt"
NEAR_CHANCE = 3 / 60  # three times chance over the 60 intents
# The recipe a fit without --config gets: the one made for its backbone.
RECIPES = {EMBEDDED: "fit-embedded", "FacebookAI/xlm-roberta-base": "fit-xlmr-base", "xlm-roberta-base": "fit-xlmr-base"}


def recipe_for(backbone: str) -> Optional[str]:
    """The shipped fit recipe of a backbone (None for a backbone without one: the library defaults apply)."""
    return RECIPES.get(backbone)


def best_checkpoint(callback: ModelCheckpoint) -> tuple[Optional[str], Optional[float]]:
    """The best checkpoint file and its score.

    Usually the callback's own record. But a fit killed after a new best was saved (and the old one deleted) and before
    the resume point was rewritten resumes with a record naming the deleted file: then the best surviving file wins, by
    the score each file recorded when it was saved.
    """
    best = callback.best_model_path
    if best and Path(best).is_file():
        return best, float(callback.best_model_score) if callback.best_model_score is not None else None
    scored = []
    for path in Path(callback.dirpath).glob("best-*.ckpt"):
        try:
            states = torch.load(path, map_location="cpu", weights_only=False).get("callbacks", {})
        except Exception:  # cut short (a full disk, a kill): not a candidate
            continue
        values = [v.get("best_model_score") for k, v in states.items() if k.startswith("ModelCheckpoint")]
        if values and values[0] is not None:
            scored.append((float(values[0]), str(path)))
    if not scored:
        return None, None
    score, path = max(scored) if callback.mode == "max" else min(scored)
    return path, score


def rng_states() -> dict:
    """The states of every random number generator a fit draws from (torch, CUDA, numpy, Python), as plain values."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss], "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(tuple(states["python"][:1]) + (tuple(states["python"][1]),) + tuple(states["python"][2:]))


class ResumePoint(Callback):
    """Saves ``last.ckpt`` at the end of every training epoch (after validation and the best-model checkpoint).

    Every checkpoint also holds the random generators' states, and a resumed fit restores them right before training
    continues (Lightning does not): dropout then draws what the uninterrupted fit drew, so both end with the same model.
    """

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self._restore: Optional[dict] = None

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restore = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._restore is not None:  # after the resumed run's sanity check, which drew from the generators
            set_rng_states(self._restore)
            self._restore = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        save_resume_point(trainer, self.dirpath / LAST)


def save_resume_point(trainer: L.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` through a temporary beside ``path``: a resume point cut short by a kill or a full
    disk never replaces a good one (Lightning stages the file elsewhere and copies it over, which can stop half way)."""
    from merginguriel.io import atomic_file

    if not trainer.is_global_zero:
        trainer.save_checkpoint(str(path))  # a collective call; only rank 0 writes
        return
    with atomic_file(path) as tmp:
        trainer.save_checkpoint(str(tmp))


class FinetuneCLI(LightningCLI):
    """The fit recipe: model, data, trainer, early stopping and best-checkpoint options, plus output and threads."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/accuracy", "early_stopping.mode": "max", "early_stopping.patience": 3})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {"checkpoint.monitor": "val/accuracy", "checkpoint.mode": "max", "checkpoint.save_top_k": 1,
             "checkpoint.save_last": False, "checkpoint.filename": "best-{epoch:02d}"}
        )
        parser.add_argument("--output", type=Optional[str], default=None,
                            help="fit: export folder (default <root>/<backbone>/finetuned/<locale>); test/validate: metrics JSON path")
        parser.add_argument("--overwrite", type=bool, default=False, help="fit: fine-tune again over a finished fine-tune")
        parser.add_argument("--keep_checkpoints", type=bool, default=False,
                            help="fit: keep the .ckpt files (best, last, final) once the export is verified; by default "
                                 "they are removed then (a rerun needs only the export)")
        parser.add_argument("--torch_threads", type=int, default=0,
                            help="CPU threads for torch (0: torch's default). Tiny models run fastest on 1, especially on a busy machine")
        parser.link_arguments("model.root", "data.root")
        # The data is tokenised with the tokenizer saved beside the weights the model starts from.
        parser.link_arguments("model", "data.tokenizer", compute_fn=lambda model: str(model.source_path), apply_on="instantiate")

    def _config(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._config()
        threads = cfg.get("torch_threads") or 0
        if threads > 0:
            torch.set_num_threads(threads)
        if self.subcommand not in (None, "fit"):
            return
        refuse_no_training(cfg.trainer)
        from merginguriel.checkpoints import Layout

        locales = [cfg.data.locales] if isinstance(cfg.data.locales, str) else list(cfg.data.locales)
        layout, name = Layout.for_backbone(cfg.model.backbone, cfg.model.root), "+".join(locales)
        self.export_dir = Path(cfg.output) if cfg.output else layout.finetuned(name)
        ckpt_dir = layout.fit_run(name, self.export_dir)
        if cfg.overwrite and ckpt_dir.is_dir():
            shutil.rmtree(ckpt_dir)  # a fresh fit: no resuming from the earlier one
        # Fixed places (not a new version folder per run) so that a rerun finds the resume points.
        if cfg.trainer.default_root_dir is None:
            cfg.trainer.default_root_dir = str(ckpt_dir)
        if cfg.checkpoint.dirpath is None:
            cfg.checkpoint.dirpath = str(ckpt_dir / "checkpoints")

    # --- validate / test: print per locale, write a metrics JSON -----------------------------------------------------
    def before_validate(self) -> None:
        self.datamodule.check_rows("validation")

    def before_test(self) -> None:
        self.datamodule.check_rows("test")
        self.model.set_eval_names(list(self.datamodule.locales))
        self.config_init["test"]["verbose"] = False  # the per-locale summary below replaces Lightning's table

    def after_test(self) -> None:
        from merginguriel.io import write_json_atomic

        results = self.model.eval_results
        for loc, values in results.items():
            print(f"test {loc}: accuracy {values['accuracy']:.4f}  macro-F1 {values['macro_f1']:.4f}  (n={values['n']})")
        output = self.config["test"].get("output")
        path = Path(output) if output else Path(self.model.source_path) / "eval" / f"test-{'+'.join(results)}.json"
        if self.trainer.is_global_zero:
            write_json_atomic(path, {"checkpoint": str(self.model.source_path), "split": "test", "metrics": results})
            print(f"metrics: {path}")


def refuse_no_training(trainer: Any) -> None:
    """Trainer limits that allow no optimisation step would export the untrained base as a fine-tune: refused before
    anything is written."""
    for option in ("max_epochs", "max_steps", "limit_train_batches"):
        if trainer.get(option) == 0:
            raise InputError(f"--trainer.{option} 0 trains nothing, and the untrained base would be exported as the "
                             f"fine-tune; give --trainer.{option} >= 1 (or leave it out)")


def make_cli(args: Any, run: bool) -> FinetuneCLI:
    import sys

    precision = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    sys.argv = sys.argv[:1]  # the arguments come through `args`; LightningCLI warns when both are set
    return FinetuneCLI(
        IntentClassifier, MassiveDataModule, args=args, run=run, seed_everything_default=42,
        trainer_defaults={"max_epochs": 15, "precision": precision, "log_every_n_steps": 10},
        save_config_kwargs={"overwrite": True}, parser_kwargs={"prog": "merginguriel" if run else "merginguriel fit"},
    )


def _export(cli: FinetuneCLI, callback: ModelCheckpoint, started: float, resumed: Optional[str]) -> list[str]:
    """Export the best model (rank 0); returns the warnings about it, for the fit to print last."""
    from merginguriel.models.export import export_hf

    best, score = best_checkpoint(callback)
    if best:
        cli.model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    # memory-mapped: only the counters are read, not the weights and optimiser state (GBs for XLM-R)
    final = torch.load(Path(callback.dirpath) / FINAL, map_location="cpu", weights_only=False, mmap=True)
    metrics = {"best_val_accuracy": score, "epochs": int(final["epoch"]), "global_steps": int(final["global_step"]),
               "fit_seconds": round(time.time() - started, 2)}
    found: list[str] = []
    if score is None or score < NEAR_CHANCE:
        found.append(
            f"best validation accuracy {score} is near chance (1/60 = 0.017): the recipe does not suit this backbone "
            "(learning rate, epochs); for the embedded backbone use --config fit-embedded, for XLM-R --config fit-xlmr-base"
        )
    export = cli.export_dir
    if cli.trainer.is_global_zero:
        config = json.loads(json.dumps(cli._config().as_dict(), default=str))
        export_hf(
            cli.model.model, cli.model.tokenizer, export, kind="finetuned", overwrite=True,
            locale="+".join(cli.datamodule.locales), locales=list(cli.datamodule.locales), base=cli.model.base_ref,
            best_checkpoint=best or None, seed=config.get("seed_everything"), metrics=metrics, config=config,
            resumed_from=resumed, warnings=found,
        )
        print(f"fine-tuned model: {export}  (best validation accuracy {metrics['best_val_accuracy']})")
    return found if cli.trainer.is_global_zero else []


def checkpoint_files(callback: ModelCheckpoint) -> list[Path]:
    """A fit's .ckpt files that exist: the best ones (including any a kill left behind), the resume point, the final one."""
    folder = Path(callback.dirpath)
    named = [callback.best_model_path, callback.last_model_path, *callback.best_k_models]
    files = {folder / LAST, folder / FINAL, *folder.glob("best-*.ckpt"), *(Path(p) for p in named if p)}
    return sorted(f for f in files if f.is_file())


def remove_checkpoints(callback: ModelCheckpoint, export: Path, why: str) -> None:
    """Delete a finished fit's .ckpt files once its export is verified: a rerun reuses the export and needs none of
    them (each is about three times the model: its weights and the optimiser's two moments)."""
    files = checkpoint_files(callback)
    if not files:
        return
    freed = sum(f.stat().st_size for f in files)
    for f in files:
        f.unlink()
    with contextlib.suppress(OSError):  # empty now, unless the user keeps other files there
        Path(callback.dirpath).rmdir()
    print(f"removed the fit's {len(files)} checkpoint file(s) ({freed / 1e6:.0f} MB): {export} is {why} "
          "(--keep_checkpoints true keeps them)")


def finetune_with(cli: FinetuneCLI) -> Path:
    """Fit (resuming where an interrupted fit stopped), export, verify the export, and remove the checkpoints (unless
    ``--keep_checkpoints``), for an instantiated recipe."""
    from merginguriel.checkpoints import is_finished

    from merginguriel.io import checkpoint_hash, read_manifest, remove_dead_temporaries

    cfg = cli._config()
    export = cli.export_dir
    callback = cli.trainer.checkpoint_callback
    remove_dead_temporaries(export)  # an export cut short by a kill
    if is_finished(export) and not cfg.overwrite:
        print(f"{export} is already fine-tuned (reused; pass --overwrite true to fine-tune it again)")
        # checkpoints left by a fit killed between its export and their removal (a fit that kept them on purpose
        # says so in its manifest); the export's weights must still be the bytes its manifest hashed
        manifest = read_manifest(export)
        if not (manifest.get("config") or {}).get("keep_checkpoints", True) and cli.trainer.is_global_zero \
                and checkpoint_files(callback) and manifest.get("hash") == checkpoint_hash(export):
            remove_checkpoints(callback, export, "finished and its weights match its manifest's hash")
        return export
    if cli.model.hparams.checkpoint is not None:
        raise InputError("fit starts from the shared base; drop --model.checkpoint (it is for validate/test)")
    ckpt_dir = Path(callback.dirpath)
    started = time.time()
    final, last = ckpt_dir / FINAL, ckpt_dir / LAST
    resumed: Optional[str] = None
    if final.is_file():
        # training had ended; only the export was interrupted: restore the callback's record and export
        state = torch.load(final, map_location="cpu", weights_only=False, mmap=True)  # the callbacks' records only
        for key, value in state.get("callbacks", {}).items():
            if key.startswith("ModelCheckpoint"):
                callback.load_state_dict(value)
        print(f"training had finished ({final}); exporting")
        resumed = str(final)
    else:
        if last.is_file():
            print(f"resuming the interrupted fit from {last}")
            resumed = str(last)
        cli.datamodule.check_rows("train", "validation")  # early stopping and the best checkpoint need validation rows
        cli.trainer.callbacks.append(ResumePoint(str(ckpt_dir)))
        L.seed_everything(cfg.get("seed_everything", 42), workers=True, verbose=False)
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        try:
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resumed)
        except MisconfigurationException as err:  # Lightning's refusal of the trainer's settings, before any step
            if resumed is None:
                shutil.rmtree(cfg.trainer.default_root_dir or ckpt_dir, ignore_errors=True)  # this run's logs only
            raise InputError(f"fit: {err}") from None
        if cli.trainer.global_step == 0:  # the base, untrained, must never be exported as the locale's fine-tune
            shutil.rmtree(cfg.trainer.default_root_dir or ckpt_dir, ignore_errors=True)  # this run's logs only
            raise InputError("fit ran no optimisation step (the training data gave no batch within the trainer's "
                             "limits); nothing was exported: check --trainer.max_epochs / max_steps / max_time / limit_train_batches")
        save_resume_point(cli.trainer, final)
    found = _export(cli, callback, started, resumed)
    if not cfg.keep_checkpoints and cli.trainer.is_global_zero:
        from merginguriel.models.export import differing_tensors

        differ = differing_tensors(export, cli.model.model) if is_finished(export) else ["(not finished)"]
        if differ:  # never delete the only copy of a model: keep the checkpoints and say so
            print(f"WARNING: {export} does not hold the trained weights ({', '.join(differ[:3])} differ); "
                  f"its checkpoints are kept in {callback.dirpath}")
        else:
            remove_checkpoints(callback, export, "verified (its weights are the trained model's, tensor by tensor)")
    for w in found:  # last, so that they are what a user sees
        print(f"\nWARNING: {w}\n")
        warnings.warn(w, stacklevel=2)
    return export


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def finetune(recipe: Optional[str], overrides: dict) -> Path:
    """Fine-tune from a recipe (a shipped config name or a YAML path; None: the library defaults) with ``overrides``
    (nested like the YAML: ``{"data": {"locales": "es-ES"}, "model": {"root": "checkpoints"}}``)."""
    import yaml

    from merginguriel.configs import config_path

    config = yaml.safe_load(config_path(recipe).read_text(encoding="utf-8")) if recipe else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        cli = make_cli(deep_update(config or {}, overrides), run=False)
    return finetune_with(cli)
