"""Tiny XLM-R-architecture checkpoints in merginguriel's layout, built inside the tests (no network).

`make_family` writes a shared base and one "fine-tuned" model per locale (the base plus a seeded perturbation), with the
same manifests `merginguriel fit` writes, so merge, similarity and experiment code runs on them exactly as on real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from merginguriel.checkpoints import Layout
from merginguriel.io import read_manifest
from merginguriel.locales import ID2LABEL, LABEL2ID, NUM_INTENTS
from merginguriel.models.export import export_hf

WORDS = [f"w{i}" for i in range(200)]


def tiny_tokenizer():
    from transformers import XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -float(i + 1)) for i, w in enumerate(WORDS)]
    vocab += [("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=vocab)


def tiny_config(hidden: int = 32, layers: int = 2, heads: int = 2, intermediate: int = 64, vocab_size: int | None = None):
    from transformers import XLMRobertaConfig

    cfg = XLMRobertaConfig(
        vocab_size=vocab_size or len(WORDS) + 5,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=72,
        num_labels=NUM_INTENTS,
        id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
    )
    return cfg


def make_base(root: Path, slug: str = "tiny", seed: int = 0, **config_kwargs) -> Path:
    from transformers import XLMRobertaForSequenceClassification

    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(tiny_config(**config_kwargs))
    layout = Layout(Path(root), slug)
    export_hf(model, tiny_tokenizer(), layout.base, kind="base", backbone=slug, seed=seed)
    return layout.base


def save_finetuned(layout: Layout, model, locale: str, seed: int = 0) -> Path:
    """Save an in-memory model as ``locale``'s fine-tune, with the manifest `merginguriel fit` writes."""
    from transformers import AutoTokenizer

    export_hf(
        model,
        AutoTokenizer.from_pretrained(layout.base),
        layout.finetuned(locale),
        kind="finetuned",
        locale=locale,
        base={"path": str(layout.base), "hash": read_manifest(layout.base)["hash"]},
        seed=seed,
        overwrite=True,
    )
    return layout.finetuned(locale)


def make_finetuned(root: Path, locale: str, slug: str = "tiny", seed: int = 1, scale: float = 0.02) -> Path:
    """A 'fine-tuned' model: the base plus a seeded Gaussian perturbation of every tensor."""
    from transformers import AutoModelForSequenceClassification

    layout = Layout(Path(root), slug)
    model = AutoModelForSequenceClassification.from_pretrained(layout.base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return save_finetuned(layout, model, locale, seed)


def make_family(root: Path, locales: list[str], slug: str = "tiny", seed: int = 0, **config_kwargs) -> Layout:
    make_base(root, slug, seed=seed, **config_kwargs)
    for i, loc in enumerate(locales):
        make_finetuned(root, loc, slug, seed=seed + 100 + i)
    return Layout(Path(root), slug)


def write_release_data(folder: Path, locales: list[str], per_intent: tuple[int, int, int] = (4, 2, 2), seed: int = 0,
                       shift: dict[str, int] | None = None) -> Path:
    """Release-format MASSIVE files (`<folder>/1.1/data/<locale>.jsonl`) in tiny.py's vocabulary, learnable from words.

    Intent i's utterances contain the words w{3i}, w{3i+1}, w{3i+2} plus noise; ``shift[locale]`` rotates a locale's
    words so that locales differ (a shift of 0 is the "same language"). Rows are parallel across locales by ``id``.
    """
    import random

    from data_fixtures import write_jsonl

    from merginguriel.locales import INTENTS

    shift = shift or {}
    parts = [("train", per_intent[0]), ("dev", per_intent[1]), ("test", per_intent[2])]
    for loc in locales:
        rng = random.Random(seed)
        rows, rid = [], 0
        for partition, n in parts:
            for i, intent in enumerate(INTENTS):
                for _ in range(n):
                    words = [f"w{(3 * i + rng.randrange(3) + shift.get(loc, 0)) % 180}" for _ in range(3)]
                    words += [f"w{180 + rng.randrange(20)}" for _ in range(rng.randrange(1, 4))]
                    rng.shuffle(words)
                    rows.append({"id": str(rid), "locale": loc, "partition": partition, "scenario": intent.split("_")[0],
                                 "intent": intent, "utt": " ".join(words), "annot_utt": " ".join(words)})
                    rid += 1
        write_jsonl(Path(folder) / "1.1" / "data" / f"{loc}.jsonl", rows)
    return Path(folder)
