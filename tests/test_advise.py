"""Merge-or-not advice on constructed cases: one where merging clearly helps, one where it clearly hurts."""

from __future__ import annotations

import json

import pytest

from experiment_fixtures import build_scenario
from merginguriel.data.config import DataConfig
from merginguriel.experiments.advise import advise, cli
from merginguriel.experiments.db import ResultsDB
from merginguriel.experiments.frame import features_frame

TARGET = "sw-KE"
SOURCES = ["th-TH", "vi-VN", "fi-FI"]


def _data(root, folder):
    return DataConfig(source="release", data_path=str(folder), root=str(root))


def test_advice_merge_when_merging_clearly_helps(tmp_path):
    # Each source is the teacher plus independent noise: alone ~50% on validation, their average close to the teacher.
    layout, data = build_scenario(tmp_path, TARGET, SOURCES, "helps")
    db = tmp_path / "pilot.sqlite"
    advice = advise(TARGET, backbone="tiny", root=str(tmp_path), data=_data(tmp_path, data), methods=["similarity"],
                    num_sources=[3], similarities=["uriel", "real"], db=str(db), output=str(tmp_path / "advice.json"))
    assert advice.recommendation == "merge"
    assert advice.choice["method"] == "similarity" and advice.choice["num_sources"] == 3
    assert sorted(advice.choice["sources"]) == sorted(SOURCES)
    ev = advice.evidence
    merged = ev[ev["kind"] == "merge"].iloc[0]
    best_single = ev[ev["kind"] == "best single source"].iloc[0]
    assert merged["accuracy"] > best_single["accuracy"] + 0.1  # clearly
    assert merged["merging_effect"] > 0
    assert any("REAL similarity skipped" in n for n in advice.notes)  # no NxN matrix in this root
    # The pilot's rows and merging-effect features are in the database.
    with ResultsDB(db) as rdb:
        rows = rdb.rows(sweep=f"advise-{TARGET}")
        assert len(rows) == 1 and rows[0]["metrics"]["split"] == "validation"
    feats = features_frame(db)
    assert len(feats) == 1 and feats["merging_effect"].iloc[0] > 0 and feats["num_sources"].iloc[0] == 3
    saved = json.loads((tmp_path / "advice.json").read_text())
    assert saved["recommendation"] == "merge" and len(saved["evidence"]) == len(ev)


def test_advice_no_merge_when_merging_clearly_hurts(tmp_path, capsys):
    # Each source is the teacher with its feed-forward units permuted: 100% alone, but their average mixes unrelated units.
    layout, data = build_scenario(tmp_path, TARGET, SOURCES, "hurts")
    status = cli(["--target", TARGET, "--backbone", "tiny", "--root", str(tmp_path), "--data.source", "release",
                  "--data.data_path", str(data), "--methods", "[similarity, average]", "--num_sources", "[2, 3]",
                  "--similarities", "[uriel]", "--output", str(tmp_path / "advice.json")])
    assert status == 0
    out = capsys.readouterr().out
    assert "DO NOT MERGE" in out and "best single source" in out
    advice = json.loads((tmp_path / "advice.json").read_text())
    assert advice["recommendation"] == "no_merge"
    ev = advice["evidence"]
    best_single = next(r for r in ev if r["kind"] == "best single source")
    assert best_single["accuracy"] == pytest.approx(1.0)
    merges = [r for r in ev if r["kind"] == "merge"]
    assert len(merges) == 4 and all(r["accuracy"] < best_single["accuracy"] - 0.3 for r in merges)
    assert all(r["merging_effect"] < 0 for r in merges)
    assert advice["choice"]["source"] in SOURCES
