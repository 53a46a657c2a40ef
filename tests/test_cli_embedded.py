"""The embedded default from the command line: build it small, `fit` from the YAML config, `test`, as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli_fit import run_cli

from merginguriel.io import read_manifest


@pytest.mark.slow
def test_embedded_fit_and_test_from_yaml(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    # A smaller build than the default (same code path), so the test stays quick.
    run_cli(["embedded", "--root", str(root), "--train_per_intent", "12", "--dev_per_intent", "3", "--test_per_intent", "3",
             "--hidden_size", "64"], cwd=tmp_path)
    common = ["--config", "fit-embedded", "--model.root", str(root), "--data.locales", "es-ES"]
    run_cli(["fit", *common, "--trainer.max_epochs", "8", "--trainer.enable_progress_bar", "false"], cwd=tmp_path)
    folder = root / "embedded-tiny" / "finetuned" / "es-ES"
    manifest = read_manifest(folder)
    assert manifest["base"]["path"] == str(root / "embedded-tiny" / "base")
    assert manifest["metrics"]["best_val_accuracy"] > 0.1  # 6x chance after a few epochs on 720 examples
    run_cli(["test", *common, "--model.checkpoint", str(folder), "--trainer.enable_progress_bar", "false"], cwd=tmp_path)
    metrics = json.loads((folder / "eval" / "test-es-ES.json").read_text())["metrics"]["es-ES"]
    assert metrics["n"] == 180 and metrics["accuracy"] > 0.1
