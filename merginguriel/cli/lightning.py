"""`merginguriel fit | validate | test | predict`: LightningCLI over IntentClassifier and MassiveDataModule.

fit: starts from the shared base of the backbone (made on first use), early-stops on validation accuracy, keeps the best
checkpoint, resumes from `last.ckpt` when a previous fit was interrupted, and exports the best weights as a Hugging Face
folder with a manifest to `<root>/<backbone>/finetuned/<locale>/` (atomically: an interrupted fit leaves no folder that
looks finished). test/validate: evaluate `--model.checkpoint` (or the untrained shared base), print accuracy per locale
and write a metrics JSON beside the checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from merginguriel.data.datamodule import MassiveDataModule
from merginguriel.errors import InputError
from merginguriel.io import write_json_atomic
from merginguriel.models.classifier import IntentClassifier


def best_checkpoint(callback: ModelCheckpoint) -> tuple[Optional[str], Optional[float]]:
    """The best checkpoint file and its score.

    Usually the callback's own record. But a fit killed after a new best was saved (and the old one deleted) and before
    `last.ckpt` was rewritten resumes with a record naming the deleted file: then the best surviving file wins, by the
    score each file recorded when it was saved.
    """
    best = callback.best_model_path
    if best and Path(best).is_file():
        return best, float(callback.best_model_score) if callback.best_model_score is not None else None
    scored = []
    for path in Path(callback.dirpath).glob("best-*.ckpt"):
        states = torch.load(path, map_location="cpu", weights_only=False).get("callbacks", {})
        values = [v.get("best_model_score") for k, v in states.items() if k.startswith("ModelCheckpoint")]
        if values and values[0] is not None:
            scored.append((float(values[0]), str(path)))
    if not scored:
        return None, None
    score, path = max(scored) if callback.mode == "max" else min(scored)
    return path, score


class MergingUrielCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/accuracy", "early_stopping.mode": "max", "early_stopping.patience": 3})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {"checkpoint.monitor": "val/accuracy", "checkpoint.mode": "max", "checkpoint.save_top_k": 1,
             "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch:02d}"}
        )
        parser.add_argument("--output", type=Optional[str], default=None,
                            help="fit: export folder (default <root>/<backbone>/finetuned/<locale>); test/validate: metrics JSON path")
        parser.add_argument("--overwrite", type=bool, default=False, help="fit: replace an existing finished fine-tune")
        parser.add_argument("--torch_threads", type=int, default=0,
                            help="CPU threads for torch (0: torch's default). Tiny models run fastest on 1, especially on a busy machine")
        parser.link_arguments("model.root", "data.root")
        # The data is tokenised with the tokenizer saved beside the weights the model starts from.
        parser.link_arguments("model", "data.tokenizer", compute_fn=lambda model: str(model.source_path), apply_on="instantiate")

    # --- fit ------------------------------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        threads = self.config[self.subcommand].get("torch_threads") or 0
        if threads > 0:
            torch.set_num_threads(threads)
        if self.subcommand != "fit":
            return
        from merginguriel.checkpoints import Layout

        cfg = self.config.fit
        locales = [cfg.data.locales] if isinstance(cfg.data.locales, str) else list(cfg.data.locales)
        self._export = Path(cfg.output) if cfg.output else Layout.for_backbone(cfg.model.backbone, cfg.model.root).finetuned("+".join(locales))
        ckpt_dir = self._export.with_name(self._export.name + ".lightning")
        # Fixed places (not a new version folder per run) so that a rerun finds last.ckpt and resumes.
        if cfg.trainer.default_root_dir is None:
            cfg.trainer.default_root_dir = str(ckpt_dir)
        if cfg.checkpoint.dirpath is None:
            cfg.checkpoint.dirpath = str(ckpt_dir / "checkpoints")

    def before_fit(self) -> None:
        if self.model.hparams.checkpoint is not None:
            raise InputError("fit starts from the shared base; drop --model.checkpoint (it is for validate/test)")
        if (self._export / "manifest.json").is_file() and not self.config["fit"]["overwrite"]:
            raise InputError(f"{self._export} is already fine-tuned; pass --overwrite true to fine-tune it again")
        last = Path(self.trainer.checkpoint_callback.dirpath) / "last.ckpt"
        if self.config_init["fit"].get("ckpt_path") is None and last.is_file():
            print(f"resuming the interrupted fit from {last}")
            self.config_init["fit"]["ckpt_path"] = str(last)
        self._fit_started = time.time()

    def after_fit(self) -> None:
        from merginguriel.models.export import export_hf

        best, score = best_checkpoint(self.trainer.checkpoint_callback)
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            self.model.load_state_dict(state)
        metrics = {
            "best_val_accuracy": score,
            "epochs": int(self.trainer.current_epoch),
            "global_steps": int(self.trainer.global_step),
            "fit_seconds": round(time.time() - self._fit_started, 2),
        }
        export = self._export
        if self.trainer.is_global_zero:
            config = json.loads(json.dumps(self.config["fit"].as_dict(), default=str))
            export_hf(
                self.model.model, self.model.tokenizer, export, kind="finetuned", overwrite=True,
                locale="+".join(self.datamodule.locales), locales=list(self.datamodule.locales), base=self.model.base_ref,
                best_checkpoint=best or None, seed=config.get("seed_everything"), metrics=metrics, config=config,
            )
            print(f"fine-tuned model: {export}  (best validation accuracy {metrics['best_val_accuracy']})")

    # --- validate / test ---------------------------------------------------------------------------------------------
    def _before_eval(self) -> None:
        names = list(self.datamodule.locales)
        self.model.set_eval_names(names)

    def before_test(self) -> None:
        self._before_eval()
        self.config_init["test"]["verbose"] = False  # the per-locale summary below replaces Lightning's table

    def after_test(self) -> None:
        results = self.model.eval_results
        for loc, values in results.items():
            print(f"test {loc}: accuracy {values['accuracy']:.4f}  macro-F1 {values['macro_f1']:.4f}  (n={values['n']})")
        source = self.model.source_path
        output = self.config["test"].get("output")
        path = Path(output) if output else Path(source) / "eval" / f"test-{'+'.join(results)}.json"
        if self.trainer.is_global_zero:
            write_json_atomic(path, {"checkpoint": str(source), "split": "test", "metrics": results})
            print(f"metrics: {path}")


def main(argv: list[str]) -> int:
    import sys

    precision = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    sys.argv = sys.argv[:1]  # the arguments come through `args`; LightningCLI warns when both are set
    MergingUrielCLI(
        IntentClassifier,
        MassiveDataModule,
        args=argv,
        seed_everything_default=42,
        trainer_defaults={"max_epochs": 15, "precision": precision, "log_every_n_steps": 10},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "merginguriel"},
    )
    return 0
