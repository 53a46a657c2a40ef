"""The evaluation API (one model load, every locale; logits in dataset order) against plain forward passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import noisy_copy, random_utterances, teacher_model
from conftest import save_finetuned

from merginguriel.data import DataConfig, load_locale
from merginguriel.errors import InputError
from merginguriel.evaluation.evaluate import MODEL_LOADS, evaluate_checkpoint, load_checkpoint, predict_logits


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Models that are right most of the time and spread their predictions over many intents (teacher-labelled data,
    sources = the teacher plus noise), so accuracy and macro-F1 can be wrong in many ways."""
    from conftest import build_scenario

    root = tmp_path_factory.mktemp("eval")
    layout, data = build_scenario(root, "es-ES", ["it-IT"], "helps")
    save_finetuned(layout, noisy_copy(teacher_model(layout, random_utterances(300, seed=99)), 0.0006, seed=5), "es-ES")
    return layout, DataConfig(source="release", data_path=str(data), root=str(root))


def reference(folder: Path, data: DataConfig, locale: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    rows = load_locale(data, locale)[split]
    with torch.no_grad():
        logits = torch.cat([model(**tok([r["utt"]], return_tensors="pt")).logits for r in rows])
    return logits, torch.tensor([r["label"] for r in rows])


def test_evaluate_checkpoint_matches_plain_forward(setup) -> None:
    layout, data = setup
    folder = layout.finetuned("es-ES")
    before = MODEL_LOADS[str(folder)]
    results = evaluate_checkpoint(folder, ["es-ES", "it-IT"], "test", data, batch_size=16, device="cpu")
    assert MODEL_LOADS[str(folder)] == before + 1  # one load for every locale
    for loc in ("es-ES", "it-IT"):
        logits, labels = reference(folder, data, loc, "test")
        assert results[loc]["n"] == len(labels) == 150
        preds = logits.argmax(-1)
        assert len(set(preds.tolist())) >= 10 and 0.2 < (preds == labels).float().mean() < 1.0  # a non-degenerate model
        assert results[loc]["accuracy"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item(), abs=1e-6)
        assert results[loc]["macro_f1"] == pytest.approx(macro_f1(logits.argmax(-1).tolist(), labels.tolist()), abs=1e-6)


def macro_f1(preds: list[int], labels: list[int]) -> float:
    """Mean per-class F1 over the classes that occur among the predictions or the labels."""
    scores = []
    for c in set(preds) | set(labels):
        tp = sum(p == c == y for p, y in zip(preds, labels))
        fp = sum(p == c != y for p, y in zip(preds, labels))
        fn = sum(y == c != p for p, y in zip(preds, labels))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def test_predict_logits_in_dataset_order(setup) -> None:
    layout, data = setup
    model, tok = load_checkpoint(layout.finetuned("it-IT"))
    logits, labels = predict_logits(model, tok, "it-IT", "validation", data, batch_size=7, device="cpu")
    ref_logits, ref_labels = reference(layout.finetuned("it-IT"), data, "it-IT", "validation")
    assert torch.equal(labels, ref_labels)
    # padded batches vs one row at a time: float32 round-off, relative to the (large) logits of the teacher-made model
    torch.testing.assert_close(logits, ref_logits, atol=1e-4 * float(ref_logits.abs().max()), rtol=1e-4)
    assert torch.equal(logits.argmax(-1), ref_logits.argmax(-1))


def test_bad_checkpoint_and_locale(setup, tmp_path) -> None:
    layout, data = setup
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        evaluate_checkpoint(tmp_path, ["es-ES"], "test", data)
    with pytest.raises(InputError, match="unknown locale"):
        evaluate_checkpoint(layout.finetuned("es-ES"), ["es-XX"], "test", data)
