"""`merginguriel predict`: one row per utterance (id, utterance, predicted intent, its probability, gold intent) as
JSONL to --output or stdout, or CSV by extension, checked against a plain forward pass and the release files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import build_scenario

from merginguriel.cli.main import run
from merginguriel.errors import InputError

CLI = [sys.executable, "-m", "merginguriel.cli.main"]
FIELDS = ["id", "utterance", "predicted_intent", "probability", "gold_intent"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """A teacher-labelled world: de-DE's model is the teacher plus noise, so its predictions spread over many intents."""
    root = tmp_path_factory.mktemp("predict")
    layout, data = build_scenario(root, "sw-KE", ["de-DE"], "helps")
    return root, layout, data


def args(layout, data, *extra: str) -> list[str]:
    return ["--checkpoint", str(layout.finetuned("de-DE")), "--locale", "sw-KE", "--split", "test", "--root", str(layout.root),
            "--data.source", "release", "--data.data_path", str(data), "--device", "cpu", *extra]


def reference(layout, data) -> list[dict]:
    """The rows as an independent reader sees them: the release file's test partition, and a plain forward pass."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = [json.loads(line) for line in (data / "1.1" / "data" / "sw-KE.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["partition"] == "test"]
    folder = layout.finetuned("de-DE")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        probs = model(**tok([r["utt"] for r in rows], padding=True, return_tensors="pt")).logits.softmax(-1)
    conf, pred = probs.max(-1)
    return [{"id": r["id"], "utterance": r["utt"], "predicted_intent": model.config.id2label[int(p)], "probability": float(c),
             "gold_intent": r["intent"]} for r, p, c in zip(rows, pred, conf)]


def assert_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) == 150
    assert len({r["predicted_intent"] for r in want}) > 10  # a model that says one thing would prove little
    for g, w in zip(got, want):
        assert list(g) == FIELDS
        assert (g["id"], g["utterance"], g["predicted_intent"], g["gold_intent"]) == (w["id"], w["utterance"], w["predicted_intent"], w["gold_intent"])
        assert float(g["probability"]) == pytest.approx(w["probability"], abs=2e-5)


def test_jsonl_to_stdout_without_output(scenario):
    root, layout, data = scenario
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([*CLI, "predict", *args(layout, data)], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout holds the rows and nothing else
    want = reference(layout, data)
    assert_rows(got, want)
    accuracy = sum(r["predicted_intent"] == r["gold_intent"] for r in want) / len(want)
    assert accuracy > 0.3


def test_jsonl_and_csv_files(scenario, tmp_path, capsys):
    _, layout, data = scenario
    want = reference(layout, data)
    assert run("predict", args(layout, data, "--output", str(tmp_path / "p.jsonl"))) == 0
    got = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert_rows(got, want)
    accuracy = sum(r["predicted_intent"] == r["gold_intent"] for r in want) / len(want)
    assert f"150 predictions for sw-KE test written to {tmp_path / 'p.jsonl'} (accuracy {accuracy:.4f})" in capsys.readouterr().out

    assert run("predict", args(layout, data, "--output", str(tmp_path / "p.csv"))) == 0  # CSV, by the extension
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        assert_rows(list(csv.DictReader(fh)), want)
    assert run("predict", args(layout, data, "--output", str(tmp_path / "p.txt"), "--format", "csv")) == 0
    assert (tmp_path / "p.txt").read_text() == (tmp_path / "p.csv").read_text()


def test_bad_input_writes_nothing(scenario, tmp_path):
    _, layout, data = scenario
    out = tmp_path / "p.jsonl"
    bad = args(layout, data, "--output", str(out))
    bad[1] = str(tmp_path / "no-model")
    with pytest.raises(InputError, match="is not a folder"):
        run("predict", bad)
    with pytest.raises(InputError, match="unknown locale 'xx-XX'"):
        run("predict", [*args(layout, data, "--output", str(out)), "--locale", "xx-XX"])
    assert not out.exists()


def top_k_reference(layout, utterances: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Each utterance's k most probable intents by a plain forward pass over the model's own label names."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = layout.finetuned("de-DE")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        probs = model(**tok(utterances, padding=True, return_tensors="pt")).logits.softmax(-1)
    return [[(model.config.id2label[int(i)], float(row[i])) for i in row.argsort(descending=True)[:k]] for row in probs]


def test_text_from_stdin_and_repeated_flags_gives_the_top_k(scenario):
    """`--text -` reads one utterance a line (blank lines skipped); repeated --text flags collect; each utterance's
    top-k intents and probabilities are a plain forward pass's."""
    root, layout, data = scenario
    utterances = [r["utterance"] for r in reference(layout, data)[:40]]
    want = top_k_reference(layout, utterances, 3)
    assert len({top[0][0] for top in want}) > 5  # the utterances do not all get one intent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    base = [*CLI, "predict", "--checkpoint", str(layout.finetuned("de-DE")), "--device", "cpu", "--top_k", "3"]
    proc = subprocess.run([*base, "--text", "-", "--format", "jsonl"], input="\n".join(utterances[:20]) + "\n\n" +
                          "\n".join(utterances[20:]) + "\n", cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["utterance"], r["rank"]) for r in rows] == [(u, rank) for u in utterances for rank in (1, 2, 3)]
    for r in rows:
        intent, p = want[utterances.index(r["utterance"])][r["rank"] - 1]
        assert r["intent"] == intent and r["probability"] == pytest.approx(p, abs=2e-6)

    # readable lines: the utterance, then one "rank. intent probability" line per intent (the reference pads the
    # same batch: the tiny test model's probabilities move a little with the padding)
    want = top_k_reference(layout, utterances[:3], 3)
    proc = subprocess.run([*base, "--text", utterances[0], utterances[1], "--text", utterances[2]], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[::4] == utterances[:3]
    for n in range(3):
        shown = [line.split() for line in lines[4 * n + 1: 4 * n + 4]]
        assert [(s[0], s[1]) for s in shown] == [(f"{rank}.", intent) for rank, (intent, _) in enumerate(want[n], 1)]
        assert [float(s[2]) for s in shown] == pytest.approx([p for _, p in want[n]], abs=6e-5)


def test_text_output_file_and_bad_text_input(scenario, tmp_path):
    _, layout, _ = scenario
    utterance = "wake me up at seven"
    (want,) = top_k_reference(layout, [utterance], 60)
    out = tmp_path / "top.csv"
    assert run("predict", ["--checkpoint", str(layout.finetuned("de-DE")), "--text", utterance, "--top_k", "60",
                           "--output", str(out), "--device", "cpu"]) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["intent"] for r in rows) == sorted(i for i, _ in want) and [r["rank"] for r in rows] == [str(i) for i in range(1, 61)]
    probs = dict(want)  # every intent's probability (near-equal ones in the tail may swap places)
    assert [float(r["probability"]) for r in rows] == pytest.approx([probs[r["intent"]] for r in rows], abs=2e-6)
    assert [float(r["probability"]) for r in rows] == sorted((float(r["probability"]) for r in rows), reverse=True)
    assert sum(float(r["probability"]) for r in rows) == pytest.approx(1.0, abs=1e-4)

    model = ["--checkpoint", str(layout.finetuned("de-DE")), "--output", str(tmp_path / "bad.jsonl")]
    for argv, needle in ((model, "give exactly one of them"),
                         ([*model, "--text", utterance, "--locale", "sw-KE"], "give exactly one of them"),
                         ([*model, "--text", utterance, "--top_k", "0"], "top_k 0 is out of range; use 1 to 60"),
                         ([*model, "--text", utterance, "--top_k", "61"], "top_k 61 is out of range"),
                         ([*model, "--text", "   "], "no utterances to classify")):
        with pytest.raises(InputError, match=needle):
            run("predict", argv)
    assert not (tmp_path / "bad.jsonl").exists()
