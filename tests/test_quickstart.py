"""The quick start as a user runs it, CI-sized: the whole flow twice in an empty folder; the second run reuses every
step and ends with the same verdicts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLI = [sys.executable, "-m", "merginguriel.cli.main"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_quickstart_twice(tmp_path):
    locales = ["es-ES", "pt-PT", "ca-ES", "it-IT"]
    # a small embedded world and short fits: the same code path as `make demo`, in CI time
    _run(["embedded", "--root", "checkpoints", "--train_per_intent", "8", "--dev_per_intent", "3", "--test_per_intent", "3"],
         tmp_path)
    from merginguriel.configs import config_path

    recipe = yaml.safe_load(config_path("fit-embedded").read_text())
    recipe["trainer"]["max_epochs"] = 3
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(recipe))
    sweep = {"name": "qs", "fixed": {"backbone": "embedded", "root": "checkpoints", "data": {"source": "embedded", "max_length": 64},
                                     "selection": {"num_sources": 2, "candidates": locales}},
             "grid": {"target": ["pt-PT"], "selection.similarity": ["uriel", "real"], "merge.method": ["similarity", "ties"]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    args = ["quickstart", "--sweep", "sweep.yaml", "--fit_config", "fit.yaml", "--locales", f"[{','.join(locales)}]",
            "--torch_threads", "1"]
    first = _run(args, tmp_path)
    verdicts = first.stdout.strip().splitlines()[-1:]
    assert verdicts[0].startswith("pt-PT: ") and "95% CI" in verdicts[0]  # the last line is the verdict
    report = tmp_path / "checkpoints" / "experiments" / "qs" / "report"
    assert (report / "summary.md").is_file() and (report / "pt-PT.png").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints" / "embedded-tiny").rglob("*.safetensors")}
    second = _run(args, tmp_path)
    assert second.stdout.strip().splitlines()[-1:] == verdicts
    assert second.stdout.count("reused") >= len(locales) and "4 done already" in second.stderr
    # nothing was fine-tuned, merged or rebuilt again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints" / "embedded-tiny").rglob("*.safetensors")} == stamps

    # disk: beside the exported models (shared base, fine-tunes; the sweep keeps no merges), the embedded data, the
    # caches and the experiments, what is left (training's working files, NxN cells, ...) is at most 20% of the models
    ck, home = tmp_path / "checkpoints", tmp_path / "checkpoints" / "embedded-tiny"
    files = {p: p.stat().st_size for p in ck.rglob("*") if p.is_file()}
    models = {p for p in files if p.parent == home / "base" or p.parent.parent == home / "finetuned"}
    apart = {p for p in files if p.relative_to(ck).parts[0] in ("embedded", "cache", "experiments")}
    rest = set(files) - models - apart
    assert len({p.parent for p in models}) == 1 + len(locales) and sorted(p.name for p in (home / "finetuned").iterdir()) == sorted(locales)
    assert sum(files[p] for p in rest) <= 0.2 * sum(files[p] for p in models), sorted(rest)
    assert not [p for p in rest if p.suffix == ".ckpt"]


def test_a_misspelt_sweep_key_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from merginguriel.errors import InputError
    from merginguriel.quickstart import run_quickstart

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"name": "qs", "fixed": {"target": "pt-PT"}, "grids": {"k": [1]}}))
    with pytest.raises(InputError, match=r"unknown sweep key\(s\) grids in .*sweep.yaml"):
        run_quickstart(sweep=str(tmp_path / "sweep.yaml"), locales=["pt-PT", "es-ES"])
    assert list(tmp_path.iterdir()) == [tmp_path / "sweep.yaml"]  # nothing built
