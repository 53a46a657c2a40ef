"""The embedded backbone: tokenizer, HF loading, manifest, caching, determinism, the planted properties (meaning shared
across scripts, attention to content words, cancelled content-free logits), and -- slow -- a CI-sized version of
benchmarks/embedded_transfer.py: the transfer, task-vector and merge numbers of issue 12 on 8 locales."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from merginguriel.cli.main import run
from merginguriel.embedded.build import ensure_embedded_backbone
from merginguriel.embedded.plant import HEAD_INIT
from merginguriel.embedded.settings import BackboneSettings
from merginguriel.embedded.synthetic import SyntheticSizes
from merginguriel.errors import InputError
from merginguriel.io import checkpoint_hash, read_manifest
from merginguriel.locales import NUM_INTENTS

SIZES = SyntheticSizes(seed=1, train_per_intent=4, dev_per_intent=1, test_per_intent=1)
SETTINGS = BackboneSettings(hidden_size=32, num_layers=2, num_heads=2, max_length=64, seed=1)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("root") / "embedded"
    return ensure_embedded_backbone(folder, SETTINGS, SIZES)


def train_texts(backbone: Path, locale: str) -> list[str]:
    with open(backbone.parent / "data" / "1.1" / "data" / f"{locale}.jsonl", encoding="utf-8") as fh:
        return [r["utt"] for r in map(json.loads, fh) if r["partition"] == "train"]


def test_tokenizer_keeps_every_word_whole(backbone):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    assert tok.is_fast
    assert [tok.convert_ids_to_tokens(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tok.mask_token_id == len(tok) - 1
    for loc in ("en-US", "ja-JP", "th-TH", "ru-RU", "hi-IN", "ko-KR", "am-ET"):
        texts = train_texts(backbone, loc)
        enc = tok(texts)["input_ids"]
        unknown = sum(ids.count(tok.unk_token_id) for ids in enc) / sum(len(ids) - 2 for ids in enc)
        # Only characters no kept word writes become <unk>: a few rare CJK and Hangul characters (vocab.py).
        assert unknown < 0.03 if loc in ("ja-JP", "ko-KR") else unknown == 0.0, (loc, unknown)
        assert all(ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id for ids in enc)
        for text, ids in zip(texts[::37], enc[::37]):
            if tok.unk_token_id not in ids:
                assert tok.decode(ids, skip_special_tokens=True) == text
    # In languages that neither fuse case suffixes nor drop spaces a kept word is one piece; the vocabulary drops
    # (splits into characters) more of a low-resource language's content words than of English's (vocab.COVERAGE_GAP).
    def whole(loc: str) -> float:
        words = [w for text in train_texts(backbone, loc) for w in text.split()]
        return sum(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in words) / len(words)

    assert whole("en-US") > 0.9 and whole("sw-KE") < whole("en-US") - 0.05
    # An unseen string still tokenizes (into characters), never into <unk>.
    assert tok.unk_token_id not in tok("zzkkzzkk")["input_ids"]


def test_backbone_loads_as_masked_lm_and_classifier(backbone):
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    cfg = AutoConfig.from_pretrained(backbone)
    tok = AutoTokenizer.from_pretrained(backbone)
    assert cfg.model_type == "xlm-roberta" and cfg.vocab_size == len(tok)
    assert cfg.max_position_embeddings == SETTINGS.max_length + 2
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (32, 2, 2)
    assert cfg.initializer_range == HEAD_INIT  # the new head starts near zero (plant.py: why)
    mlm = AutoModelForMaskedLM.from_pretrained(backbone)
    clf = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=NUM_INTENTS)
    enc = tok(train_texts(backbone, "fr-FR")[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert mlm(**enc).logits.shape[-1] == len(tok)
        assert clf(**enc).logits.shape == (2, NUM_INTENTS)
    assert torch.equal(clf.roberta.embeddings.word_embeddings.weight, mlm.roberta.embeddings.word_embeddings.weight)


def test_manifest_records_what_made_it(backbone):
    m = read_manifest(backbone)
    assert m["kind"] == "embedded-backbone" and m["hash"] == checkpoint_hash(backbone)
    assert m["seed"] == SETTINGS.seed and m["settings"]["hidden_size"] == SETTINGS.hidden_size
    assert m["data"]["seed"] == SIZES.seed and m["data"]["sizes"]["train_per_intent"] == SIZES.train_per_intent
    assert m["planting"]["word_pieces"] > 52 * 500  # every language's forms (shared ones once)
    assert m["vocab_size"] == m["planting"]["pieces"]


def test_cached_backbone_is_not_rebuilt(backbone):
    weights = (backbone / "model.safetensors").stat().st_mtime_ns
    created = read_manifest(backbone)["created"]
    assert ensure_embedded_backbone(backbone.parent) == backbone
    assert ensure_embedded_backbone(backbone.parent, SETTINGS, SIZES) == backbone
    assert (backbone / "model.safetensors").stat().st_mtime_ns == weights
    assert read_manifest(backbone)["created"] == created
    with pytest.raises(InputError, match="other settings"):
        ensure_embedded_backbone(backbone.parent, BackboneSettings(**{**SETTINGS.__dict__, "hidden_size": 64}))


def test_a_backbone_of_another_world_version_is_refused(backbone, tmp_path):
    import shutil

    copy = tmp_path / "embedded"
    shutil.copytree(backbone.parent, copy)
    manifest = copy / "backbone" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "plant_version": "0"}))
    with pytest.raises(InputError, match="another version"):
        ensure_embedded_backbone(copy)


def test_build_is_deterministic_whatever_ran_before(backbone, tmp_path):
    torch.manual_seed(999), np.random.seed(999), torch.rand(7), np.random.rand(3)  # disturb the global generators
    again = ensure_embedded_backbone(tmp_path / "embedded", SETTINGS, SIZES)
    assert read_manifest(again)["hash"] == read_manifest(backbone)["hash"]
    assert (again / "tokenizer.json").read_bytes() == (backbone / "tokenizer.json").read_bytes()


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(InputError, match="num_heads"):
        BackboneSettings(hidden_size=30, num_heads=4)
    with pytest.raises(InputError, match="num_heads"):
        BackboneSettings(hidden_size=36, num_heads=4)  # heads of 9: odd
    with pytest.raises(InputError, match="num_layers"):
        BackboneSettings(num_layers=0)


def test_cli_reports_the_build(backbone, capsys):
    root = backbone.parent.parent
    assert run("embedded", ["--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert str(backbone) in out and "embedded data:" in out and "M parameters" in out
    with pytest.raises(InputError, match="other settings"):
        run("embedded", ["--root", str(root), "--seed", "7"])


def _sentence_vectors(backbone: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(backbone), AutoModel.from_pretrained(backbone)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state[:, 0]
    h = h - h.mean(0)  # what sets one utterance apart
    return h / h.norm(dim=1, keepdim=True)


def _retrieval(backbone: Path, a: str, b: str) -> float:
    """Share of a's training utterances whose nearest b utterance (cosine of <s> states) is their translation."""
    va, vb = _sentence_vectors(backbone, train_texts(backbone, a)), _sentence_vectors(backbone, train_texts(backbone, b))
    return float(((va @ vb.T).argmax(1) == torch.arange(len(va))).float().mean())


def test_translations_are_neighbours_across_scripts(backbone):
    chance = 1 / len(train_texts(backbone, "hi-IN"))
    hi_ur = _retrieval(backbone, "hi-IN", "ur-PK")  # Devanagari vs Arabic script, one family path in URIEL
    ru_pl = _retrieval(backbone, "ru-RU", "pl-PL")  # Cyrillic vs Latin, one branch
    ja_sw = _retrieval(backbone, "ja-JP", "sw-KE")  # unrelated, distant, opposite word order
    assert hi_ur > 50 * chance and ru_pl > 20 * chance, (hi_ur, ru_pl)
    assert ja_sw > 5 * chance and ja_sw < hi_ur, (ja_sw, hi_ur)


def test_attention_pools_content_words(backbone):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    model = AutoModel.from_pretrained(backbone, attn_implementation="eager")
    layer = model.encoder.layer[0].attention.self
    head = SETTINGS.hidden_size // SETTINGS.num_heads
    x = torch.randn(5, SETTINGS.hidden_size)
    q, k = layer.query(x), layer.key(x)
    for h in range(SETTINGS.num_heads):
        rows = slice(h * head, h * head + head - 2)  # every row but the salience row and the unread spare key row
        assert torch.allclose(q[:, rows] @ k[:, rows].T, torch.zeros(5, 5), atol=1e-4)  # the pairs cancel
    # The <s> position attends to the content word of a two-word utterance far more than to <s> and </s>.
    world_text = train_texts(backbone, "en-US")[0]
    enc = tok([world_text], return_tensors="pt")
    with torch.no_grad():
        att = model(**enc, output_attentions=True).attentions[0][0, :, 0]  # heads x keys, from <s>
    specials = att[:, [0, -1]].sum(-1)
    assert (specials < 0.2).all(), att


def test_new_head_gets_its_own_learning_rate(backbone):
    import lightning as L

    from merginguriel.models.classifier import IntentClassifier

    model = IntentClassifier(backbone="embedded", root=str(backbone.parent.parent), learning_rate=1e-4, head_learning_rate=1e-2)
    model.trainer = L.Trainer(max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    groups = model.configure_optimizers()["optimizer"].param_groups
    lr_of = {id(p): g["initial_lr"] for g in groups for p in g["params"]}
    named = dict(model.model.named_parameters())
    assert len(lr_of) == len(named)  # every parameter in exactly one group
    assert {lr_of[id(p)] for n, p in named.items() if n.startswith("roberta.")} == {1e-4}
    assert {lr_of[id(p)] for n, p in named.items() if n.startswith("classifier.")} == {1e-2}
    plain = IntentClassifier(backbone="embedded", root=str(backbone.parent.parent), learning_rate=1e-4)
    plain.trainer = L.Trainer(max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert {g["initial_lr"] for g in plain.configure_optimizers()["optimizer"].param_groups} == {1e-4}


def test_training_loss_smooths_labels_as_asked(backbone):
    """The training step's loss is cross-entropy against (1 - s) on the true intent plus s / 60 on every intent."""
    from transformers import AutoTokenizer

    from merginguriel.errors import InputError
    from merginguriel.locales import NUM_INTENTS
    from merginguriel.models.classifier import IntentClassifier

    root = str(backbone.parent.parent)
    tok = AutoTokenizer.from_pretrained(backbone)
    enc = tok(train_texts(backbone, "en-US")[:6], padding=True, return_tensors="pt")
    labels = torch.tensor([3, 7, 3, 59, 0, 12])
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
    for s in (0.0, 0.1, 0.3):
        model = IntentClassifier(backbone="embedded", root=root, label_smoothing=s)
        model.eval()  # no dropout: the reference below sees the same logits
        with torch.no_grad():
            # the new head starts near zero (uniform logits, where smoothing changes nothing): give it a trained-like scale
            for p in model.model.classifier.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
            loss = model.training_step(batch, 0)
            logp = torch.log_softmax(model.model(**enc).logits, -1)
        target = torch.full_like(logp, s / NUM_INTENTS)
        target[torch.arange(len(labels)), labels] += 1 - s
        assert torch.allclose(loss, -(target * logp).sum(-1).mean(), atol=1e-6), s
    with pytest.raises(InputError, match="label_smoothing 1.0 is outside"):
        IntentClassifier(backbone="embedded", root=root, label_smoothing=1.0)


@pytest.mark.slow
def test_transfer_numbers_on_eight_locales(tmp_path):
    """A CI-sized run of benchmarks/embedded_transfer.py: the default backbone, the fit-embedded recipe, 8 locales."""
    import sys

    import pandas as pd
    from transformers import AutoTokenizer

    from merginguriel.embedded.build import ensure_embedded_data, torch_threads
    from merginguriel.models.base import ensure_base

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the measuring code lives there
    from embedded_measure import Corpus, Recipe, correctness, ensure_finetuned, load_classifier, task_vector_ratios
    from embedded_outcomes import merge_outcome, select

    locales = ["es-ES", "pt-PT", "ru-RU", "pl-PL", "hi-IN", "ur-PK", "ja-JP", "sw-KE"]
    sizes = SyntheticSizes(seed=0, train_per_intent=20, dev_per_intent=5, test_per_intent=10)
    ensure_embedded_data(tmp_path / "embedded", sizes)
    ensure_embedded_backbone(tmp_path / "embedded", BackboneSettings(), sizes)
    base = ensure_base("embedded", tmp_path)
    recipe = Recipe.from_yaml("fit-embedded")
    corpus = Corpus(tmp_path / "embedded" / "data", AutoTokenizer.from_pretrained(base), recipe.max_length)
    with torch_threads(1):
        folders = {loc: ensure_finetuned(tmp_path / "ft" / loc, base, corpus, loc, recipe, seed_key=i) for i, loc in enumerate(locales)}
        acc = {split: pd.DataFrame(index=locales, columns=locales, dtype=float) for split in ("validation", "test")}
        rows = {}
        for s in locales:
            model = load_classifier(folders[s])
            for split in acc:
                for t in locales:
                    right = correctness(model, corpus.split(t, split))
                    acc[split].at[s, t] = right.mean()
                    rows[s, t, split] = right
    test = acc["test"]
    self_acc = {loc: test.at[loc, loc] for loc in locales}
    chance = 1 / NUM_INTENTS
    assert min(self_acc.values()) >= 0.6, self_acc
    assert test.at["hi-IN", "ur-PK"] >= 0.5 * self_acc["ur-PK"]
    assert test.at["ru-RU", "pl-PL"] >= 10 * chance
    ratios = [test.at[s, t] / self_acc[t] for s in locales for t in locales if s != t]
    assert 0.4 <= float(np.median(ratios)) <= 0.9, ratios
    assert min(test.at[s, t] for s in locales for t in locales) >= 3 * chance
    sizes_of_tau = [v for loc in locales for v in task_vector_ratios(base, folders[loc]).values()]
    assert max(sizes_of_tau) <= 0.05 and np.median(sizes_of_tau) < 0.03, (max(sizes_of_tau), np.median(sizes_of_tau))
    # A merge runs end to end through the library's selection and merge engine, and is judged on paired test rows.
    outcome = merge_outcome(select("sw-KE", "real", 3, [c for c in locales if c != "sw-KE"], acc["validation"], None),
                            "linear", {}, base, folders.__getitem__, tmp_path / "merged", acc["validation"],
                            lambda folder, loc: correctness(load_classifier(folder), corpus.split(loc, "test")))
    assert outcome.single in outcome.sources and len(outcome.sources) == 3
    assert outcome.single_accuracy == pytest.approx(test.at[outcome.single, "sw-KE"])
    assert 0.0 <= outcome.p_value <= 1.0 and outcome.merge_only + outcome.single_only > 0
