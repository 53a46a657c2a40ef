"""Fine-tuning throughput: merginguriel's Lightning fit vs a Hugging Face `Trainer` run of the same model, data, batch size and precision.

Also: evaluation throughput of the test loop (IntentClassifier through `evaluate_model`, one call over the test splits
of 8 locales, length-sorted batches from the tokenisation cache) vs a plain per-batch loop over the same model and
rows in dataset order.

    python benchmarks/bench_finetune.py [--locale es-ES] [--epochs 2] [--batch-size 32] [--repeats 3] [--threads 1] [--root checkpoints]

Prints a markdown table; ratios are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

import torch  # noqa: E402


def lightning_fit(args, data, base) -> float:
    import lightning as L

    from merginguriel.data import MassiveDataModule
    from merginguriel.models.classifier import IntentClassifier

    L.seed_everything(0, verbose=False)
    model = IntentClassifier(checkpoint=str(base), root=args.root)
    dm = MassiveDataModule(args.locale, source=data.source, root=args.root, batch_size=args.batch_size, tokenizer=model.tokenizer)
    dm.setup("fit")
    n = len(dm.train_dataloader().dataset) if hasattr(dm.train_dataloader(), "dataset") else None
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=1, precision="32-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    t = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    return n * args.epochs / (time.perf_counter() - t)


def hf_trainer_fit(args, data, base, group_by_length: bool) -> float:
    import datasets
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from merginguriel.data import tokenized_split

    tok = AutoTokenizer.from_pretrained(base)
    split = tokenized_split(data, tok, args.locale, "train")
    ds = datasets.Dataset.from_dict({"input_ids": list(split["input_ids"]), "labels": list(split["labels"])})
    ds = ds.map(lambda r: {"attention_mask": [1] * len(r["input_ids"])})
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs, learning_rate=5e-5,
            weight_decay=0.01, warmup_steps=int(0.1 * args.epochs * -(-len(ds) // args.batch_size)), lr_scheduler_type="linear", save_strategy="no", report_to=[],
            logging_strategy="no", use_cpu=True, dataloader_num_workers=0,
            train_sampling_strategy="group_by_length" if group_by_length else "random",
            disable_tqdm=True, seed=0,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        t = time.perf_counter()
        trainer.train()
        return len(ds) * args.epochs / (time.perf_counter() - t)


EVAL_LOCALES = ["es-ES", "pt-PT", "ca-ES", "fr-FR", "it-IT", "ro-RO", "id-ID", "ms-MY"]


def eval_test_loop(args, data, base) -> float:
    from merginguriel.evaluation.evaluate import evaluate_model, load_checkpoint

    model, tok = load_checkpoint(base)
    t = time.perf_counter()
    res = evaluate_model(model, tok, EVAL_LOCALES, "test", data, batch_size=128, device="cpu")
    return sum(r["n"] for r in res.values()) / (time.perf_counter() - t)


def eval_plain_loop(args, data, base) -> float:
    from merginguriel.data import tokenized_split
    from merginguriel.evaluation.evaluate import load_checkpoint

    model, tok = load_checkpoint(base)
    ids, labels = [], []
    for loc in EVAL_LOCALES:
        split = tokenized_split(data, tok, loc, "test")
        ids += split["input_ids"]
        labels += split["labels"]
    t = time.perf_counter()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(ids), 128):
            chunk = ids[i : i + 128]
            width = max(map(len, chunk))
            x = torch.full((len(chunk), width), tok.pad_token_id)
            mask = torch.zeros_like(x)
            for j, row in enumerate(chunk):
                x[j, : len(row)] = torch.tensor(row)
                mask[j, : len(row)] = 1
            pred = model(input_ids=x, attention_mask=mask).logits.argmax(-1)
            correct += int((pred == torch.tensor(labels[i : i + 128])).sum())
    return len(ids) / (time.perf_counter() - t)


def _quiet() -> None:
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    disable_progress_bar()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--locale", default="es-ES")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--root", default="checkpoints")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the tiny backbone is fastest on 1)")
    args = p.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    _quiet()
    torch.set_num_threads(args.threads)

    from merginguriel.data import DataConfig
    from merginguriel.data.tokenized import TOKENIZE_CALLS
    from merginguriel.models.base import ensure_base

    data = DataConfig(source="embedded", root=args.root)
    base = ensure_base("embedded", args.root)
    rows = {}
    for _ in range(args.repeats):  # interleaved so machine noise hits every contender alike; best of the repeats
        for name, fn in [
            ("fit: merginguriel (Lightning)", lambda: lightning_fit(args, data, base)),
            ("fit: HF Trainer", lambda: hf_trainer_fit(args, data, base, False)),
            ("fit: HF Trainer (group_by_length)", lambda: hf_trainer_fit(args, data, base, True)),
            ("eval: merginguriel test loop", lambda: eval_test_loop(args, data, base)),
            ("eval: plain per-batch loop", lambda: eval_plain_loop(args, data, base)),
        ]:
            rows[name] = max(rows.get(name, 0.0), fn())
    misses = sum(TOKENIZE_CALLS.values())
    print(f"\nmodel: embedded tiny backbone ({base}); locale {args.locale}; batch {args.batch_size}; fp32 CPU; "
          f"{torch.get_num_threads()} threads; tokenisations in this process: {misses} (cache hits after the first)\n")
    print("| run | examples/s | ratio |")
    print("|---|---|---|")
    fit_ref, eval_ref = rows["fit: HF Trainer"], rows["eval: plain per-batch loop"]
    for name, v in rows.items():
        ref = fit_ref if name.startswith("fit") else eval_ref
        print(f"| {name} | {v:,.0f} | {v / ref:.2f}x |")


if __name__ == "__main__":
    main()
