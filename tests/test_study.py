"""`merginguriel study`: fine-tunes -> NxN (sharded by source model) -> sweep, as dependent stages. The config and the
shard merge alone; then (slow) a CI-sized study on the embedded default under submitit's local executor, and a study
killed with SIGKILL twice (during the fits, during the NxN) that a rerun completes without redoing finished work."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from merginguriel.checkpoints import NXN_CELLS
from merginguriel.errors import InputError
from merginguriel.experiments.db import ResultsDB
from merginguriel.experiments.study import Study, merge_shards, missing_cells

LOCALES = ["de-DE", "fr-FR", "sw-KE"]
CLI = [sys.executable, "-m", "merginguriel.cli.main"]


def test_config_checks_and_defaults(tmp_path):
    with pytest.raises(InputError, match="needs locales"):
        Study()
    with pytest.raises(InputError, match="xx-XX"):
        Study(locales=["de-DE", "xx-XX"])
    with pytest.raises(InputError, match="nxn_splits"):
        Study(locales=LOCALES, nxn_splits=["train"])
    with pytest.raises(InputError, match="unknown sweep key.*grids"):
        Study(locales=LOCALES, sweep={"grids": {}}).sweep_plan()
    study = Study(name="s", locales=LOCALES, root=str(tmp_path), data={"source": "release", "data_path": "d"},
                  launcher="submitit", submitit={"cluster": "local", "timeout_min": 5, "fit": {"timeout_min": 50}},
                  sweep={"fixed": {"selection": {"similarity": "uriel", "num_sources": 2}}, "grid": {"target": ["sw-KE"]}})
    assert study.stage_settings("fit") == {"cluster": "local", "timeout_min": 50, "folder": str(tmp_path / "experiments" / "s" / "jobs" / "fit")}
    assert study.stage_settings("nxn")["timeout_min"] == 5
    sweep = study.sweep_plan()
    assert sweep.name == "s" and sweep.launcher == "submitit" and sweep.submitit["folder"].endswith("jobs/sweep")
    point = sweep.points()[0]  # the sweep works on the study's backbone, root, data and locales
    assert (point.job.root, point.job.data.data_path, point.selection.candidates) == (str(tmp_path), "d", LOCALES)
    fit = study.fit_config("fr-FR")
    assert fit["data"] == {"locales": "fr-FR", "source": "release", "data_path": "d", "max_length": 128}
    assert fit["model"] == {"backbone": "embedded", "root": str(tmp_path)}


def _cell(study: Study, split: str, source: str, target: str, accuracy: float, model_hash: str | None = None) -> dict:
    from merginguriel.evaluation.nxn import model_hashes

    digest = model_hashes(study.layout, [source])[source] if model_hash is None else model_hash
    return {"source": source, "target": target, "accuracy": accuracy, "macro_f1": accuracy, "n": 10, "seconds": 0.1,
            "model_hash": digest, "data": study.data.at(study.root).key(split)}


def _write(path: Path, cells: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(c) + "\n" for c in cells))


def test_shards_are_merged_into_one_matrix_without_evaluating(tiny_family_factory, tmp_path):
    layout = tiny_family_factory(LOCALES, root=tmp_path)
    study = Study(locales=LOCALES, backbone=layout.backbone, root=str(tmp_path), nxn_splits=["validation"],
                  data={"source": "release", "data_path": str(tmp_path / "no-data")})  # nothing may read data
    want = {(s, t): round(0.1 * i + 0.01 * j, 4) for i, s in enumerate(LOCALES) for j, t in enumerate(LOCALES)}
    # de-DE's row is in the split's cells file already; fr-FR's in its shard; sw-KE's shard lacks one cell and holds
    # a cell of an older sw-KE model (another hash), which does not count
    _write(layout.nxn("validation") / NXN_CELLS, [_cell(study, "validation", "de-DE", t, want["de-DE", t]) for t in LOCALES])
    _write(layout.nxn_shard("validation", "fr-FR") / NXN_CELLS,
           [_cell(study, "validation", "fr-FR", t, want["fr-FR", t]) for t in LOCALES])
    sw = [_cell(study, "validation", "sw-KE", t, want["sw-KE", t]) for t in LOCALES[:2]]
    _write(layout.nxn_shard("validation", "sw-KE") / NXN_CELLS,
           sw + [_cell(study, "validation", "sw-KE", "sw-KE", 0.99, model_hash="old")])
    assert missing_cells(study, "validation") == {"sw-KE": 1}
    with pytest.raises(RuntimeError, match="still missing"):
        merge_shards(study, "validation")
    _write(layout.nxn_shard("validation", "sw-KE") / NXN_CELLS,
           sw + [_cell(study, "validation", "sw-KE", "sw-KE", want["sw-KE", "sw-KE"])])
    assert missing_cells(study, "validation") == {}
    folder = merge_shards(study, "validation")
    matrix = pd.read_csv(folder / "evaluation_matrix.csv", index_col=0)
    assert {(s, t): matrix.at[s, t] for s in LOCALES for t in LOCALES} == want
    assert not (folder / "shards").exists()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cells"]["computed"] == 0 and summary["loads"] == 0  # nothing evaluated in the launcher
    assert merge_shards(study, "validation") == folder  # a rerun with nothing to merge


def test_dry_run_plans_and_writes_nothing(tiny_family_factory, tmp_path):
    layout = tiny_family_factory(LOCALES[:2], root=tmp_path / "ckpt")
    before = sorted(p for p in tmp_path.rglob("*"))
    proc = subprocess.run([*CLI, "study", "--locales", *LOCALES, "--backbone", layout.backbone, "--root", str(layout.root),
                           "--sweep", json.dumps({"grid": {"target": ["sw-KE"], "merge.method": ["similarity", "ties"]},
                                                  "fixed": {"selection": {"similarity": "uriel", "num_sources": 2}}}),
                           "--dry-run"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "fit: 2 finished, 1 to run: sw-KE" in proc.stdout and "nxn test: 9 of 9 cells" in proc.stdout
    assert "sweep: 2 points" in proc.stdout
    assert sorted(p for p in tmp_path.rglob("*")) == before
    bad = subprocess.run([*CLI, "study", "--locales", "de-DE", "xx-XX", "--root", str(layout.root)], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "xx-XX" in bad.stderr and "Traceback" not in bad.stderr


# -- CI-sized studies on the embedded default ---------------------------------------------------------------------------
STUDY_LOCALES = ["es-ES", "pt-PT", "ca-ES"]


@pytest.fixture(scope="module")
def embedded_root(tmp_path_factory):
    """A small embedded build (data + backbone), copied into each test's folder."""
    folder = tmp_path_factory.mktemp("embedded")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run([*CLI, "embedded", "--root", "checkpoints", "--train_per_intent", "8", "--dev_per_intent", "3",
                    "--test_per_intent", "3"],
                   cwd=folder, env=env, check=True, capture_output=True, timeout=600)
    return folder / "checkpoints" / "embedded"


def _study_yaml(folder: Path, embedded: Path, **extra) -> Path:
    shutil.copytree(embedded, folder / "checkpoints" / "embedded")
    config = {"name": "ci", "locales": STUDY_LOCALES, "backbone": "embedded", "root": "checkpoints",
              "data": {"source": "embedded", "max_length": 64}, "fit_overrides": {"trainer": {"max_epochs": 3}},
              "torch_threads": 1,
              "sweep": {"fixed": {"selection": {"num_sources": 2, "similarity": "real"}, "evaluate": {"features": False}},
                        "grid": {"target": ["pt-PT"], "merge.method": ["similarity", "ties"]}}}
    config.update(extra)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _complete(folder: Path) -> None:
    """Every fine-tune, both full NxN matrices and every sweep point are there."""
    home = folder / "checkpoints" / "embedded-tiny"
    for loc in STUDY_LOCALES:
        assert (home / "finetuned" / loc / "manifest.json").is_file()
    for split in ("validation", "test"):
        matrix = pd.read_csv(home / "nxn" / split / "evaluation_matrix.csv", index_col=0)
        assert list(matrix.index) == STUDY_LOCALES and list(matrix.columns) == STUDY_LOCALES
        assert all(0 <= v <= 1 and not math.isnan(v) for v in matrix.to_numpy().ravel())
        assert not (home / "nxn" / split / "shards").exists()
    with ResultsDB(folder / "checkpoints" / "experiments" / "ci" / "results.sqlite", readonly=True) as db:
        rows = db.rows()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.mark.slow
def test_study_on_submitit_local_executor(embedded_root, tmp_path):
    cfg = _study_yaml(tmp_path, embedded_root, launcher="submitit", submitit={"cluster": "local", "timeout_min": 20})
    proc = subprocess.run([*CLI, "study", "-c", str(cfg)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _complete(tmp_path)
    jobs = tmp_path / "checkpoints" / "experiments" / "ci" / "jobs"
    # every fit and every NxN shard ran as a job of its stage's array (one log per task), and so did each sweep point
    assert len(list((jobs / "fit").glob("*_log.out"))) == 3
    assert len(list((jobs / "nxn").glob("*_log.out"))) == 6
    assert len(list((jobs / "sweep").glob("*_log.out"))) == 2
    assert "submitted 3 jobs" in proc.stderr and "submitted 6 jobs" in proc.stderr


def _run_until(cmd: list[str], cwd: Path, done, timeout: float = 600) -> None:
    """Start the study, SIGKILL it as soon as ``done()`` holds."""
    with open(cwd / "killed.log", "a") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=log, stderr=log)
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not done():
            time.sleep(0.05)
        assert proc.poll() is None, "the study ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_study_resumes_after_sigkill(embedded_root, tmp_path):
    cfg = _study_yaml(tmp_path, embedded_root)
    cmd = [*CLI, "study", "-c", str(cfg)]
    home = tmp_path / "checkpoints" / "embedded-tiny"

    def weights() -> dict:
        return {p: p.stat().st_mtime_ns for p in (home / "finetuned").glob("*/model.safetensors")}

    def finished() -> list[str]:
        return [loc for loc in STUDY_LOCALES if (home / "finetuned" / loc / "manifest.json").is_file()]

    _run_until(cmd, tmp_path, lambda: len(finished()) >= 1)  # killed during the fits
    first = weights()
    assert 1 <= len(finished()) < 3 and len(first) == len(finished())

    def shard_cells() -> list[dict]:
        from merginguriel.evaluation.nxn import read_cells

        return [c for p in (home / "nxn").glob(f"*/shards/*/{NXN_CELLS}") for c in read_cells(p)]

    _run_until(cmd, tmp_path, lambda: len(shard_cells()) >= 2)  # killed during the NxN
    assert {p: t for p, t in weights().items() if p in first} == first  # finished fine-tunes were not redone
    assert len(finished()) == 3
    at_kill, fitted = shard_cells(), weights()

    last = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert last.returncode == 0, last.stderr[-3000:]
    assert "3 finished already, 0 to run" in last.stderr
    _complete(tmp_path)
    assert weights() == fitted
    # the cells evaluated before the kill were kept, not evaluated again (their timings are the same numbers)
    from merginguriel.evaluation.nxn import read_cells

    final = [c for split in ("validation", "test") for c in read_cells(home / "nxn" / split / NXN_CELLS)]
    assert at_kill and all(c in final for c in at_kill)
    assert len(final) == 18  # one line per cell: nothing evaluated twice
