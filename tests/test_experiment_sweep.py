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

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import build_scenario
from merginguriel.experiments.db import ResultsDB
from merginguriel.experiments.grid import expand

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
        "evaluate": {"batch_size": 64},
    }
    fixed.update(extra)
    return fixed


def _write_sweep(path: Path, **sweep) -> Path:
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def _cli(*args, timeout=300):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_point_function_alone(scenario, tmp_path):
    """choose -> merge -> judge for one job: the selection is select_for_target's, the kept merge is sum w theta_i, the
    metrics are the evaluation module's on the merged folder, on validation and on test, beside the sources."""
    from merginguriel.evaluation.evaluate import evaluate_checkpoint
    from merginguriel.experiments.point import run_point
    from merginguriel.similarity import select_for_target

    root, layout, data = scenario
    job = expand(_fixed(root, data, merge={"method": "similarity"}), {"target": [TARGET]})[0]
    result = run_point(job, keep_models=True, manifests_dir=tmp_path / "manifests")
    expected = select_for_target(TARGET, "uriel", 3, False, "scores", layout.finetuned_locales(), root=str(root))
    assert result.selection["sources"] == expected.sources
    assert result.selection["weights"] == pytest.approx(expected.weights)
    output = layout.merged(TARGET, job.run_name())
    merged = load_file(str(output / "model.safetensors"))
    states = [load_file(str(layout.finetuned(s) / "model.safetensors")) for s in expected.sources]
    for name in ["classifier.out_proj.weight", "roberta.encoder.layer.0.intermediate.dense.weight"]:
        want = sum(w * st[name] for w, st in zip(expected.weights, states))
        assert torch.allclose(merged[name], want, atol=1e-6)
    from merginguriel.data.config import DataConfig

    dc = DataConfig(source="release", data_path=str(data), root=str(root))
    for split in ("validation", "test"):
        rec = result.metrics["splits"][split]
        direct = evaluate_checkpoint(output, [TARGET], split, dc)[TARGET]["accuracy"]
        assert rec["accuracy"] == pytest.approx(direct)
        srcs = {s: evaluate_checkpoint(layout.finetuned(s), [TARGET], split, dc)[TARGET]["accuracy"] for s in expected.sources}
        assert rec["source_accuracy"] == pytest.approx(srcs)
        assert rec["merging_effect"] == pytest.approx(rec["accuracy"] - sum(srcs.values()) / 3)
        # the best source is chosen on VALIDATION, on both splits
        val = result.metrics["splits"]["validation"]["source_accuracy"]
        assert rec["best_source"] == max(val, key=val.get)
        assert rec["gain"] == pytest.approx(rec["accuracy"] - srcs[rec["best_source"]])
        # the best single model of ALL candidates (selected or not), chosen on validation, judged on the same rows
        every = {s: evaluate_checkpoint(layout.finetuned(s), [TARGET], "validation", dc)[TARGET]["accuracy"]
                 for s in layout.finetuned_locales() if s != TARGET}
        assert len(every) == len(SOURCES) > len(expected.sources) and rec["best_overall"] == max(every, key=every.get)
        overall = evaluate_checkpoint(layout.finetuned(rec["best_overall"]), [TARGET], split, dc)[TARGET]["accuracy"]
        assert rec["best_overall_accuracy"] == pytest.approx(overall)
        assert rec["vs_best_overall"]["delta"] == pytest.approx(rec["accuracy"] - overall)
        # The constructed case: averaging independent noise recovers the teacher, so the merge clearly beats every source.
        assert rec["gain"] > 0.1 and rec["gain_ci"][0] > 0 and rec["gain_p"] < 0.01
    assert json.loads((tmp_path / "manifests" / f"{job.key()}.json").read_text())["kind"] == "merged"
    assert set(result.timings) >= {"select_s", "merge_s", "evaluate_s", "total_s"}
    assert result.features["num_sources"] == 3 and -1 <= result.features["compatibility_mean"] <= 1


def test_sweep_cli_end_to_end_and_rerun(scenario, tmp_path):
    import sqlite3

    root, layout, data = scenario
    db = tmp_path / "results.sqlite"
    fixed = _fixed(root, data, merge={"params": {}})
    cfg = _write_sweep(tmp_path / "sweep.yaml", name="e2e", db=str(db), fixed=fixed,
                       zip=[{"merge.method": ["similarity", "ties", "fisher", "regmean"],
                             "merge.params": [{}, {}, {"examples": 24}, {"examples": 24}]}],
                       grid={"target": [TARGET]})
    dry = _cli("experiment", "--config", str(cfg), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count(" new ") == 4 and not db.exists()  # the plan, nothing written

    run = _cli("experiment", "--config", str(cfg))
    assert run.returncode == 0, run.stderr + run.stdout
    assert "4 done, 0 failed" in run.stdout
    with ResultsDB(db, readonly=True) as rdb:
        rows = rdb.rows()
        assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
        for r in rows:
            assert {"validation", "test"} == set(r["metrics"]["splits"])
            assert 0 <= r["metrics"]["splits"]["test"]["accuracy"] <= 1 and rdb.resolve(r["manifest"]).is_file()
        assert len(rdb.features()) == 4
    # Fisher and RegMean computed their statistics on demand (cached under the layout), once per source.
    assert len(list((layout.home / "statistics" / "fisher").glob("*/*/statistics.safetensors"))) == 3
    assert len(list((layout.home / "statistics" / "regmean").glob("*/*/statistics.safetensors"))) == 3
    # Flat columns: the numbers people filter on, with plain sqlite3 (and nothing written beside the database).
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        flat = conn.execute("SELECT method, num_sources, similarity, val_accuracy, test_accuracy, test_gain FROM points").fetchall()
    assert {m for m, *_ in flat} == {"similarity", "ties", "fisher", "regmean"}
    assert all(k == 3 and s == "uriel" and 0 <= v <= 1 and 0 <= t <= 1 for _, k, s, v, t, _ in flat)
    # Merged models were deleted after evaluation (keep_models false).
    merged = layout.home / "merged" / TARGET
    assert not [p for p in merged.iterdir() if not p.name.startswith(".")]

    again = _cli("experiment", "--config", str(cfg))
    assert again.returncode == 0
    assert "0 new, 4 done already" in again.stderr
    with ResultsDB(db, readonly=True) as rdb:
        assert [r["attempts"] for r in rdb.rows()] == [1] * 4


def test_resume_after_sigkill(scenario, tmp_path):
    _kill_then_rerun_at_once(scenario, tmp_path, lambda counts: counts["done"] >= 1)


@pytest.mark.slow
def test_resume_after_sigkill_during_the_first_point(scenario, tmp_path):
    _kill_then_rerun_at_once(scenario, tmp_path, lambda counts: counts["running"] >= 1 and counts["done"] == 0)


def _kill_then_rerun_at_once(scenario, tmp_path, moment):
    """Kill a sweep when ``moment(counts)`` holds and rerun it before the killed process is reaped: every point ends
    done exactly once, the finished ones untouched, the interrupted one taken over at once (its owner is a zombie)."""
    root, layout, data = scenario
    db = tmp_path / "results.sqlite"
    grid = {"target": [TARGET], "merge.method": ["similarity", "average", "ties", "task_arithmetic", "dare_linear"]}
    fixed = _fixed(root, data, evaluate={"features": False, "splits": ["validation"]})
    cfg = _write_sweep(tmp_path / "sweep.yaml", name="killed", db=str(db), fixed=fixed, grid=grid)
    proc = subprocess.Popen([*CLI, "experiment", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    counts = {"done": 0, "running": 0}
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            with ResultsDB(db) as rdb:
                counts = rdb.counts()
        if moment(counts):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    # The rerun starts at once, before the killed process is reaped: its pid still exists, as a zombie.
    deadline = time.time() + 30
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.05)
    assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
    assert moment(counts) and counts["done"] < 5, "the sweep must be killed part way"
    with ResultsDB(db) as rdb:
        before = {r["key"]: r for r in rdb.rows()}
    assert len(before) == 5 and sum(r["status"] == "done" for r in before.values()) < 5

    resumed = _cli("experiment", "--config", str(cfg))
    assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE  # still unreaped while the rerun ran
    proc.wait()
    assert resumed.returncode == 0, resumed.stderr
    assert "5 done, 0 failed, 0 running" in resumed.stdout
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


def test_two_sweeps_with_their_own_databases_share_a_root(scenario, tmp_path):
    """Two sweeps over the same root and points, each with its own database, at the same time: each finishes every
    point, and neither removes a merged model the other is still judging."""
    root, layout, data = scenario
    grid = {"target": [TARGET], "merge.method": ["similarity", "average", "ties", "task_arithmetic"]}
    fixed = _fixed(root, data, evaluate={"features": False, "splits": ["validation"]})
    procs = []
    for name in ("left", "right"):
        cfg = _write_sweep(tmp_path / f"{name}.yaml", name=name, db=str(tmp_path / f"{name}.sqlite"), fixed=fixed, grid=grid)
        procs.append(subprocess.Popen([*CLI, "experiment", "--config", str(cfg)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err
        assert "4 done, 0 failed" in out
    for name in ("left", "right"):
        with ResultsDB(tmp_path / f"{name}.sqlite", readonly=True) as rdb:
            rows = rdb.rows()
            assert len(rows) == 4 and {r["status"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
            assert all(rdb.resolve(r["manifest"]).is_file() for r in rows)
    merged = layout.home / "merged" / TARGET
    assert not [p for p in merged.iterdir() if not p.name.startswith(".") or ".tmp-" in p.name]


def test_report_from_another_folder_reads_the_same_numbers(scenario, tmp_path):
    """A sweep planned with relative paths (root, data, database) is reported from another folder: the paths it stored
    resolve from the database's folder, the numbers are the same, and nothing is written beside the database."""
    import pandas as pd

    root, layout, data = scenario
    here = root.parent  # the sweep runs here, with paths relative to it
    cfg = _write_sweep(tmp_path / "rel.yaml", name="rel", db=os.path.relpath(tmp_path / "rel" / "results.sqlite", here),
                       fixed={**_fixed(os.path.relpath(root, here), os.path.relpath(data, here)),
                              "evaluate": {"features": False}},
                       grid={"target": [TARGET], "merge.method": ["similarity", "ties"]})
    run = subprocess.run([*CLI, "experiment", "--config", str(cfg)], cwd=here, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr + run.stdout
    db = tmp_path / "rel" / "results.sqlite"
    beside = sorted(p.name for p in db.parent.iterdir())
    # SQLite removes the -wal/-shm files a writer made when it closes; the folder's mtime still shows they were made
    stamp = db.parent.stat().st_mtime_ns
    reports = {}
    for name, cwd in (("here", here), ("elsewhere", tmp_path)):
        out = tmp_path / f"report-{name}"
        rep = subprocess.run([*CLI, "report", "sweep", "--db", os.path.relpath(db, cwd), "--output", str(out)], cwd=cwd,
                             capture_output=True, text=True, timeout=600)
        assert rep.returncode == 0, rep.stderr
        reports[name] = pd.read_csv(out / "report.csv").sort_values("key").reset_index(drop=True)
        assert sorted(p.name for p in db.parent.iterdir()) == beside  # no -wal/-shm, nothing else beside the database
        assert db.parent.stat().st_mtime_ns == stamp, "the report opened the database for writing"
    pd.testing.assert_frame_equal(reports["here"], reports["elsewhere"])
    assert len(reports["here"]) == 2 and reports["here"]["test_accuracy"].notna().all()
    assert all(Path(m).is_file() for m in reports["elsewhere"]["manifest"])  # resolved from the database's folder


def test_a_full_disk_stops_the_sweep_and_the_point_is_retried(scenario, tmp_path):
    """A full disk is not the point's fault: the sweep stops with the clear error instead of recording the point as
    failed (and every later one with it), and a rerun takes the point over."""
    import shutil

    from conftest import page_bytes, small_disk

    root, layout, data = scenario
    files = [p for sub in ("tiny", "data") for p in (root / sub).rglob("*") if p.is_file()]
    with small_disk(tmp_path / "disk", page_bytes(*files) + 16 * 4096) as disk:
        for sub in ("tiny", "data"):
            shutil.copytree(root / sub, disk / sub, ignore=shutil.ignore_patterns("merged", ".*"))
        db = tmp_path / "full.sqlite"
        cfg = _write_sweep(tmp_path / "full.yaml", name="full", db=str(db), fixed=_fixed(disk, disk / "data"),
                           grid={"target": [TARGET], "merge.method": ["similarity", "ties"]})
        run = _cli("experiment", "--config", str(cfg))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "merginguriel experiment: error: no space left on the device while writing" in run.stderr
    assert "Traceback" not in run.stderr
    with ResultsDB(db, readonly=True) as rdb:
        assert {r["status"] for r in rdb.rows()} <= {"running", "planned"}  # nothing recorded as failed


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
        fixed=_fixed(root, data, evaluate={"features": False, "splits": ["validation"]}),
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
    """`merginguriel report sweep`: verdicts first, merges ranked on validation with test beside them, baselines on the
    same rows, plots; the database is only read."""
    import pandas as pd

    from merginguriel.cli.main import main
    from merginguriel.experiments.runner import Sweep, run_sweep

    root, layout, data = scenario
    db = tmp_path / "r.sqlite"
    sweep = Sweep(name="rep", db=str(db), fixed=_fixed(root, data),
                  grid={"target": [TARGET, "th-TH"], "merge.method": ["similarity", "ties"]})
    run_sweep(sweep)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "report"
    assert main(["report", "sweep", "--db", str(db), "--output", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "report"])  # no -wal/-shm beside the db
    report = pd.read_csv(out / "report.csv")
    with ResultsDB(db, readonly=True) as rdb:
        for r in rdb.rows():
            row = report[report["key"] == r["key"]].iloc[0]
            assert row["val_accuracy"] == pytest.approx(r["metrics"]["splits"]["validation"]["accuracy"])
            assert row["test_accuracy"] == pytest.approx(r["metrics"]["splits"]["test"]["accuracy"])
            assert len(r["metrics"]["hash"]) == 64 and row["hash"] == r["metrics"]["hash"]  # the merged weights' hash
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# Verdicts")
    verdict = next(line for line in summary.splitlines() if line.startswith(f"{TARGET}:"))
    # the merge for sw-KE chosen on validation clearly beats its best source (constructed case)
    assert verdict.startswith(f"{TARGET}: merge (") and "[95% CI +" in verdict
    assert "chosen from 4 merge(s) tried on validation, 4 distinct model(s)" in summary
    assert "synergy predictor not shown" in summary  # two targets cannot support a leave-one-target-out predictor
    for name in [f"{TARGET}.png", "th-TH.png", "report.csv", "summary.md", "manifest.json"]:
        assert (out / name).is_file(), name


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
    # Held out means held out: c's points (0.6 interference, 0.7 synergy) lie on the wrong side of the rule a and b
    # give (any threshold in (0.2, 0.8]), so f scores 5/6; a fit that saw c would score 6/6.
    frame["f"] = [0.1, 0.9, 0.2, 0.8, 0.6, 0.7]
    assert loto_accuracy(frame, ["f"]).set_index("feature").loc["f", "loto_accuracy"] == 5 / 6
    # Majority by hand: a held -> b, c say synergy (3 of 4): 1 of a's 2 right; b likewise 1; c held -> a, b tie (2 of
    # 4): interference, and both of c's points are synergy: 0. In all 2/6.
    frame["merging_effect"] = [0.01, -0.01, 0.02, -0.02, 0.03, 0.01]
    assert loto_accuracy(frame, ["f"]).set_index("feature").loc["majority_class", "loto_accuracy"] == 2 / 6


def test_failed_point_is_recorded_and_the_sweep_goes_on(scenario, tmp_path):
    from merginguriel.experiments.runner import Sweep, run_sweep

    root, layout, data = scenario
    db = tmp_path / "r.sqlite"
    sweep = Sweep(name="mixed", db=str(db), fixed=_fixed(root, data, evaluate={"features": False, "splits": ["validation"]}),
                  grid={"target": [TARGET], "selection.similarity": ["real", "uriel"]})
    result = run_sweep(sweep)
    assert result["counts"] == {"planned": 0, "running": 0, "done": 1, "failed": 1}
    with ResultsDB(db) as rdb:
        failed = rdb.rows(status="failed")[0]
        assert "REAL similarity reads the validation NxN matrix" in failed["error"] and "merginguriel nxn" in failed["error"]
        assert failed["config"]["selection"]["similarity"] == "real"
    # A rerun retries the failed point (it fails again, once more) and leaves the done one alone.
    run_sweep(sweep)
    with ResultsDB(db) as rdb:
        assert sorted((r["status"], r["attempts"]) for r in rdb.rows()) == [("done", 1), ("failed", 2)]
    run_sweep(Sweep(**{**sweep.__dict__, "retry_failed": False}))
    with ResultsDB(db) as rdb:
        assert sorted((r["status"], r["attempts"]) for r in rdb.rows()) == [("done", 1), ("failed", 2)]


def test_results_database_is_queryable_with_sqlite3_and_pandas(scenario, tmp_path):
    """A finished sweep's database, opened with plain sqlite3 and pandas.read_sql (no merginguriel code): every number
    people filter on is a flat column, equal to what the point's JSON metrics and config record."""
    import sqlite3

    import pandas as pd

    from merginguriel.experiments.runner import Sweep, run_sweep

    root, layout, data = scenario
    db = tmp_path / "q.sqlite"
    fixed = _fixed(root, data, evaluate={"features": False, "splits": ["validation", "test"], "batch_size": 64})
    run_sweep(Sweep(name="q", db=str(db), fixed=fixed,
                    grid={"target": [TARGET], "selection.num_sources": [2, 3], "merge.method": ["similarity", "ties"]},
                    zip=[{"selection.weighting": ["scores", "softmax"], "merge.seed": [42, 7]}]))
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        frame = pd.read_sql(
            "SELECT key, target, method, num_sources, similarity, weighting, seed, val_accuracy, test_accuracy, val_gain, "
            "test_gain, val_merging_effect, test_merging_effect, metrics, config FROM points WHERE status = 'done'", conn)
        picked = pd.read_sql(
            "SELECT key FROM points WHERE target = ? AND method = 'ties' AND num_sources = 3 AND similarity = 'uriel' "
            "AND weighting = 'softmax' AND seed = 7 AND val_accuracy >= 0 AND test_accuracy <= 1 "
            "AND test_gain > -1 AND val_merging_effect IS NOT NULL", conn, params=(TARGET,))
    assert len(frame) == 8
    for row in frame.itertuples():
        metrics, config = json.loads(row.metrics), json.loads(row.config)
        for prefix, split in (("val", "validation"), ("test", "test")):
            rec = metrics["splits"][split]
            assert getattr(row, f"{prefix}_accuracy") == rec["accuracy"]
            assert getattr(row, f"{prefix}_gain") == rec["gain"]
            assert getattr(row, f"{prefix}_merging_effect") == rec["merging_effect"]
        sel = config["selection"]
        assert (row.target, row.method, row.similarity) == (config["target"], config["merge"]["method"], sel["similarity"])
        assert (row.num_sources, row.weighting, row.seed) == (sel["num_sources"], sel["weighting"], config["merge"]["seed"])
    # the filtered query finds exactly the one point with those settings
    want = frame[(frame.method == "ties") & (frame.num_sources == 3) & (frame.weighting == "softmax") & (frame.seed == 7)]
    assert list(picked.key) == list(want.key) and len(want) == 1
