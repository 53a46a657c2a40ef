"""The quick start as a user runs it, CI-sized: the whole flow in an empty folder, its targets chosen by the rule that
reads the validation NxN only (checked against an independent computation, and against a validation matrix edited so
that the rule must follow it, not the test matrix); a rerun reuses every step and ends with the same verdicts; a rule
that selects fewer than 2 targets is refused before any merge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from merginguriel.errors import InputError
from merginguriel.experiments.target_rule import apply_rule

CLI = [sys.executable, "-m", "merginguriel.cli.main"]
LOCALES = ["es-ES", "pt-PT", "ca-ES", "it-IT"]


def _run(args: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def rule_by_hand(matrix: pd.DataFrame, per_end: int = 1) -> list[str]:
    """The rule computed independently: numpy over the matrix in name order."""
    names = sorted(matrix.columns)
    v = matrix.loc[names, names].to_numpy(dtype=float)
    off = v.copy()
    np.fill_diagonal(off, -np.inf)
    ratio = off.max(axis=0) / np.diag(v)
    low = [names[i] for i in np.lexsort((np.arange(len(names)), ratio))[:per_end]]
    high = [names[i] for i in np.lexsort((np.arange(len(names)), -ratio))[:per_end]]
    return list(dict.fromkeys(low + high))


def test_rule_against_an_independent_computation():
    rng = np.random.default_rng(7)
    names = ["de-DE", "fr-FR", "sw-KE", "vi-VN", "cy-GB", "en-US"]
    for trial in range(20):
        v = pd.DataFrame(rng.choice([0.3, 0.5, 0.6, 0.7, 0.8], size=(6, 6)), index=names, columns=names)  # ties happen
        for per_end in (1, 2):
            want = rule_by_hand(v, per_end)
            if len(want) < 2:
                with pytest.raises(InputError):
                    apply_rule(v, names, per_end)
                continue
            got = apply_rule(v, names, per_end)
            assert got.targets == want, (trial, per_end)
            row = got.table.set_index("locale").loc["sw-KE"]
            others = v["sw-KE"].drop("sw-KE")
            assert row["zero_shot"] == others.max() and row["best_source"] == sorted(others[others == others.max()].index)[0]
            assert row["ratio"] == pytest.approx(others.max() / v.at["sw-KE", "sw-KE"])


def test_rule_breaks_ties_by_name_and_refuses_fewer_than_two_targets():
    names = ["fr-FR", "de-DE", "sw-KE"]
    flat = pd.DataFrame(np.where(np.eye(3, dtype=bool), 0.8, 0.4), index=names, columns=names)
    with pytest.raises(InputError, match=r"selected 1 target\(s\) \(de-DE\) from the ratios de-DE 0.500, fr-FR 0.500"):
        apply_rule(flat, names)
    flat.at["fr-FR", "sw-KE"] = 0.6  # sw-KE now the highest; de-DE and fr-FR tie lowest: de-DE by name
    assert apply_rule(flat, names).targets == ["de-DE", "sw-KE"]
    with pytest.raises(InputError, match="targets_per_end 0 selects fewer than 2 targets"):
        apply_rule(flat, names, per_end=0)
    with pytest.raises(InputError, match="lacks the cell"):
        apply_rule(flat.drop(columns="sw-KE"), names)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A CI-sized quick start (4 locales, small data, short fits, 4 merges per target), run once in an empty folder."""
    folder = tmp_path_factory.mktemp("quickstart")
    _run(["embedded", "--root", "checkpoints", "--train_per_intent", "8", "--dev_per_intent", "3", "--test_per_intent", "3"],
         folder)
    from merginguriel.configs import config_path

    recipe = yaml.safe_load(config_path("fit-embedded").read_text())
    recipe["trainer"]["max_epochs"] = 3
    (folder / "fit.yaml").write_text(yaml.safe_dump(recipe))
    sweep = {"name": "qs", "fixed": {"backbone": "embedded", "root": "checkpoints", "data": {"source": "embedded", "max_length": 64},
                                     "selection": {"num_sources": 2}},
             "grid": {"selection.similarity": ["uriel", "real"], "merge.method": ["similarity", "ties"]}}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    args = ["quickstart", "--sweep", "sweep.yaml", "--fit_config", "fit.yaml", "--locales", f"[{','.join(LOCALES)}]",
            "--torch_threads", "1"]
    return folder, args, _run(args, folder)


def _nxn(folder: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(folder / "checkpoints" / "embedded-tiny" / "nxn" / split / "evaluation_matrix.csv", index_col=0)


def _targets_line(stdout: str) -> list[str]:
    line = next(x for x in stdout.splitlines() if "done in" in x and ": targets " in x)
    return line.split(": targets ")[1].split(" (read:")[0].split(", ")


def _verdicts(stdout: str) -> tuple[list[str], list[str]]:
    """(verdicts printed as each target's merges were judged, the verdicts printed at the end)."""
    lines = stdout.strip().splitlines()
    during = [x.split("verdict: ", 1)[1] for x in lines[: lines.index(next(x for x in lines if x.startswith("[8/8]")))]
              if "verdict: " in x]
    end = lines[lines.index("Verdicts (merge chosen on validation, judged on test):") + 1:]
    return during, end


def test_quickstart_twice(first_run):
    folder, args, first = first_run
    out = first.stdout
    assert "[5/8] targets, by the rule fixed in advance: the lowest and the highest validation best-source" in out
    targets = _targets_line(out)
    assert targets == rule_by_hand(_nxn(folder, "validation"))
    for loc in LOCALES:  # every value the rule read is printed
        assert any(x.split()[:1] == [loc] and len(x.split()) >= 5 for x in out.splitlines()), loc
    during, end = _verdicts(out)
    assert [v.split(":")[0] for v in during] == targets and sorted(during) == end  # as they came, then all together
    assert all("95% CI" in v for v in end)
    report = folder / "checkpoints" / "experiments" / "qs" / "report"
    assert (report / "summary.md").is_file() and all((report / f"{t}.png").is_file() for t in targets)
    manifest = json.loads((report / "manifest.json").read_text())
    assert manifest["sources"]["targets"] == targets and "validation" in manifest["sources"]["target_rule"]
    stamps = {p: p.stat().st_mtime_ns for p in (folder / "checkpoints" / "embedded-tiny").rglob("*.safetensors")}
    second = _run(args, folder)
    assert _targets_line(second.stdout) == targets and _verdicts(second.stdout) == (during, end)
    assert second.stdout.count("reused") >= len(LOCALES) and second.stderr.count("4 done already") == 2
    # nothing was fine-tuned, merged or rebuilt again
    assert {p: p.stat().st_mtime_ns for p in (folder / "checkpoints" / "embedded-tiny").rglob("*.safetensors")} == stamps

    # disk: beside the exported models (shared base, fine-tunes; the sweep keeps no merges), the embedded data, the
    # caches and the experiments, what is left (training's working files, NxN cells, ...) is at most 20% of the models
    ck, home = folder / "checkpoints", folder / "checkpoints" / "embedded-tiny"
    files = {p: p.stat().st_size for p in ck.rglob("*") if p.is_file()}
    models = {p for p in files if p.parent == home / "base" or p.parent.parent == home / "finetuned"}
    apart = {p for p in files if p.relative_to(ck).parts[0] in ("embedded", "cache", "experiments")}
    rest = set(files) - models - apart
    assert len({p.parent for p in models}) == 1 + len(LOCALES) and sorted(p.name for p in (home / "finetuned").iterdir()) == sorted(LOCALES)
    assert sum(files[p] for p in rest) <= 0.2 * sum(files[p] for p in models), sorted(rest)
    assert not [p for p in rest if p.suffix == ".ckpt"]


def _edit_validation(folder: Path, value) -> None:
    """Append cells (same model hash and data key: they win over the measured ones) with made-up accuracies."""
    path = folder / "checkpoints" / "embedded-tiny" / "nxn" / "validation" / "cells.jsonl"
    cells = [json.loads(x) for x in path.read_text().splitlines()]
    with open(path, "a") as fh:
        for cell in cells:
            fh.write(json.dumps({**cell, "accuracy": value(cell["source"], cell["target"])}) + "\n")


def test_targets_follow_the_validation_matrix_not_the_test_one(first_run, tmp_path):
    folder, args, _ = first_run
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    from_test = rule_by_hand(_nxn(tmp_path, "test"))
    low, high = [loc for loc in sorted(LOCALES) if loc not in from_test]  # what reading test could never give
    _edit_validation(tmp_path, lambda s, t: 0.9 if s == t else 0.1 if t == low else 0.85 if t == high else 0.5)
    proc = _run(args, tmp_path)
    assert _targets_line(proc.stdout) == [low, high] == rule_by_hand(_nxn(tmp_path, "validation"))
    assert f"{low:<7} " in proc.stdout and " 0.111  <- target" in proc.stdout

    # every ratio equal: the rule selects one target and is refused before any merge, naming the values
    merged = tmp_path / "checkpoints" / "embedded-tiny" / "merged"
    before = sorted(p.name for p in merged.rglob("*"))
    _edit_validation(tmp_path, lambda s, t: 0.8 if s == t else 0.4)
    refused = _run(args, tmp_path, ok=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"the target rule selected 1 target(s) ({sorted(LOCALES)[0]}) from the ratios" in refused.stderr
    assert "0.500" in refused.stderr and "[7/8]" not in refused.stdout
    assert sorted(p.name for p in merged.rglob("*")) == before
