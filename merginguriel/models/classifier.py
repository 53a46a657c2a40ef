"""IntentClassifier: the LightningModule for per-locale fine-tuning and for evaluating any checkpoint.

It wraps `AutoModelForSequenceClassification` with the 60 MASSIVE intents in the hub's order. For `fit` it starts from
the shared base of its backbone (created on first use); given ``checkpoint`` it loads that Hugging Face folder instead
(a fine-tuned, merged or base model) — which is how `validate` and `test` evaluate any checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, is_finished
from merginguriel.io import read_manifest
from merginguriel.locales import NUM_INTENTS


def _metrics() -> MetricCollection:
    return MetricCollection(
        {
            # Inputs are always well-formed logits and labels here; validating them every batch costs more than the update.
            "accuracy": MulticlassAccuracy(num_classes=NUM_INTENTS, average="micro", validate_args=False),
            "macro_f1": MulticlassF1Score(num_classes=NUM_INTENTS, average="macro", validate_args=False),
        }
    )


def _dataset_order(preds: torch.Tensor, order) -> torch.Tensor:
    """Predictions of a length-sorted loader put back in dataset order (as is when the loader kept the order)."""
    if order is None:
        return preds
    from merginguriel.data import to_dataset_order

    return to_dataset_order(preds, order)


class IntentClassifier(L.LightningModule):
    def __init__(
        self,
        backbone: str = EMBEDDED,
        checkpoint: Optional[str] = None,
        root: str = DEFAULT_ROOT,
        base_seed: int = 42,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        adam_epsilon: float = 1e-8,
        head_learning_rate: Optional[float] = None,
        label_smoothing: float = 0.0,
    ) -> None:
        """
        Args:
            backbone: a hub model id (e.g. ``FacebookAI/xlm-roberta-base``), a local folder, or ``embedded`` (the tiny
                offline backbone). Fine-tunes start from this backbone's shared base under ``root``.
            checkpoint: a Hugging Face folder to load instead of the shared base (a fine-tuned, merged or base
                model); this is how `validate`/`test` evaluate any checkpoint.
            root: the checkpoints root (the shared base and fine-tunes live under ``root/<backbone>/``).
            base_seed: seed of the shared base's classification head (fixed per backbone).
            learning_rate: AdamW learning rate.
            weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
            warmup_ratio: fraction of the training steps with linear warm-up, then linear decay to zero.
            adam_epsilon: AdamW epsilon.
            head_learning_rate: learning rate of the new classification head (None: ``learning_rate``). A narrow
                model's fresh head needs larger steps than its pre-trained encoder (the embedded recipe uses 10x).
            label_smoothing: the training loss's label smoothing (cross-entropy against (1 - s) on the true intent plus
                s spread evenly over all 60); 0 is plain cross-entropy. It caps how confident the head grows.
        """
        if not 0.0 <= label_smoothing < 1.0:
            from merginguriel.errors import InputError

            raise InputError(f"model.label_smoothing {label_smoothing} is outside [0, 1); pass e.g. 0.1, or 0 for plain cross-entropy")
        super().__init__()
        self.save_hyperparameters()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from merginguriel.models.base import ensure_base
        from merginguriel.models.export import check_intent_labels

        if checkpoint is None:
            path = ensure_base(backbone, root, base_seed)
        else:
            path = Path(checkpoint)
            if not path.is_dir():
                from merginguriel.errors import InputError

                raise InputError(f"checkpoint folder {path} does not exist; pass a Hugging Face model folder")
        self.source_path = Path(path)
        from merginguriel.io import model_files_checked

        with model_files_checked(path):
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
            check_intent_labels(self.model.config, path)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model.train()  # from_pretrained returns eval mode; dropout must run during fit
        # Which shared base this model descends from: the base itself, or what the checkpoint's manifest records.
        self.base_ref: Optional[dict] = None
        if is_finished(path):
            manifest = read_manifest(path)
            self.base_ref = {"path": str(path), "hash": manifest["hash"]} if manifest["kind"] == "base" else manifest.get("base")
        self.val_metrics = _metrics()
        self.eval_metrics = torch.nn.ModuleList()  # one collection per evaluation dataloader (locale), made on demand
        self.eval_names: list[str] = []
        self.eval_results: dict[str, dict[str, float]] = {}

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Any) -> "IntentClassifier":
        """Wrap an in-memory model (e.g. a merged one) for evaluation without touching disk."""
        self = cls.__new__(cls)
        L.LightningModule.__init__(self)
        self.model, self.tokenizer = model, tokenizer
        self.base_ref, self.source_path = None, None
        self.val_metrics = _metrics()
        self.eval_metrics = torch.nn.ModuleList()
        self.eval_names, self.eval_results = [], {}
        self.log_eval_results = False  # the caller reads ``eval_results``; logging 2 metrics per locale costs ~2 ms each
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    # --- training -------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"], label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"])
        self.val_metrics.update(logits, batch["labels"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=True)
        self.val_metrics.reset()

    # --- evaluation: one metric collection per test dataloader (locale) -------------------------------------------
    keep_logits = False  # set by predict_logits: the test loop then also keeps every batch's logits
    log_eval_results = True  # log test metrics (what `merginguriel test` prints); off for in-memory evaluation

    def set_eval_names(self, names: list[str]) -> None:
        """Names (locales) of the evaluation dataloaders, in order; metrics are reported under these names."""
        self.eval_names = list(names)

    def on_test_start(self) -> None:
        n = len(self.trainer.test_dataloaders) if isinstance(self.trainer.test_dataloaders, (list, tuple)) else 1
        if len(self.eval_names) != n:
            self.eval_names = [str(i) for i in range(n)]
        self.eval_metrics = torch.nn.ModuleList([_metrics() for _ in range(n)]).to(self.device)
        self.eval_results = {}
        # Predicted and true labels per locale; the metrics are updated once per locale at the end (their states are
        # sums, so the result is the same as per batch) instead of running two metric updates every batch.
        self.eval_preds: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.eval_labels: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.eval_logits: list[list[torch.Tensor]] = [[] for _ in range(n)]

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"])
        self.eval_preds[dataloader_idx].append(logits.argmax(-1))
        self.eval_labels[dataloader_idx].append(batch["labels"])
        if self.keep_logits:
            self.eval_logits[dataloader_idx].append(logits.float().cpu())

    def on_test_epoch_end(self) -> None:
        from merginguriel.io.predictions import pack

        for i, (name, collection) in enumerate(zip(self.eval_names, self.eval_metrics)):
            n, predictions = 0, ""
            if self.eval_preds[i]:
                labels = torch.cat(self.eval_labels[i])
                preds = torch.cat(self.eval_preds[i])
                collection.update(preds, labels)
                n = int(labels.shape[0])
                # the per-example predictions, in dataset order, kept beside the metrics (paired comparisons)
                order = getattr(self.trainer.test_dataloaders[i] if isinstance(self.trainer.test_dataloaders, (list, tuple))
                                else self.trainer.test_dataloaders, "order", None)
                predictions = pack(_dataset_order(preds, order))
            values = {k: float(v) for k, v in collection.compute().items()}
            self.eval_results[name] = {**values, "n": n, "predictions": predictions}
            if self.log_eval_results:
                self.log_dict({f"test/{name}/{k}": v for k, v in values.items()}, add_dataloader_idx=False)
            collection.reset()
        self.eval_preds = [[] for _ in self.eval_preds]
        self.eval_labels = [[] for _ in self.eval_labels]

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch["input_ids"], batch["attention_mask"]).float()

    # --- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        hp = self.hparams
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        encoder = self.model.base_model_prefix + "."  # everything else (the classification head) is new
        head_lr = hp.get("head_learning_rate") or hp.learning_rate
        groups = [
            {"params": params, "weight_decay": decay, "lr": hp.learning_rate if in_encoder else head_lr}
            for in_encoder in (True, False)
            for decay, params in (
                (hp.weight_decay, [p for n, p in self.model.named_parameters() if n.startswith(encoder) == in_encoder and not n.endswith(no_decay)]),
                (0.0, [p for n, p in self.model.named_parameters() if n.startswith(encoder) == in_encoder and n.endswith(no_decay)]),
            )
            if params
        ]
        # The fused kernel updates every parameter in one pass (CPU and CUDA); it is what keeps step overhead low.
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in self.model.parameters())
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, eps=hp.adam_epsilon, fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
