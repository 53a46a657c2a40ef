"""Test builders for the experiment, compatibility, ensemble and advice tests: release-format MASSIVE data with words
"w0".."w199" (the tiny tokenizer's vocabulary) and hand-built source families.

``build_scenario`` makes data labelled by a "teacher" model (right by construction) and sources derived from it, so
whether merging helps or hurts is known in advance; ``write_release`` makes plain random data for the other tests.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from merginguriel.checkpoints import Layout
from merginguriel.locales import INTENTS

from data_fixtures import write_jsonl
from tiny import save_finetuned

NUM_CLASSES = 10
BAND = 20


def utterance(rng: random.Random, label: int, words: int = 4) -> str:
    return " ".join(f"w{label * BAND + rng.randrange(BAND)}" for _ in range(words))


def write_release(folder: Path, locales: list[str], per_split: dict[str, int] | None = None, seed: int = 0) -> Path:
    """MASSIVE release jsonl (``<folder>/1.1/data/<locale>.jsonl``) for ``locales``; returns ``folder``."""
    per_split = per_split or {"train": 200, "dev": 60, "test": 60}
    for li, loc in enumerate(locales):
        rng = random.Random(seed * 1000 + li)
        rows = []
        for partition, n in per_split.items():
            for _ in range(n):
                label = rng.randrange(NUM_CLASSES)
                rows.append({"id": str(len(rows)), "locale": loc, "partition": partition, "utt": utterance(rng, label),
                             "intent": INTENTS[label]})
        write_jsonl(Path(folder) / "1.1" / "data" / f"{loc}.jsonl", rows)
    return Path(folder)


def random_utterances(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(200)}" for _ in range(rng.randint(3, 8))) for _ in range(n)]


def teacher_model(layout: Layout, utterances: list[str], seed: int = 0):
    """A model that is right by construction: the base with its output layer replaced so the logits are a random
    projection of the standardised head features over ``utterances`` (so ~50 of the 60 intents get predicted).
    Labelling data with its predictions makes it 100% accurate, and small weight perturbations cost accuracy."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(layout.base)
    model = AutoModelForSequenceClassification.from_pretrained(layout.base).eval()
    enc = tok(utterances, return_tensors="pt", padding=True)
    seen = {}
    hook = model.classifier.out_proj.register_forward_hook(lambda mod, inp, out: seen.__setitem__("x", inp[0]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model(**enc)
        hook.remove()
        x = seen["x"]
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
        w = torch.randn(model.config.num_labels, x.shape[1], generator=gen) / sd * 5
        model.classifier.out_proj.weight.copy_(w)
        model.classifier.out_proj.bias.copy_(-(w @ mu))
    return model


def label_with(model, layout: Layout, utterances: list[str]) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(layout.base)
    with torch.no_grad():
        return model(**tok(utterances, return_tensors="pt", padding=True)).logits.argmax(-1).tolist()


def write_labelled_release(folder: Path, locale: str, splits: dict[str, tuple[list[str], list[int]]]) -> None:
    """Release jsonl for one locale from given utterances and hub label ids per partition (train/dev/test)."""
    rows = []
    for partition, (utts, labels) in splits.items():
        for u, y in zip(utts, labels):
            rows.append({"id": str(len(rows)), "locale": locale, "partition": partition, "utt": u, "intent": INTENTS[y]})
    write_jsonl(Path(folder) / "1.1" / "data" / f"{locale}.jsonl", rows)


def build_scenario(root: Path, target: str, sources: list[str], kind: str, slug: str = "tiny") -> tuple[Layout, Path]:
    """A checkpoint family and release data where merging the sources clearly helps (``kind="helps"``: each source
    is the teacher plus independent noise, their average is close to the teacher) or clearly hurts (``"hurts"``: each
    source is the teacher with its feed-forward units permuted differently, exactly as accurate, but their average
    mixes unrelated units). Every locale's data is labelled by the teacher. Returns (layout, data folder)."""
    from tiny import make_base

    make_base(root, slug, seed=0)
    layout = Layout(Path(root), slug)
    data = Path(root) / "data"
    teacher = teacher_model(layout, random_utterances(300, seed=99))
    for li, loc in enumerate([target, *sources]):
        splits = {}
        for pi, (partition, n) in enumerate((("train", 40), ("dev", 150), ("test", 150))):
            utts = random_utterances(n, seed=1000 * li + pi)
            splits[partition] = (utts, label_with(teacher, layout, utts))
        write_labelled_release(data, loc, splits)
    for i, loc in enumerate(sources):
        model = noisy_copy(teacher, 0.001, seed=i) if kind == "helps" else permuted_copy(teacher, seed=i)
        save_finetuned(layout, model, loc, seed=i)
    return layout, data


def noisy_copy(model, scale: float, seed: int):
    """The model plus seeded Gaussian noise on every encoder/head parameter (a weak source whose errors are independent)."""
    import copy

    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if "embeddings" in name or "LayerNorm" in name:
                continue
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.detach().abs().mean())
    return out


def permuted_copy(model, seed: int):
    """The same function with every layer's feed-forward hidden units permuted: exactly as accurate as ``model``, but
    averaging differently permuted copies mixes unrelated units, so their merge is poor (merging clearly hurts)."""
    import copy

    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in out.roberta.encoder.layer:
            perm = torch.randperm(layer.intermediate.dense.out_features, generator=gen)
            layer.intermediate.dense.weight.copy_(layer.intermediate.dense.weight[perm])
            layer.intermediate.dense.bias.copy_(layer.intermediate.dense.bias[perm])
            layer.output.dense.weight.copy_(layer.output.dense.weight[:, perm])
    return out
