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
