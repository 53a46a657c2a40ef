"""`merginguriel fit` / `test` / `validate` as a user runs them: real subprocesses on tiny models and release-format data."""

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
from safetensors.torch import load_file

from conftest import make_base, write_release_data

from merginguriel.io import checkpoint_hash, read_manifest

CLI = [sys.executable, "-m", "merginguriel.cli.main"]


def run_cli(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit")
    make_base(root, "tiny", seed=0, hidden=32)
    write_release_data(root / "data", ["es-ES", "it-IT"], per_intent=(8, 2, 2))
    return root


def fit_args(root: Path, *extra: str) -> list[str]:
    return [
        "fit", "--model.backbone", str(root / "tiny" / "base"), "--model.root", str(root), "--model.base_seed", "0",
        "--model.learning_rate", "3e-3", "--model.warmup_ratio", "0.0",
        "--data.locales", "es-ES", "--data.source", "release", "--data.data_path", str(root / "data"),
        "--data.batch_size", "16", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--torch_threads", "1",
        *extra,
    ]


def test_fit_then_test_end_to_end(workspace: Path) -> None:
    root = workspace
    run_cli(fit_args(root, "--trainer.max_epochs", "12", "--keep_checkpoints", "true"), cwd=root)
    out = root / "tiny" / "finetuned" / "es-ES"
    run = root / "tiny" / "runs" / "es-ES"  # Lightning's working files, outside finetuned/
    assert sorted(p.name for p in (root / "tiny" / "finetuned").iterdir()) == ["es-ES"]
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "final.ckpt" in kept and "last.ckpt" in kept and any(n.startswith("best-") for n in kept)
    manifest = read_manifest(out)
    base_manifest = read_manifest(root / "tiny" / "base")
    # The fine-tune records the shared base it started from, and its own weights' hash.
    assert manifest["kind"] == "finetuned" and manifest["locale"] == "es-ES"
    assert manifest["base"] == {"path": str(root / "tiny" / "base"), "hash": base_manifest["hash"]}
    assert manifest["hash"] == checkpoint_hash(out)
    assert manifest["metrics"]["best_val_accuracy"] > 0.2  # 60 classes: chance is 0.017
    assert manifest["warnings"] == []  # a fit that learned raises no near-chance warning
    # The exported folder holds the best checkpoint's weights, not the last epoch's.
    best = torch.load(manifest["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    exported = load_file(out / "model.safetensors")
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, best[f"model.{name}"])

    proc = run_cli(
        ["test", "--model.checkpoint", str(out), "--model.root", str(root), "--model.backbone", str(root / "tiny" / "base"),
         "--model.base_seed", "0", "--data.locales", "[es-ES, it-IT]", "--data.source", "release",
         "--data.data_path", str(root / "data"), "--trainer.enable_progress_bar", "false"],
        cwd=root,
    )
    metrics = json.loads((out / "eval" / "test-es-ES+it-IT.json").read_text())["metrics"]
    assert set(metrics) == {"es-ES", "it-IT"}
    assert metrics["es-ES"]["n"] == 120 and 0.0 <= metrics["es-ES"]["accuracy"] <= 1.0
    assert f"test es-ES: accuracy {metrics['es-ES']['accuracy']:.4f}" in proc.stdout
    # Independent check of the reported accuracy with a plain forward pass over the test rows.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from merginguriel.data import DataConfig, load_locale

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    rows = load_locale(DataConfig(source="release", data_path=str(root / "data"), root=str(root)), "es-ES")["test"]
    with torch.no_grad():
        enc = tok([r["utt"] for r in rows], padding=True, truncation=True, max_length=128, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
    acc = (pred == torch.tensor([r["label"] for r in rows])).float().mean().item()
    assert metrics["es-ES"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert metrics["es-ES"]["accuracy"] > 0.2

    # A second fit of the same locale reuses the finished fine-tune (a rerun is idempotent), untouched.
    before = (out / "model.safetensors").read_bytes()
    again = run_cli(fit_args(root, "--trainer.max_epochs", "1"), cwd=root)
    assert "already fine-tuned" in again.stdout and (out / "model.safetensors").read_bytes() == before

    # Killed after training, during the export: the rerun goes straight to the export (no epoch is trained again)
    # and exports the very same model.
    import shutil

    shutil.rmtree(out)
    resumed = run_cli(fit_args(root, "--trainer.max_epochs", "12"), cwd=root)
    assert "training had finished" in resumed.stdout and "Epoch" not in resumed.stdout
    assert (out / "model.safetensors").read_bytes() == before
    # without --keep_checkpoints, the verified export is all that stays: no .ckpt file, Lightning's small logs only
    assert f"removed the fit's {len(kept)} checkpoint file(s)" in resumed.stdout
    assert not list(run.rglob("*.ckpt")) and not (run / "checkpoints").exists()
    assert {p.relative_to(run).parts[0] for p in run.rglob("*") if p.is_file()} == {"lightning_logs"}
    again = run_cli(fit_args(root, "--trainer.max_epochs", "12"), cwd=root)  # and a rerun still reuses the export
    assert "already fine-tuned" in again.stdout and (out / "model.safetensors").read_bytes() == before


def test_fit_resumes_after_kill(tmp_path: Path) -> None:
    """Killed during training, a fit resumes from last.ckpt (saved every epoch) and ends with exactly the model an
    uninterrupted fit exports: same epochs, same data order, same dropout draws."""
    root = tmp_path
    make_base(root, "tiny", seed=0, hidden=32)
    write_release_data(root / "data", ["es-ES"], per_intent=(8, 2, 2))
    args = fit_args(root, "--trainer.max_epochs", "6", "--early_stopping.patience", "1000")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([*CLI, *args], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = root / "tiny" / "runs" / "es-ES" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the fit must be killed while it trains"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file()
    out = root / "tiny" / "finetuned" / "es-ES"
    assert not (out / "manifest.json").exists()  # nothing that looks finished
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert killed_at < 5

    result = run_cli(args, cwd=root)
    assert f"resuming the interrupted fit from {last}" in result.stdout
    manifest = read_manifest(out)
    # It continued: only the missing epochs ran (8 train examples x 60 intents / batch 16 = 30 steps an epoch).
    assert manifest["metrics"]["epochs"] == 6 and manifest["metrics"]["global_steps"] == 6 * 30
    run_cli([*args, "--output", str(root / "uninterrupted")], cwd=root)
    resumed, whole = load_file(out / "model.safetensors"), load_file(root / "uninterrupted" / "model.safetensors")
    for name in whole:
        assert torch.equal(resumed[name], whole[name]), name
    assert manifest["metrics"]["best_val_accuracy"] == read_manifest(root / "uninterrupted")["metrics"]["best_val_accuracy"]


def test_fit_weights_do_not_depend_on_what_ran_before(tmp_path: Path) -> None:
    """The first fit of a process, which also builds the shared base (drawing the head's initial weights), and a fit
    after other random draws in the same process end with the same weights."""
    import random

    import numpy as np

    from merginguriel.cli.main import run

    backbone = make_base(tmp_path / "hub", "bb", seed=0, hidden=32)  # a plain model folder to build the base from
    root = tmp_path / "root"
    write_release_data(root / "data", ["es-ES"], per_intent=(2, 1, 1))

    def fit(out: Path) -> dict:
        args = fit_args(root, "--model.backbone", str(backbone), "--trainer.max_epochs", "2", "--output", str(out),
                        "--trainer.logger", "false")
        assert run("fit", args[1:]) == 0
        return load_file(out / "model.safetensors")

    first = fit(tmp_path / "first")
    assert (root / "bb" / "base" / "manifest.json").is_file()  # the first fit built the base
    torch.randn(1000), random.random(), np.random.rand(10)  # something else ran
    second = fit(tmp_path / "second")
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_validate_and_base_evaluation(workspace: Path) -> None:
    root = workspace
    proc = run_cli(
        ["validate", "--model.backbone", str(root / "tiny" / "base"), "--model.root", str(root), "--model.base_seed", "0",
         "--data.locales", "it-IT", "--data.source", "release", "--data.data_path", str(root / "data"),
         "--trainer.enable_progress_bar", "false"],
        cwd=root,
    )
    assert "val/accuracy" in proc.stdout


def test_bad_input_is_a_clear_error(workspace: Path) -> None:
    root = workspace
    proc = run_cli(fit_args(root) + ["--data.locales", "xx-XX"], cwd=root, check=False)
    assert proc.returncode != 0 and "xx-XX" in (proc.stdout + proc.stderr) and "sw-KE" in (proc.stdout + proc.stderr)
    proc = run_cli(["test", "--model.checkpoint", str(root / "nope"), "--data.locales", "es-ES", "--model.root", str(root),
                    "--model.backbone", str(root / "tiny" / "base"), "--model.base_seed", "0"], cwd=root, check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_print_config_round_trips(workspace: Path, tmp_path: Path) -> None:
    root = workspace
    printed = run_cli(fit_args(root, "--trainer.max_epochs", "4", "--print_config"), cwd=root).stdout
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(printed)
    again = run_cli(["fit", "--config", str(cfg), "--print_config"], cwd=root).stdout
    assert again == printed
    assert "max_epochs: 4" in printed and "patience: 3" in printed and "learning_rate: 0.003" in printed


def test_best_checkpoint_survives_a_kill_between_saves(tmp_path: Path) -> None:
    """Killed after a new best was saved (old one deleted) but before last.ckpt was rewritten: the resumed callback
    names a deleted file, and the best surviving file must be used instead."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from merginguriel.models.finetune import best_checkpoint

    for name, score in (("best-epoch=06.ckpt", 0.61), ("best-epoch=07.ckpt", 0.58)):
        state = {"callbacks": {"ModelCheckpoint{'monitor': 'val/accuracy'}": {"best_model_score": torch.tensor(score)}}}
        torch.save(state, tmp_path / name)
    callback = ModelCheckpoint(dirpath=str(tmp_path), monitor="val/accuracy", mode="max")
    callback.best_model_path = str(tmp_path / "best-epoch=05.ckpt")  # deleted before the kill
    callback.best_model_score = torch.tensor(0.55)
    path, score = best_checkpoint(callback)
    assert path == str(tmp_path / "best-epoch=06.ckpt") and score == pytest.approx(0.61)
    callback.best_model_path = str(tmp_path / "best-epoch=07.ckpt")  # normally the callback's record is right
    assert best_checkpoint(callback)[0] == str(tmp_path / "best-epoch=07.ckpt")


def front_matter(card: Path) -> dict:
    import yaml

    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_a_fit_without_config_takes_its_backbones_recipe(tmp_path: Path) -> None:
    """On the embedded backbone, no --config means the fit-embedded recipe (the library default learning rate, meant for
    XLM-R, leaves the tiny backbone at chance)."""
    import yaml

    from merginguriel.configs import config_path
    from merginguriel.embedded.build import build_embedded

    build_embedded(root=str(tmp_path / "ck"), train_per_intent=2, dev_per_intent=1, test_per_intent=1,
                   hidden_size=32, num_layers=1, num_heads=2)
    proc = run_cli(["fit", "--data.locales", "es-ES", "--model.root", str(tmp_path / "ck"), "--trainer.max_epochs", "1",
                    "--trainer.enable_progress_bar", "false"], cwd=tmp_path)
    assert "no --config given; using the fit-embedded recipe for this backbone" in proc.stderr
    recipe = yaml.safe_load(config_path("fit-embedded").read_text())
    out = tmp_path / "ck" / "embedded-tiny" / "finetuned" / "es-ES"
    manifest = read_manifest(out)
    config = manifest["config"]
    assert config["model"]["learning_rate"] == recipe["model"]["learning_rate"] != 5e-5
    assert config["data"]["max_length"] == recipe["data"]["max_length"] and config["model"]["backbone"] == "embedded"
    # its model card: synthetic data (no MASSIVE dataset, the project's licence), the locale's language, the recipe
    meta = front_matter(out / "README.md")
    assert meta["license"] == "apache-2.0" and "datasets" not in meta and "base_model" not in meta
    assert meta["language"] == ["es"] and "synthetic-data" in meta["tags"] and meta["library_name"] == "transformers"
    assert f"learning rate {recipe['model']['learning_rate']:.4g}" in (out / "README.md").read_text()


def test_print_config_shows_the_recipe_of_an_xlmr_fit(tmp_path: Path) -> None:
    import yaml

    from merginguriel.configs import config_path

    proc = run_cli(["fit", "--model.backbone", "FacebookAI/xlm-roberta-base", "--data.locales", "de-DE", "--print_config"], cwd=tmp_path)
    assert "using the fit-xlmr-base recipe" in proc.stderr
    shown, recipe = yaml.safe_load(proc.stdout), yaml.safe_load(config_path("fit-xlmr-base").read_text())
    for section, key in (("data", "source"), ("trainer", "accelerator"), ("trainer", "log_every_n_steps"), ("model", "learning_rate")):
        assert shown[section][key] == recipe[section][key]
    assert shown["data"]["source"] == "hub" and shown["data"]["locales"] == "de-DE"  # the recipe, with the command line on top


def test_a_fit_left_near_chance_ends_with_a_loud_warning(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "chance"
    proc = run_cli(fit_args(workspace, "--model.learning_rate", "1e-9", "--trainer.max_epochs", "1", "--output", str(out)),
                   cwd=workspace)
    manifest = read_manifest(out)
    assert manifest["metrics"]["best_val_accuracy"] < 3 / 60
    (warning,) = manifest["warnings"]
    assert "near chance" in warning and "--config fit-embedded" in warning and "--config fit-xlmr-base" in warning
    assert f"\nWARNING: {warning}\n" in proc.stdout  # the last thing the fit prints, on a line of its own
    assert proc.stdout.rstrip().endswith(warning)
    card = (out / "README.md").read_text()
    assert f"> **Warning:** {warning}" in card
    meta = front_matter(out / "README.md")
    assert meta["datasets"] == ["AmazonScience/massive"] and meta["license"] == "cc-by-4.0" and meta["language"] == ["es"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["config"] == "es-ES" and result["dataset"]["split"] == "validation"
    assert result["metrics"][0]["value"] == round(manifest["metrics"]["best_val_accuracy"], 4)


def test_checkpoints_are_removed_only_when_meant_and_the_export_is_intact(workspace: Path) -> None:
    """A rerun that reuses a finished fit removes checkpoints left behind only when the fit meant to remove them (a
    kill between the export and their removal) and the export's weights are still what its manifest hashed; a fit
    that kept them on purpose keeps them."""
    import json as _json

    root = workspace
    args = fit_args(root, "--data.locales", "it-IT", "--trainer.max_epochs", "2")
    run_cli([*args, "--keep_checkpoints", "true"], cwd=root)
    out, ckpts = root / "tiny" / "finetuned" / "it-IT", root / "tiny" / "runs" / "it-IT" / "checkpoints"
    n = len(list(ckpts.glob("*.ckpt")))
    assert n >= 3
    assert "removed" not in run_cli(args, cwd=root).stdout and len(list(ckpts.glob("*.ckpt"))) == n  # kept on purpose

    manifest = _json.loads((out / "manifest.json").read_text())
    manifest["config"]["keep_checkpoints"] = False  # as a fit killed right after its export leaves it
    (out / "manifest.json").write_text(_json.dumps(manifest))
    weights = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(weights[:-4] + bytes(4))  # an export damaged since: its hash differs
    assert "removed" not in run_cli(args, cwd=root).stdout and len(list(ckpts.glob("*.ckpt"))) == n
    (out / "model.safetensors").write_bytes(weights)
    assert f"removed the fit's {n} checkpoint file(s)" in run_cli(args, cwd=root).stdout
    assert not list(ckpts.parent.rglob("*.ckpt"))


def test_an_export_is_checked_tensor_by_tensor(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from merginguriel.models.export import differing_tensors

    base = make_base(tmp_path, "tiny", seed=0, hidden=32)
    model = AutoModelForSequenceClassification.from_pretrained(base)
    assert differing_tensors(base, model) == []
    with torch.no_grad():
        model.classifier.out_proj.bias[3] += 1e-6
    assert differing_tensors(base, model) == ["classifier.out_proj.bias"]
