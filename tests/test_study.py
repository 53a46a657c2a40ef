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


def test_submitit_settings_are_typed_and_bad_ones_refused_before_anything_is_written(tmp_path):
    """Settings read as submitit declares them (a config's "30" is the int 30), a zero or negative time limit or job
    cap and an unknown key refused with the value named, from Python and from the command line (nothing written)."""
    study = Study(locales=LOCALES, root=str(tmp_path), launcher="submitit",
                  submitit={"cluster": "local", "timeout_min": "30", "slurm_partition": 7, "nxn": {"local_max_jobs": "3"}})
    assert study.stage_settings("fit")["timeout_min"] == 30 and study.stage_settings("fit")["slurm_partition"] == "7"
    assert study.stage_settings("nxn")["local_max_jobs"] == 3
    for settings, needle in (({"timeout_min": 0}, "submitit.timeout_min = 0: it must be positive"),
                             ({"fit": {"timeout_min": -5}}, "submitit.fit.timeout_min = -5: it must be positive"),
                             ({"local_max_jobs": 0}, "submitit.local_max_jobs = 0: it must be positive"),
                             ({"slurm_array_parallelism": -1}, "submitit.slurm_array_parallelism = -1"),
                             ({"timeout_min": "half an hour"}, "submitit.timeout_min = 'half an hour': submitit takes int"),
                             ({"sweep": {"timout_min": 5}}, r"unknown submitit setting\(s\) submitit.sweep.timout_min; known: "),
                             ({"cluster": "sge"}, "submitit.cluster = 'sge'")):
        with pytest.raises(InputError, match=needle):
            Study(locales=LOCALES, root=str(tmp_path), launcher="submitit", submitit=settings)
    with pytest.raises(InputError, match="slurm_partition.*timeout_min"):  # the known keys are listed in full
        Study(locales=LOCALES, submitit={"partition": "gpu"})
    for args, needle in ((["--submitit.timeout_min", "0"], "submitit.timeout_min = 0"),
                         (["--submitit.fit.local_max_jobs", "-2"], "submitit.fit.local_max_jobs = -2"),
                         (["--submitit.timout_min", "30"], "unknown submitit setting(s) submitit.timout_min")):
        proc = subprocess.run([*CLI, "study", "--config", "study-embedded", "--launcher", "submitit", "--submitit.cluster",
                               "local", "--root", str(tmp_path / "ck"), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_command_line_overrides_are_typed_and_a_grid_axis_keeps_the_others(tmp_path):
    """`--submitit.timeout_min 30` is an int; `--sweep.grid.merge.method '[ties]'` replaces that axis only (the
    config's targets and similarities stay), and a new axis can be added the same way."""
    from merginguriel.cli.parse import parse_function_args
    from merginguriel.cli.study import study
    from merginguriel.configs import config_path

    config = yaml.safe_load(config_path("study-embedded").read_text())
    kwargs = parse_function_args(study, ["--config", str(config_path("study-embedded")), "--submitit.timeout_min", "30",
                                         "--submitit.fit.timeout_min=45", "--sweep.grid.merge.method", "[ties]",
                                         "--sweep.grid.selection.num_sources", "[2, 3]",
                                         "--sweep.fixed.evaluate.batch_size", "64"], "study")
    assert kwargs["submitit"] == {"timeout_min": 30, "fit": {"timeout_min": 45}}
    grid = {**config["sweep"]["grid"], "merge.method": ["ties"], "selection": {"num_sources": [2, 3]}}
    assert kwargs["sweep"]["grid"] == grid
    assert kwargs["sweep"]["fixed"]["selection"] == config["sweep"]["fixed"]["selection"]  # the rest of fixed stays
    assert kwargs["sweep"]["fixed"]["evaluate"] == {**config["sweep"]["fixed"]["evaluate"], "batch_size": 64}
    points = Study(locales=config["locales"], sweep=kwargs["sweep"]).sweep_plan().points()
    want = {(t, s, "ties", k) for t in config["sweep"]["grid"]["target"] for s in config["sweep"]["grid"]["selection.similarity"]
            for k in (2, 3)}
    assert {(p.target, p.selection.similarity, p.merge.method, p.selection.num_sources) for p in points} == want
    proc = subprocess.run([*CLI, "study", "--config", "study-embedded", "--root", str(tmp_path / "ck"), "--launcher", "submitit",
                           "--submitit.cluster", "local", "--sweep.grid.merge.method", "[ties]", "--dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"sweep: {len(config['sweep']['grid']['target']) * 2} points" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_default_time_limits_grow_with_the_work(tmp_path):
    """A stage without a time limit gets one from its work: more epochs or locales, a larger backbone, a longer
    limit; a limit the user gives (for every stage or for one) is used as it is."""
    small = Study(locales=LOCALES, launcher="submitit", submitit={"cluster": "local"}, fit_overrides={"trainer": {"max_epochs": 3}})
    limits = {stage: small.stage_settings(stage)["timeout_min"] for stage in ("fit", "nxn", "sweep")}
    assert all(isinstance(v, int) and v >= 10 for v in limits.values())
    longer = Study(locales=LOCALES, launcher="submitit", fit_overrides={"trainer": {"max_epochs": 30}})
    assert longer.stage_settings("fit")["timeout_min"] > limits["fit"]
    many = Study(locales=[*LOCALES, "es-ES", "it-IT", "pt-PT", "ca-ES", "ro-RO", "ms-MY", "id-ID", "tr-TR", "ja-JP"],
                 backbone="FacebookAI/xlm-roberta-base")
    big = Study(locales=LOCALES, backbone="FacebookAI/xlm-roberta-base")
    for stage in ("fit", "nxn", "sweep"):
        assert big.job_minutes(stage) > Study(locales=LOCALES).job_minutes(stage)
    assert many.job_minutes("nxn") > big.job_minutes("nxn") and many.job_minutes("sweep") > big.job_minutes("sweep")
    assert big.job_minutes("fit") >= 60  # 15 epochs of XLM-R on a locale of MASSIVE: an hour, not submitit's 2 minutes
    given = Study(locales=LOCALES, submitit={"timeout_min": 7, "nxn": {"timeout_min": 3}})
    assert [given.stage_settings(s)["timeout_min"] for s in ("fit", "nxn", "sweep")] == [7, 3, 7]


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


def test_a_failed_job_prints_why_and_the_command_that_resumes(tiny_family_factory, tmp_path):
    """A fit job that fails (its data is missing) under submitit's local cluster: the study stops at the fit stage,
    prints the job's reason, the tail of its stderr and its log, then the command that resumes it, which is the
    saved study config."""
    layout = tiny_family_factory(LOCALES[:2], root=tmp_path / "ck")
    proc = subprocess.run([*CLI, "study", "--name", "broken", "--locales", *LOCALES, "--backbone", layout.backbone,
                           "--root", "ck", "--data.source", "release", "--data.data_path", "no-such-folder",
                           "--launcher", "submitit", "--submitit.cluster", "local", "--fit_overrides.model.base_seed", "0",
                           "--sweep", json.dumps({"grid": {"target": ["sw-KE"]}, "fixed": {"selection": {"similarity": "uriel",
                                                                                                    "num_sources": 2}}})],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.rstrip().splitlines()
    start = lines.index("study 'broken' stopped at fit: 1 task(s) failed:")
    assert lines[start + 1].startswith("  sw-KE: job ") and "no-such-folder" in lines[start + 1]
    assert any(line.startswith("    | ") for line in lines[start + 2:])  # the tail of the job's stderr
    log = next(line.split("log: ", 1)[1] for line in lines[start:] if line.startswith("    log: "))
    assert (tmp_path / log).is_file()
    assert lines[-1] == "fix the cause, then resume with: merginguriel study --config ck/experiments/broken/study.yaml"
    saved = yaml.safe_load((tmp_path / "ck" / "experiments" / "broken" / "study.yaml").read_text())
    assert saved["locales"] == LOCALES and saved["data"]["data_path"] == "no-such-folder"
    assert saved["submitit"] == {"cluster": "local"}
    resumed = Study(**saved)  # the saved config is a study as the command line made it
    assert resumed.stage_settings("fit")["timeout_min"] == resumed.job_minutes("fit")


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


def _complete(folder: Path, name: str = "ci", points: int = 2) -> list[dict]:
    """Every fine-tune, both full NxN matrices and every sweep point are there; returns the sweep's rows."""
    home = folder / "checkpoints" / "embedded-tiny"
    for loc in STUDY_LOCALES:
        assert (home / "finetuned" / loc / "manifest.json").is_file()
    for split in ("validation", "test"):
        matrix = pd.read_csv(home / "nxn" / split / "evaluation_matrix.csv", index_col=0)
        assert list(matrix.index) == STUDY_LOCALES and list(matrix.columns) == STUDY_LOCALES
        assert all(0 <= v <= 1 and not math.isnan(v) for v in matrix.to_numpy().ravel())
        assert not (home / "nxn" / split / "shards").exists()
    with ResultsDB(folder / "checkpoints" / "experiments" / name / "results.sqlite", readonly=True) as db:
        rows = db.rows()
    assert len(rows) == points and {r["status"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
    return rows


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.slow
def test_readme_local_submitit_study_interrupted_then_resumed(embedded_root, tmp_path):
    """The README's command (`study --config study-embedded --launcher submitit --submitit.cluster local`), reduced to
    three locales and four sweep points by command-line overrides (with no time limit given: each stage's is sized to
    its work). Ctrl-C during the NxN ends with one line naming the command that resumes, and no traceback; the same
    command then finishes the study, and the printed resume command finds everything done."""
    shutil.copytree(embedded_root, tmp_path / "checkpoints" / "embedded")
    cmd = [*CLI, "study", "--config", "study-embedded", "--launcher", "submitit", "--submitit.cluster", "local",
           "--locales", f"[{','.join(STUDY_LOCALES)}]", "--fit_overrides.trainer.max_epochs", "2",
           "--sweep.grid.target", "[pt-PT]", "--sweep.grid.merge.method", "[similarity, ties]",
           "--sweep.fixed.selection.num_sources", "2"]
    log = tmp_path / "interrupted.log"
    with open(log, "w") as out:  # its own session: the Ctrl-C of a terminal reaches the whole process group
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 900
        while time.time() < deadline and proc.poll() is None and "[nxn] submitted" not in log.read_text():
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    text = log.read_text()
    resume = "merginguriel study --config checkpoints/experiments/study-embedded/study.yaml"
    assert text.rstrip().splitlines()[-1] == ("study 'study-embedded' stopped by SIGINT during nxn; finished work is kept, "
                                              f"resume with: {resume}")
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    study = Study(**yaml.safe_load((tmp_path / "checkpoints" / "experiments" / "study-embedded" / "study.yaml").read_text()))
    fit_limit = study.stage_settings("fit")["timeout_min"]
    assert f"[fit] submitted 3 jobs to local, at most {_cores()} at once, time limit {fit_limit} min each" in text
    assert fit_limit == study.job_minutes("fit") >= 10  # sized to the work: not submitit's 2 minutes

    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[fit] 3 locales: 3 finished already, 0 to run" in again.stderr
    rows = _complete(tmp_path, "study-embedded", 4)
    got = {(r["config"]["target"], r["config"]["selection"]["similarity"], r["config"]["merge"]["method"]) for r in rows}
    assert got == {("pt-PT", sim, method) for sim in ("uriel", "real") for method in ("similarity", "ties")}
    for r in rows:
        assert r["config"]["selection"]["num_sources"] == 2 and len(r["selection"]["sources"]) == 2
        assert 0 <= r["metrics"]["splits"]["test"]["accuracy"] <= 1
    jobs = tmp_path / "checkpoints" / "experiments" / "study-embedded" / "jobs"
    # every fit ran as a job of its stage, and so did each sweep point
    assert len(list((jobs / "fit").glob("*_log.out"))) == 3 and len(list((jobs / "sweep").glob("*_log.out"))) == 4

    done = subprocess.run([*CLI, *resume.split()[1:], "--dry-run"], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "fit: 3 finished, 0 to run" in done.stdout and "nxn test: 0 of 9 cells" in done.stdout
    assert "sweep: 4 points" in done.stdout


def _run_until(cmd: list[str], cwd: Path, done, timeout: float = 600, sig: int = signal.SIGKILL) -> tuple[int, str]:
    """Start the study, send it ``sig`` as soon as ``done()`` holds; returns its exit status and output."""
    with open(cwd / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=log, stderr=log)
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not done():
            time.sleep(0.05)
        assert proc.poll() is None, "the study ended before it could be killed"
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=120)
    return code, (cwd / "killed.log").read_text()


@pytest.mark.slow
def test_study_resumes_after_sigkill(embedded_root, tmp_path):
    cfg = _study_yaml(tmp_path, embedded_root)
    cmd = [*CLI, "study", "-c", str(cfg)]
    home = tmp_path / "checkpoints" / "embedded-tiny"

    def weights() -> dict:
        return {p: p.stat().st_mtime_ns for p in (home / "finetuned").glob("*/model.safetensors")}

    def finished() -> list[str]:
        return [loc for loc in STUDY_LOCALES if (home / "finetuned" / loc / "manifest.json").is_file()]

    # Ctrl-C during the first fit (in this process, under Lightning): one line that says how to resume
    code, text = _run_until(cmd, tmp_path, lambda: (home / "runs").is_dir(), sig=signal.SIGINT)
    assert code == 130 and not finished(), text[-3000:]
    assert text.rstrip().splitlines()[-1] == ("study 'ci' stopped by SIGINT during fit; finished work is kept, resume with: "
                                              "merginguriel study --config checkpoints/experiments/ci/study.yaml")
    assert "Traceback" not in text, text[-3000:]

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
