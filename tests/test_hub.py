"""Models named by hub id: a merge source or a backbone given as ``namespace/name`` resolves through huggingface_hub
into the standard HF cache. Offline, a cached id works and an uncached one is a clear error. The cache is a real one,
laid out by the hub library's own naming and linking (conftest.cache_hub_model) and read back by its own scanner."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import merge_refs as ref
from conftest import cache_hub_model, make_family, make_finetuned

from merginguriel.cli.main import run
from merginguriel.errors import InputError

CLI = [sys.executable, "-m", "merginguriel.cli.main"]
HUB_SOURCE = "someorg/tiny-de"
HUB_BASE = "someorg/tiny-base"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny family (de-DE, fr-FR, sw-KE) and a hub cache holding de-DE's fine-tune and the base under hub ids."""
    root = tmp_path_factory.mktemp("hub")
    layout = make_family(root / "ckpt", ["de-DE", "fr-FR", "sw-KE"])
    cache = root / "hf-cache"
    cache_hub_model(cache, HUB_SOURCE, layout.finetuned("de-DE"))
    cache_hub_model(cache, HUB_BASE, layout.base)
    return root, layout, cache


def cli(args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def front_matter(card: Path) -> dict:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_the_cache_is_laid_out_as_the_hub_library_lays_it_out(world):
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    _, layout, cache = world
    repos = {r.repo_id: r for r in scan_cache_dir(cache).repos}
    assert set(repos) == {HUB_SOURCE, HUB_BASE} and not scan_cache_dir(cache).warnings
    (revision,) = repos[HUB_SOURCE].revisions
    assert revision.refs == {"main"}
    assert {f.file_name for f in revision.files} == {p.name for p in layout.finetuned("de-DE").iterdir()} - {"manifest.json", "README.md"}
    found = try_to_load_from_cache(HUB_SOURCE, "model.safetensors", cache_dir=cache)
    assert Path(found).read_bytes() == (layout.finetuned("de-DE") / "model.safetensors").read_bytes()


def test_a_cached_hub_source_merges_offline_like_its_local_twin(world):
    root, layout, cache = world
    out = root / "from-hub"
    args = ["merge", "--root", str(layout.root), "--backbone", layout.backbone, "--target", "sw-KE", "--progress", "false",
            "--evaluate.splits", "[]", "--merge.method", "task_arithmetic", "--merge.params.lam", "0.8"]
    res = cli([*args, "--selection.sources", HUB_SOURCE, "fr-FR", "--output", str(out)], cache, root)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"source {HUB_SOURCE}" in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    snapshot = Path(manifest["sources"][0]["path"])
    assert snapshot.parent.parent == cache / "models--someorg--tiny-de" and snapshot.parent.name == "snapshots"
    assert manifest["sources"][0]["origin"] == "outside"  # no manifest came with it: checked as an outside checkpoint
    assert manifest["selection"]["sources"] == [HUB_SOURCE, "fr-FR"]
    # the same merge as with de-DE's local folder, tensor for tensor
    want = ref.task_arithmetic(ref.load(layout.base), [ref.load(layout.finetuned(l)) for l in ("de-DE", "fr-FR")], [0.5, 0.5], 0.8)
    got = ref.load(out)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, atol=2e-6, rtol=1e-5)
    card = (out / "README.md").read_text()
    assert f"| {HUB_SOURCE} | 0.5000 |" in card
    # the hub's convention for a merge: the merged hub models are its base_model, the local one is named in the body
    from huggingface_hub import ModelCard

    meta = front_matter(out / "README.md")
    assert meta["base_model"] == [HUB_SOURCE] and meta["base_model_relation"] == "merge"
    assert ModelCard.load(out / "README.md").data.to_dict() == meta
    assert "Merged models not on the hub (so not in `base_model`): `fr-FR`" in card
    assert f"Merged hub models (`base_model`): `{HUB_SOURCE}`" in card


def test_a_hub_id_as_merge_base(world):
    """--merge.base someorg/tiny-base: the base comes from the hub cache, and the sources fine-tuned from the same
    weights are recognised as fine-tunes of it (the hashes agree)."""
    root, layout, cache = world
    out = root / "hub-base"
    res = cli(["merge", "--root", str(layout.root), "--backbone", layout.backbone, "--progress", "false", "--evaluate.splits",
               "[]", "--merge.method", "task_arithmetic", "--merge.base", HUB_BASE, "--selection.sources", "de-DE", "fr-FR",
               "--output", str(out)], cache, root)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert Path(manifest["base"]["path"]).parent.parent == cache / "models--someorg--tiny-base"
    assert [s["origin"] for s in manifest["sources"]] == ["finetuned", "finetuned"]
    want = ref.task_arithmetic(ref.load(layout.base), [ref.load(layout.finetuned(l)) for l in ("de-DE", "fr-FR")], [0.5, 0.5], 1.0)
    got = ref.load(out)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, atol=2e-6, rtol=1e-5)


def test_an_uncached_hub_source_offline_is_a_clear_error(world):
    root, layout, cache = world
    out = root / "never"
    res = cli(["merge", "--root", str(layout.root), "--backbone", layout.backbone, "--target", "sw-KE",
               "--evaluate.splits", "[]", "--merge.method", "average", "--selection.sources", "someorg/not-cached", "fr-FR",
               "--output", str(out)], cache, root)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "'someorg/not-cached'" in res.stderr and "HF_HUB_OFFLINE=1" in res.stderr
    assert "hf download someorg/not-cached" in res.stderr and str(cache) in res.stderr
    assert not out.exists()


def test_a_name_that_is_no_locale_folder_or_hub_id(world):
    _, layout, _ = world
    for bad in ("de-DEE", "a/b/c"):
        with pytest.raises(InputError, match=f"source '{bad}' is neither a MASSIVE locale, a checkpoint folder nor a hub model id"):
            run("merge", ["--root", str(layout.root), "--backbone", layout.backbone, "--target", "sw-KE",
                          "--evaluate.splits", "[]", "--merge.method", "average", "--selection.sources", bad, "fr-FR"])


def test_a_backbone_by_hub_id_from_the_cache_offline(world):
    root, layout, cache = world
    res = cli(["base", "--backbone", HUB_BASE, "--root", str(root / "r1"), "--seed", "3"], cache, root)
    assert res.returncode == 0, res.stderr[-3000:]
    base = root / "r1" / "someorg--tiny-base" / "base"
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["backbone"] == HUB_BASE
    got, want = ref.load(base), ref.load(layout.base)
    assert got.keys() == want.keys()
    for name in want:  # the cached weights, head included (it already had the 60 intents)
        torch.testing.assert_close(got[name], want[name])
    meta = front_matter(base / "README.md")
    assert meta["base_model"] == HUB_BASE and meta["library_name"] == "transformers"
    # fine-tunes of that base name the hub backbone as their base_model; their merge lists its merged hub models
    # (none here: both are local), so it has no base_model and names its sources in the body
    for i, loc in enumerate(("de-DE", "fr-FR")):
        make_finetuned(root / "r1", loc, "someorg--tiny-base", seed=7 + i)
    assert front_matter(base.parent / "finetuned" / "de-DE" / "README.md")["base_model"] == HUB_BASE
    assert run("merge", ["--root", str(root / "r1"), "--backbone", HUB_BASE, "--target", "sw-KE", "--evaluate.splits", "[]",
                         "--merge.method", "average", "--selection.sources", "de-DE", "fr-FR", "--progress", "false",
                         "--output", str(root / "r1" / "merged")]) == 0
    merged = front_matter(root / "r1" / "merged" / "README.md")
    assert "base_model" not in merged and "base_model_relation" not in merged
    assert "(so not in `base_model`): `de-DE`, `fr-FR`" in (root / "r1" / "merged" / "README.md").read_text()


def test_an_uncached_backbone_offline_is_a_clear_error(world):
    root, _, cache = world
    res = cli(["base", "--backbone", "someorg/nothing-here", "--root", str(root / "r2")], cache, root)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "'someorg/nothing-here'" in res.stderr and "HF_HUB_OFFLINE=1" in res.stderr
    assert "hf download someorg/nothing-here" in res.stderr
    assert not (root / "r2" / "someorg--nothing-here" / "base").exists()


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") == "1", reason="needs the Hugging Face hub (HF_HUB_OFFLINE=1)")
def test_a_hub_id_downloads_only_weights_config_and_tokenizer(tmp_path, monkeypatch):
    from huggingface_hub import constants, scan_cache_dir

    from merginguriel.models.hub import MODEL_FILES, resolve_hub_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    try:  # a small XLM-R repository; whether it has safetensors weights is up to its owners
        folder = resolve_hub_model("hf-internal-testing/tiny-xlm-roberta")
        assert str(folder).startswith(str(tmp_path)) and any(folder.glob("*.safetensors"))
    except InputError as err:
        assert "has no safetensors weights" in str(err)
    names = {f.file_name for repo in scan_cache_dir(tmp_path).repos for rev in repo.revisions for f in rev.files}
    assert "config.json" in names
    assert all(any(fnmatch.fnmatch(n, p) for p in MODEL_FILES) for n in names), names  # nothing else was fetched
