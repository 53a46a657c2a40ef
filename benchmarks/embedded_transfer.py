"""Embedded default: build time, in-language accuracy and cross-lingual transfer of the tiny backbone.

Builds the embedded data and backbone into a fresh root (timed), fine-tunes the shared base (backbone + a seeded
60-intent head) on one source locale with a plain PyTorch loop, and evaluates it on many target locales' test splits.
Transfer should follow URIEL genetic distance: high to sister languages, near the anchor level to unrelated ones.
The same fine-tune from a randomly initialised encoder (no MLM pre-training) runs side by side for comparison.

    nice -n 10 .venv/bin/python benchmarks/embedded_transfer.py [--root DIR] [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from merginguriel.embedded.build import ensure_embedded_backbone, ensure_embedded_data
from merginguriel.embedded.typology import genetic_distances
from merginguriel.locales import ID2LABEL, INTENT_TO_ID, LABEL2ID, LOCALES, NUM_INTENTS

PAIRS = {
    "es-ES": ["es-ES", "pt-PT", "ca-ES", "fr-FR", "it-IT", "ro-RO", "en-US", "de-DE", "ru-RU", "ja-JP", "th-TH", "zh-CN"],
    "ru-RU": ["ru-RU", "pl-PL", "sl-SL", "mn-MN", "en-US", "th-TH"],
    "hi-IN": ["hi-IN", "ur-PK", "bn-BD", "ta-IN", "en-US"],
    "id-ID": ["id-ID", "ms-MY", "jv-ID", "tl-PH", "en-US"],
}


def rows(data_dir: Path, locale: str, partition: str) -> list[dict]:
    with open(data_dir / "1.1" / "data" / f"{locale}.jsonl", encoding="utf-8") as fh:
        return [r for r in map(json.loads, fh) if r["partition"] == partition]


def batches(tokenizer, examples: list[dict], batch_size: int, order: list[int]):
    for i in range(0, len(order), batch_size):
        chunk = [examples[j] for j in order[i : i + batch_size]]
        enc = tokenizer([r["utt"] for r in chunk], truncation=True, max_length=128, padding=True, return_tensors="pt")
        yield enc, torch.tensor([INTENT_TO_ID[r["intent"]] for r in chunk])


def finetune(backbone: Path, train: list[dict], epochs: int, lr: float, seed: int = 42, pretrained: bool = True):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    torch.manual_seed(seed)
    kwargs = dict(num_labels=NUM_INTENTS, id2label=dict(ID2LABEL), label2id=dict(LABEL2ID))
    if pretrained:
        model = AutoModelForSequenceClassification.from_pretrained(backbone, **kwargs)
    else:
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(backbone, **kwargs))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(train) + 31) // 32)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / (0.1 * steps), (steps - s) / (0.9 * steps)))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for enc, y in batches(tokenizer, train, 32, torch.randperm(len(train), generator=gen).tolist()):
            loss = model(**enc, labels=y).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model, tokenizer


@torch.no_grad()
def accuracy(model, tokenizer, examples: list[dict]) -> float:
    correct = 0
    for enc, y in batches(tokenizer, examples, 256, list(range(len(examples)))):
        correct += int((model(**enc).logits.argmax(-1) == y).sum())
    return correct / len(examples)


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="checkpoints root (default: a fresh temporary folder, so the build is timed)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="mu-embedded-"))
    folder = root / "embedded"
    t = time.perf_counter()
    data = ensure_embedded_data(folder)
    t_data = time.perf_counter() - t
    t = time.perf_counter()
    backbone = ensure_embedded_backbone(folder)
    t_backbone = time.perf_counter() - t
    print(f"build: data {t_data:.1f} s, backbone (tokenizer + MLM) {t_backbone:.1f} s  [{folder}]")

    dist = genetic_distances()
    print("\n| source | target | genetic distance | accuracy (MLM backbone) | accuracy (random init) |")
    print("|---|---|---|---|---|")
    for source, targets in PAIRS.items():
        train = rows(data, source, "train")
        t = time.perf_counter()
        model, tok = finetune(backbone, train, args.epochs, args.lr)
        ft_seconds = time.perf_counter() - t
        scratch, _ = finetune(backbone, train, args.epochs, args.lr, pretrained=False)
        for target in targets:
            test = rows(data, target, "test")
            print(
                f"| {source} | {target} | {dist[source, target]:.2f} | {accuracy(model, tok, test):.3f} | "
                f"{accuracy(scratch, tok, test):.3f} |"
            )
        if source == "es-ES":
            everyone = {loc: accuracy(model, tok, rows(data, loc, "test")) for loc in LOCALES if loc != source}
            rho = spearman([1 - dist[source, loc] for loc in everyone], list(everyone.values()))
            print(f"| {source} | (fine-tune {len(train)} examples x {args.epochs} epochs: {ft_seconds:.1f} s) | | | |")
            print(
                f"| {source} | all {len(everyone)} others: Spearman(genetic similarity, accuracy) = {rho:.2f}; "
                f"mean accuracy {sum(everyone.values()) / len(everyone):.3f}; chance {1 / NUM_INTENTS:.3f} | | | |"
            )


if __name__ == "__main__":
    main()
