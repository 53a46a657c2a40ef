"""Ensemble votes against hand computations, and the evaluated ensembles against a direct per-example computation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from merginguriel.data.config import DataConfig
from merginguriel.ensembles import evaluate_ensembles, logit_vote, majority, soft_vote, weighted_majority
from merginguriel.errors import InputError
from merginguriel.locales import LABEL2ID


def _logits_from_probs(rows):
    return torch.log(torch.tensor(rows, dtype=torch.float64))


# 3 sources, 2 examples, 3 classes, written out by hand.
#   example 0: argmaxes 0, 1, 1 -> majority 1;  with weights (0.6, 0.2, 0.2): class 0 gets 0.6 vs class 1 0.4 -> 0.
#   example 1: argmaxes 2, 0, 1 -> a three-way tie: the first source's class (2) wins, for both vote kinds with equal weights.
PROBS = [
    [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]],
    [[0.3, 0.4, 0.3], [0.5, 0.3, 0.2]],
    [[0.1, 0.5, 0.4], [0.2, 0.6, 0.2]],
]


def test_majority_and_ties_by_hand():
    logits = _logits_from_probs(PROBS)
    assert majority(logits, torch.tensor([0.6, 0.2, 0.2])).tolist() == [1, 2]
    assert weighted_majority(logits, torch.tensor([0.6, 0.2, 0.2])).tolist() == [0, 2]
    # Equal weights: weighted majority is majority.
    assert weighted_majority(logits, torch.ones(3)).tolist() == [1, 2]
    # Weighted tie (0.5 vs 0.5 on example 0): the earliest source's class among the tied ones wins.
    assert weighted_majority(logits, torch.tensor([0.5, 0.25, 0.25])).tolist()[0] == 0
    assert weighted_majority(logits, torch.tensor([0.25, 0.5, 0.25]))[1].item() == 0  # the second source (class 0) outweighs


def test_soft_and_logit_vote_by_hand():
    logits = _logits_from_probs(PROBS)
    w = [0.5, 0.3, 0.2]
    # soft vote: Σ w p.  example 0: c0 .35+.09+.02=.46, c1 .10+.12+.10=.32, c2 .05+.09+.08=.22 -> 0
    #                     example 1: c0 .05+.15+.04=.24, c1 .10+.09+.12=.31, c2 .35+.06+.04=.45 -> 2
    assert soft_vote(logits, torch.tensor(w)).tolist() == [0, 2]
    # logit vote: Σ w log p, computed here term by term.
    expected = []
    for e in range(2):
        scores = [sum(w[s] * math.log(PROBS[s][e][c]) for s in range(3)) for c in range(3)]
        expected.append(max(range(3), key=lambda c: scores[c]))
    assert logit_vote(logits, torch.tensor(w)).tolist() == expected
    # Logits shifted per source by a constant leave the soft vote unchanged, and scaling all weights changes nothing.
    shifted = logits + torch.tensor([1.0, -2.0, 5.0], dtype=torch.float64)[:, None, None]
    assert soft_vote(shifted, torch.tensor(w) * 7).tolist() == [0, 2]


def test_bad_inputs():
    logits = _logits_from_probs(PROBS)
    with pytest.raises(InputError, match="one weight per source"):
        majority(logits, torch.ones(2))
    with pytest.raises(InputError, match="not all zero"):
        soft_vote(logits, torch.zeros(3))


def test_evaluate_ensembles_matches_direct(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from conftest import build_scenario

    # sources right about half the time with independent errors (teacher-labelled data), so the votes differ
    sources = ["sw-KE", "th-TH", "vi-VN"]
    layout, data_dir = build_scenario(tmp_path, "fi-FI", sources, "helps")
    data = DataConfig(source="release", data_path=str(data_dir), root=str(tmp_path))
    weights = [0.5, 0.3, 0.2]
    got = evaluate_ensembles([layout.finetuned(s) for s in sources], weights, "fi-FI", "test", data)

    rows = [json.loads(l) for l in (data_dir / "1.1" / "data" / "fi-FI.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["partition"] == "test"]
    labels = [LABEL2ID[r["intent"]] for r in test]
    tok = AutoTokenizer.from_pretrained(layout.base)
    per_source = []
    for s in sources:
        model = AutoModelForSequenceClassification.from_pretrained(layout.finetuned(s)).eval()
        with torch.no_grad():
            per_source.append([model(**tok(r["utt"], return_tensors="pt")).logits[0].double() for r in test])

    def acc(preds):
        return sum(p == y for p, y in zip(preds, labels)) / len(labels)

    soft = [int(sum(w * per_source[s][e].softmax(-1) for s, w in enumerate(weights)).argmax()) for e in range(len(test))]
    logit = [int(sum(w * per_source[s][e] for s, w in enumerate(weights)).argmax()) for e in range(len(test))]
    votes = []
    for e in range(len(test)):
        preds = [int(per_source[s][e].argmax()) for s in range(3)]
        counts = {c: preds.count(c) for c in preds}
        top = max(counts.values())
        votes.append(next(p for p in preds if counts[p] == top))
    assert got["soft_vote"]["accuracy"] == pytest.approx(acc(soft), abs=1e-6)
    assert got["logit_vote"]["accuracy"] == pytest.approx(acc(logit), abs=1e-6)
    assert got["majority"]["accuracy"] == pytest.approx(acc(votes), abs=1e-6)
    assert all(v["n"] == 150 for v in got.values())
    accs = [v["accuracy"] for v in got.values()]
    assert all(0.2 < a < 1 for a in accs) and len(set(accs)) >= 2  # the four votes are not all the same number
