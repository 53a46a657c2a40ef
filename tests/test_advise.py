"""Merge-or-not advice on constructed cases: one where merging clearly helps, one where it clearly hurts; pilots with
a data-dependent method (Fisher) run through the same merge job."""

from __future__ import annotations

import json

import pytest

from conftest import build_scenario
from merginguriel.cli.main import main
from merginguriel.data.config import DataSource
from merginguriel.experiments.advise import advise
from merginguriel.experiments.db import ResultsDB
from merginguriel.report.rows import features_from_db

TARGET = "sw-KE"
SOURCES = ["th-TH", "vi-VN", "fi-FI"]


def test_advice_merge_when_merging_clearly_helps(tmp_path):
    # Each source is the teacher plus independent noise: alone ~50% on validation, their average close to the teacher.
    layout, data = build_scenario(tmp_path, TARGET, SOURCES, "helps")
    db = tmp_path / "pilot.sqlite"
    advice = advise(TARGET, backbone="tiny", root=str(tmp_path), data=DataSource("release", str(data)),
                    methods=["similarity", "fisher"], params={"fisher": {"examples": 24}}, num_sources=[3],
                    similarities=["uriel", "real"], db=str(db), output=str(tmp_path / "advice.json"))
    assert advice.recommendation == "merge"
    assert advice.choice["num_sources"] == 3 and sorted(advice.choice["sources"]) == sorted(SOURCES)
    # it says on which split it judged, against which baseline, and how sure it is
    assert advice.choice["split"] == "validation" and "best single source chosen on validation" in advice.choice["baseline"]
    assert advice.choice["ci"][0] > 0 and advice.choice["p_value"] < 0.01
    from merginguriel.data.config import DataConfig
    from merginguriel.evaluation.evaluate import evaluate_checkpoint

    dc = DataConfig(source="release", data_path=str(data), root=str(tmp_path))
    val = {s: evaluate_checkpoint(layout.finetuned(s), [TARGET], "validation", dc)[TARGET]["accuracy"] for s in SOURCES}
    test = {s: evaluate_checkpoint(layout.finetuned(s), [TARGET], "test", dc)[TARGET]["accuracy"] for s in SOURCES}
    assert max(val, key=val.get) != max(test, key=test.get)  # so choosing on test would name another source
    assert advice.choice["best_single_source"] == max(val, key=val.get)
    assert advice.choice["best_single"] == pytest.approx(max(val.values()))
    assert "margin over the best single model +" in advice.summary() and "[95% CI +" in advice.summary()
    assert "validation split" in advice.summary()
    ev = advice.evidence
    merges = ev[ev["kind"] == "merge"]
    assert set(merges["method"]) == {"similarity", "fisher"}  # the data-dependent method ran as a pilot too
    best_single = ev[ev["kind"] == "best single source"].iloc[0]
    assert merges["accuracy"].max() > best_single["accuracy"] + 0.1  # clearly
    assert (merges["merging_effect"] > 0).all()
    assert any("REAL similarity skipped" in n for n in advice.notes)  # no NxN matrix in this root
    with ResultsDB(db, readonly=True) as rdb:
        rows = rdb.rows(sweep=f"advise-{TARGET}")
        assert len(rows) == 2 and all(set(r["metrics"]["splits"]) == {"validation"} for r in rows)  # test stays unseen
    feats = features_from_db(str(db))
    assert len(feats) == 2 and (feats["merging_effect"] > 0).all() and (feats["num_sources"] == 3).all()
    saved = json.loads((tmp_path / "advice.json").read_text())
    assert saved["recommendation"] == "merge" and len(saved["evidence"]) == len(ev)


def test_advice_no_merge_when_merging_clearly_hurts(tmp_path, capsys):
    # Each source is the teacher with its feed-forward units permuted: 100% alone, but their average mixes unrelated units.
    layout, data = build_scenario(tmp_path, TARGET, SOURCES, "hurts")
    status = main(["advise", "--target", TARGET, "--backbone", "tiny", "--root", str(tmp_path), "--data.source", "release",
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
    assert all(r["ci_high"] < 0 for r in merges)  # every pilot is significantly worse than the best single source
    assert advice["choice"]["source"] in SOURCES


def test_list_options_take_space_separated_values_read_from_the_signature():
    """Which options take `--x a b` comes from the typed signature (list parameters, in dataclass sections too), and
    numbers keep their type: `--num_sources 3 5` is [3, 5], a list[int]."""
    from merginguriel.cli.merge import merge
    from merginguriel.cli.parse import parse_function_args
    from merginguriel.experiments.advise import advise

    kwargs = parse_function_args(advise, ["--target", "sw-KE", "--methods", "ties", "dare_ties", "--num_sources", "3", "4",
                                          "--similarities", "real", "--include_target"], "advise")
    assert kwargs["methods"] == ["ties", "dare_ties"] and kwargs["num_sources"] == [3, 4]
    assert kwargs["similarities"] == ["real"] and kwargs["include_target"] is True
    kwargs = parse_function_args(merge, ["--selection.sources", "de-DE", "fr-FR", "--selection.weights", "0.75", "-1",
                                         "--merge.exclude", "classifier.*"], "merge")
    job = kwargs["job"]  # the MergeJob is merge's signature
    assert job.selection.sources == ["de-DE", "fr-FR"] and job.selection.weights == [0.75, -1.0]
    assert job.merge.exclude == ["classifier.*"]
