"""Sweeps end to end: the point function alone, the CLI (plan, run, skip on rerun), resume after SIGKILL, and the
submitit local executor, on a tiny family whose data is labelled by a teacher model (so merges have real accuracies)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from experiment_fixtures import build_scenario
from merginguriel.experiments.db import ResultsDB
from merginguriel.experiments.grid import expand, point_key
from merginguriel.experiments.point import run_point

TARGET = "sw-KE"
SOURCES = ["th-TH", "vi-VN", "fi-FI", "tr-TR"]
CLI = [str(Path(sys.executable).with_name("merginguriel"))]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    layout, data = build_scenario(root, TARGET, SOURCES, "helps")
    return root, layout, data


def _fixed(root: Path, data: Path, **extra) -> dict:
    fixed = {
        "backbone": "tiny",
        "root": str(root),
        "data": {"source": "release", "data_path": str(data)},
        "selection": {"similarity": "uriel", "num_sources": 3},
        "evaluate": {"sources": True, "batch_size": 64},
        "features": {"compatibility": True},
    }
    fixed.update(extra)
    return fixed


def _write_sweep(path: Path, **sweep) -> Path:
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def _cli(*args, timeout=300):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_point_function_alone(scenario, tmp_path):
    """select -> merge -> test for one config: the selection is select_for_target's, the kept merge is Σ w θ_i, and the
    metrics are the evaluation module's on the merged folder."""
    from merginguriel.evaluation.evaluate import evaluate_checkpoint
    from merginguriel.similarity import select_for_target

    root, layout, data = scenario
    config = expand(_fixed(root, data, merge={"method": "similarity"}), {"target": [TARGET]})[0]
    result = run_point(config, keep_models=True, manifests_dir=tmp_path / "manifests")
    expected = select_for_target(TARGET, "uriel", 3, False, "scores", layout.finetuned_locales(), root=str(root))
    assert result.selection["sources"] == expected.sources
    assert result.selection["weights"] == pytest.approx(expected.weights)
    output = layout.merged(TARGET, f"sweep-{point_key(config)[:12]}")
    merged = load_file(str(output / "model.safetensors"))
    states = [load_file(str(layout.finetuned(s) / "model.safetensors")) for s in expected.sources]
    for name in ["classifier.out_proj.weight", "roberta.encoder.layer.0.intermediate.dense.weight"]:
        want = sum(w * st[name] for w, st in zip(expected.weights, states))
        assert torch.allclose(merged[name], want, atol=1e-6)
    from merginguriel.data.config import DataConfig

    direct = evaluate_checkpoint(output, [TARGET], "test", DataConfig(source="release", data_path=str(data), root=str(root)))
    assert result.metrics["accuracy"] == pytest.approx(direct[TARGET]["accuracy"])
    # The constructed case: averaging independent noise recovers the teacher, so the merge beats every source.
    assert result.metrics["accuracy"] > result.metrics["source_best"]
    assert result.metrics["merging_effect"] == pytest.approx(result.metrics["accuracy"] - result.metrics["source_mean"])
    assert json.loads((tmp_path / "manifests" / f"{point_key(config)}.json").read_text())["kind"] == "merged"
    assert set(result.timings) >= {"select_s", "merge_s", "evaluate_s", "overhead_s", "total_s"}
    assert result.features["num_sources"] == 3 and -1 <= result.features["compatibility_mean"] <= 1


def test_sweep_cli_end_to_end_and_rerun(scenario, tmp_path):
    root, layout, data = scenario
    db = tmp_path / "results.sqlite"
    grid = {"target": [TARGET], "merge.method": ["similarity", "ties", "ensemble"]}
    cfg = _write_sweep(tmp_path / "sweep.yaml", name="e2e", db=str(db), fixed=_fixed(root, data), grid=grid)
    dry = _cli("experiment", "--config", str(cfg), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count(" new ") == 3 and not db.exists()  # the plan, nothing written

    run = _cli("experiment", "--config", str(cfg))
    assert run.returncode == 0, run.stderr + run.stdout
    assert "3 done, 0 failed" in run.stdout
    with ResultsDB(db) as rdb:
        rows = rdb.rows()
        assert len(rows) == 3 and {r["status"] for r in rows} == {"done"}
        assert {r["key"] for r in rows} == {point_key(p) for p in expand(_fixed(root, data), grid)}
        for r in rows:
            if r["method"] == "ensemble":
                assert set(r["metrics"]["ensembles"]) == {"majority", "weighted_majority", "soft_vote", "logit_vote"}
            else:
                assert 0 <= r["metrics"]["accuracy"] <= 1 and Path(r["manifest"]).is_file()
        assert len(rdb.features()) == 3
    # Merged models were deleted after evaluation (keep_models false).
    for r in rows:
        assert not layout.merged(r["target"], f"sweep-{r['key'][:12]}").exists()

    again = _cli("experiment", "--config", str(cfg))
    assert again.returncode == 0
    assert "0 new, 3 done already" in again.stderr
    with ResultsDB(db) as rdb:
        assert [r["attempts"] for r in rdb.rows()] == [1] * 3


def test_resume_after_sigkill(scenario, tmp_path):
    root, layout, data = scenario
    db = tmp_path / "results.sqlite"
    grid = {"target": [TARGET], "merge.method": ["similarity", "average", "ties", "task_arithmetic", "dare_linear"]}
    fixed = _fixed(root, data, features={"enabled": False}, evaluate={"sources": False})
    cfg = _write_sweep(tmp_path / "sweep.yaml", name="killed", db=str(db), fixed=fixed, grid=grid)
    proc = subprocess.Popen([*CLI, "experiment", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline:
        if db.exists():
            with ResultsDB(db) as rdb:
                done = rdb.counts().get("done", 0)
        if done >= 1:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= done < 5, "the sweep must be killed part way"
    with ResultsDB(db) as rdb:
        before = {r["key"]: r for r in rdb.rows()}
    assert len(before) == 5 and sum(r["status"] == "done" for r in before.values()) < 5

    resumed = _cli("experiment", "--config", str(cfg))
    assert resumed.returncode == 0, resumed.stderr
    with ResultsDB(db) as rdb:
        after = rdb.rows()
    assert len(after) == 5 and len({r["key"] for r in after}) == 5
    assert {r["status"] for r in after} == {"done"}
    for r in after:
        if before[r["key"]]["status"] == "done":  # finished points were not run again
            assert r["attempts"] == 1 and r["finished"] == before[r["key"]]["finished"]
    interrupted = [k for k, r in before.items() if r["status"] == "running"]
    assert all(next(r for r in after if r["key"] == k)["attempts"] == 2 for k in interrupted)
    leftovers = [p for p in (layout.home / "merged").rglob(".*tmp-*")] if (layout.home / "merged").exists() else []
    assert not leftovers


@pytest.mark.slow
def test_submitit_local_executor(scenario, tmp_path):
    root, layout, data = scenario
    db = tmp_path / "results.sqlite"
    cfg = _write_sweep(
        tmp_path / "sweep.yaml",
        name="jobs",
        db=str(db),
        launcher="submitit",
        submitit={"cluster": "local", "folder": str(tmp_path / "jobs"), "timeout_min": 10},
        fixed=_fixed(root, data, features={"enabled": False}, evaluate={"sources": False}),
        grid={"target": [TARGET], "merge.method": ["similarity", "average"]},
    )
    run = _cli("experiment", "--config", str(cfg), timeout=400)
    assert run.returncode == 0, run.stderr + run.stdout
    with ResultsDB(db) as rdb:
        rows = rdb.rows()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"}
    # Each point ran in its own job process, not in the launcher.
    assert len({r["pid"] for r in rows}) == 2
    assert list((tmp_path / "jobs").glob("*_log.out"))


def test_report_over_the_database(scenario, tmp_path):
    """`merginguriel report --db`: rows in the report core's schema, baselines from the test NxN matrix, pivots, LOTO, plots."""
    import pandas as pd

    from merginguriel.evaluation.nxn import compute_nxn
    from merginguriel.experiments.frame import results_frame
    from merginguriel.experiments.runner import Sweep, run_sweep
    from merginguriel.report.cli import main as report_main
    from merginguriel.report.table import RESULT_COLUMNS, check_results

    root, layout, data = scenario
    db = tmp_path / "r.sqlite"
    sweep = Sweep(name="rep", db=str(db), fixed=_fixed(root, data),
                  grid={"target": [TARGET, "th-TH"], "merge.method": ["similarity", "ensemble"]})
    run_sweep(sweep)
    frame = results_frame(db)
    assert set(RESULT_COLUMNS) <= set(frame.columns)
    check_results(frame)
    assert len(frame) == 2 * (1 + 4)  # each ensemble point is four rows
    assert set(frame["method"]) == {"similarity", "ensemble_majority", "ensemble_weighted_majority", "ensemble_soft_vote", "ensemble_logit_vote"}

    from merginguriel.data.config import DataConfig

    dc = DataConfig(source="release", data_path=str(data), root=str(root))
    nxn_dir = compute_nxn(backbone="tiny", root=str(root), split="test", locales=[TARGET, *SOURCES], data=dc,
                          output=str(tmp_path / "nxn"), progress=False)
    out = tmp_path / "report"
    assert report_main(["--db", str(db), "--output", str(out), "--nxn", str(nxn_dir)]) == 0
    pivot = pd.read_csv(out / "pivot.csv", index_col=0)
    for _, r in frame.iterrows():
        assert pivot.loc[r["target"], r["method"]] == pytest.approx(r["accuracy"], abs=1e-6)
    nxn = pd.read_csv(nxn_dir / "evaluation_matrix.csv", index_col=0)
    assert pivot.loc["th-TH", "baseline: self"] == pytest.approx(nxn.loc["th-TH", "th-TH"], abs=1e-6)
    # The untrained shared base, evaluated on the points' split and data.
    from merginguriel.evaluation.evaluate import evaluate_checkpoint

    base = evaluate_checkpoint(layout.base, ["th-TH"], "test", dc)["th-TH"]["accuracy"]
    assert pivot.loc["th-TH", "baseline: base"] == pytest.approx(base, abs=1e-6)
    report = pd.read_csv(out / "report.csv")
    sim = report[(report["target"] == TARGET) & (report["method"] == "similarity")].iloc[0]
    srcs = sim["sources"].split()
    assert sim["zs_avg"] == pytest.approx(sum(nxn.loc[s, TARGET] for s in srcs) / len(srcs), abs=1e-6)
    for name in ["nxn.png", "methods.png", "effect_vs_features.png", "loto.csv", "summary.md", "report.md", "manifest.json"]:
        assert (out / name).is_file(), name
    loto = pd.read_csv(out / "loto.csv")
    assert "majority_class" in set(loto["feature"]) and (loto["targets"] <= 2).all()


def test_loto_accuracy_by_hand():
    import pandas as pd

    from merginguriel.experiments.effect import loto_accuracy

    # Synergy exactly when f > 0.5, on three targets: any held-out target's rule (fitted on the other two) is right.
    frame = pd.DataFrame({
        "target": ["a", "a", "b", "b", "c", "c"],
        "f": [0.1, 0.9, 0.2, 0.8, 0.3, 0.7],
        "g": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
        "merging_effect": [-0.01, 0.02, -0.03, 0.01, -0.02, 0.04],
    })
    got = loto_accuracy(frame, ["f", "g"]).set_index("feature")
    assert got.loc["f", "loto_accuracy"] == 1.0 and got.loc["f", "targets"] == 3 and got.loc["f", "points"] == 6
    # A constant feature predicts one class everywhere: half right; so does the majority rule (ties -> interference).
    assert got.loc["g", "loto_accuracy"] == 0.5
    assert got.loc["majority_class", "loto_accuracy"] == 0.5


def test_failed_point_is_recorded_and_the_sweep_goes_on(scenario, tmp_path):
    from merginguriel.experiments.runner import Sweep, run_sweep

    root, layout, data = scenario
    db = tmp_path / "r.sqlite"
    sweep = Sweep(name="mixed", db=str(db), fixed=_fixed(root, data, features={"enabled": False}, evaluate={"sources": False}),
                  grid={"target": [TARGET], "selection.similarity": ["real", "uriel"]})
    result = run_sweep(sweep)
    assert result["counts"] == {"planned": 0, "running": 0, "done": 1, "failed": 1}
    with ResultsDB(db) as rdb:
        failed = rdb.rows(status="failed")[0]
        assert "REAL similarity needs the validation NxN matrix" in failed["error"] and "merginguriel nxn" in failed["error"]
        assert failed["config"]["selection"]["similarity"] == "real"
    # A rerun retries the failed point (it fails again, once more) and leaves the done one alone.
    run_sweep(sweep)
    with ResultsDB(db) as rdb:
        assert sorted((r["status"], r["attempts"]) for r in rdb.rows()) == [("done", 1), ("failed", 2)]
    run_sweep(Sweep(**{**sweep.__dict__, "retry_failed": False}))
    with ResultsDB(db) as rdb:
        assert sorted((r["status"], r["attempts"]) for r in rdb.rows()) == [("done", 1), ("failed", 2)]
