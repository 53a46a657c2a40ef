"""Model cards and the hub: every merged folder carries a README.md whose Hugging Face metadata and body agree with its
manifest (sources and weights, method and parameters, metrics with 95% intervals once judged); the card is part of
the atomic write; `merginguriel push` refuses clearly without a token or network (the upload itself needs the hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import build_scenario

from merginguriel.cli.main import run

CLI = [sys.executable, "-m", "merginguriel.cli.main"]


def front_matter(card: Path) -> dict:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A TIES merge for sw-KE of de-DE and fr-FR (teacher-labelled world), judged on validation and test."""
    root = tmp_path_factory.mktemp("card")
    layout, data = build_scenario(root, "sw-KE", ["de-DE", "fr-FR"], "helps")
    out = root / "merged"
    assert run("merge", ["--root", str(layout.root), "--backbone", layout.backbone, "--target", "sw-KE", "--device", "cpu",
                         "--data.source", "release", "--data.data_path", str(data), "--progress", "false",
                         "--selection.sources", "de-DE", "fr-FR", "--selection.weights", "3", "1",
                         "--merge.method", "ties", "--merge.params.density", "0.5", "--output", str(out)]) == 0
    return layout, data, out


def test_the_card_metadata_agrees_with_the_manifest(judged):
    from huggingface_hub import ModelCard

    _, _, out = judged
    manifest = json.loads((out / "manifest.json").read_text())
    meta = front_matter(out / "README.md")
    assert ModelCard.load(out / "README.md").data.to_dict() == meta  # the hub library reads the same metadata
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["datasets"] == ["AmazonScience/massive"] and meta["license"] == "cc-by-4.0"
    assert meta["language"] == ["sw", "de", "fr"]  # the target first, then the sources
    assert {"merginguriel", "merge", "ties", "xlm-roberta"} <= set(meta["tags"])
    assert "base_model" not in meta  # the tiny backbone is no hub model (test_hub checks a hub id backbone)
    results = {r["dataset"]["split"]: r for r in meta["model-index"][0]["results"]}
    assert set(results) == {"validation", "test"} == set(manifest["evaluation"])
    for split, r in results.items():
        assert r["dataset"] == {"name": "MASSIVE (sw-KE)", "type": "AmazonScience/massive", "config": "sw-KE", "split": split}
        assert r["metrics"][0] == {"type": "accuracy", "value": round(manifest["evaluation"][split]["accuracy"], 4)}


def test_the_card_lists_sources_method_and_metrics_with_intervals(judged):
    from scipy.stats import binomtest

    _, _, out = judged
    manifest = json.loads((out / "manifest.json").read_text())
    card = (out / "README.md").read_text()
    assert manifest["weights_normalised"] == [0.75, 0.25]
    for rec, w in zip(manifest["sources"], manifest["weights_normalised"]):
        assert f"| {rec['locale']} | {w:.4f} | fine-tuned from the shared base | {rec['hash'][:12]} |" in card
    assert "- Method: `ties`; parameters: " in card
    for key, value in manifest["params"].items():
        assert f"`{key}={value:.4g}`" in card if isinstance(value, float) else f"`{key}={value}`" in card
    assert "`density=0.5`" in card and "Target: sw-KE" in card and "weights as given" in card
    for split, rec in manifest["evaluation"].items():
        ci = binomtest(round(rec["accuracy"] * rec["n"]), rec["n"]).proportion_ci(0.95, method="wilson")
        lo, hi = rec["gain_ci"]
        own = f"{100 * rec['self_accuracy']:.1f}" if "self_accuracy" in rec else "-"
        row = (f"| {split} | {rec['n']} | {100 * rec['accuracy']:.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}] | "
               f"{100 * rec['macro_f1']:.1f} | {rec['best_source']} {100 * rec['best_source_accuracy']:.1f} | "
               f"{100 * rec['gain']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | {rec['gain_p']:.2g} | "
               f"{100 * (rec['accuracy'] - rec['source_mean']):+.1f} | "
               f"{own} |\n")
        assert row in card, row


def test_a_failing_card_leaves_no_model(judged, tmp_path, monkeypatch):
    """The card is written inside the atomic write: if it cannot be written, no folder looks finished."""
    import merginguriel.models.card as card_module
    from merginguriel.merging import merge
    from merginguriel.merging.spec import MergeSpec, Source
    from merginguriel.models.export import export_hf

    layout, _, _ = judged

    def broken(*args, **kwargs):
        raise RuntimeError("card writer broken")

    monkeypatch.setattr(card_module, "render_card", broken)
    spec = MergeSpec(base=layout.base, sources=[Source(layout.finetuned("de-DE"), "de-DE")], method="linear", params={},
                     output=tmp_path / "merged", progress=False, device="cpu")
    with pytest.raises(RuntimeError, match="card writer broken"):
        merge(spec)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(layout.base)
    with pytest.raises(RuntimeError, match="card writer broken"):
        export_hf(model, AutoTokenizer.from_pretrained(layout.base), tmp_path / "exported", kind="base", backbone="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def push_env(tmp_path: Path, **extra: str) -> dict:
    """No stored token anywhere (an empty HF_HOME) and none in the environment, unless ``extra`` gives one."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")}
    return {**env, "HF_HOME": str(tmp_path / "hf-home"), **extra}


def test_push_without_a_token_or_offline_is_a_clear_error(judged, tmp_path):
    _, _, out = judged
    before = (out / "README.md").read_bytes()
    proc = subprocess.run([*CLI, "push", "--folder", str(out), "--repo_id", "someone/sw-KE-ties"], capture_output=True,
                          text=True, env=push_env(tmp_path, HF_HUB_OFFLINE="0"), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no Hugging Face token" in proc.stderr and "hf auth login" in proc.stderr and "HF_TOKEN" in proc.stderr
    proc = subprocess.run([*CLI, "push", "--folder", str(out), "--repo_id", "someone/sw-KE-ties"], capture_output=True,
                          text=True, env=push_env(tmp_path, HF_TOKEN="hf_unused", HF_HUB_OFFLINE="1"), timeout=120)
    assert proc.returncode == 2 and "HF_HUB_OFFLINE=1" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*CLI, "push", "--folder", str(out.parent), "--repo_id", "someone/x"], capture_output=True,
                          text=True, env=push_env(tmp_path, HF_TOKEN="hf_unused"), timeout=120)
    assert proc.returncode == 2 and "is not a finished model folder" in proc.stderr
    assert (out / "README.md").read_bytes() == before  # a refused push changes nothing


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") == "1", reason="needs the Hugging Face hub (HF_HUB_OFFLINE=1)")
def test_push_uploads_the_folder_with_its_card(judged):
    from huggingface_hub import HfApi, ModelCard, get_token

    if get_token() is None:
        pytest.skip("needs a Hugging Face token with write access (hf auth login or HF_TOKEN)")
    _, _, out = judged
    api = HfApi()
    repo_id = f"{api.whoami()['name']}/merginguriel-push-test-{uuid.uuid4().hex[:8]}"
    try:
        assert run("push", ["--folder", str(out), "--repo_id", repo_id, "--private", "true"]) == 0
        files = set(api.list_repo_files(repo_id))
        assert {"README.md", "manifest.json", "config.json", "model.safetensors"} <= files
        card = ModelCard.load(repo_id)
        assert card.data.to_dict() == front_matter(out / "README.md")
        assert f'model="{repo_id}"' in card.text
    finally:
        api.delete_repo(repo_id, missing_ok=True)


def test_the_hub_library_parses_every_card(judged):
    """Every card the flow writes (the shared base, each fine-tune, the merge) is read by huggingface_hub as written."""
    from huggingface_hub import ModelCard

    _, _, out = judged
    kinds = set()
    for card in sorted(out.parent.rglob("README.md")):
        meta = front_matter(card)
        assert ModelCard.load(card).data.to_dict() == meta, card
        kinds.add(json.loads((card.parent / "manifest.json").read_text())["kind"])
        if "base_model_relation" in meta:  # the hub refuses a relation without the models it relates to
            assert meta["base_model_relation"] == "merge" and meta["base_model"]
    assert kinds == {"base", "finetuned", "merged"}
    assert "Merged models not on the hub (so not in `base_model`): `de-DE`, `fr-FR`" in (out / "README.md").read_text()
