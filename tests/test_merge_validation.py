"""Bad input is refused before anything lands: every case raises InputError naming the problem and the fix, and
the output folder (and any temporary sibling) is absent afterwards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merginguriel.checkpoints import Layout
from merginguriel.errors import InputError
from merginguriel.merging import MergeSpec, Source, merge
from conftest import make_base, make_family, make_finetuned

LOCALES = ["de-DE", "fr-FR", "sw-KE"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    return make_family(root, LOCALES)


def srcs(layout, locales=("de-DE", "fr-FR"), weights=None):
    weights = weights or [1.0] * len(locales)
    return [Source(layout.finetuned(loc), loc, w) for loc, w in zip(locales, weights)]


def refused(spec: MergeSpec, match: str) -> None:
    with pytest.raises(InputError, match=match):
        merge(spec)
    assert not spec.output.exists()
    assert not list(spec.output.parent.glob(f".{spec.output.name}.tmp-*"))


def copy_outside(layout, locale: str, dest: Path) -> Path:
    """A copy of a fine-tune without its manifest: an outside checkpoint, checked by architecture instead of base hash."""
    shutil.copytree(layout.finetuned(locale), dest)
    (dest / "manifest.json").unlink()
    return dest


def test_outside_checkpoint_with_matching_architecture_is_accepted(family, tmp_path):
    outside = copy_outside(family, "fr-FR", tmp_path / "outside")
    out = merge(MergeSpec(family.base, [Source(family.finetuned("de-DE"), "de-DE"), Source(outside, None)], "linear", {},
                          tmp_path / "m", progress=False))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["origin"] for s in manifest["sources"]] == ["finetuned", "outside"]


def test_source_from_another_base_is_refused(family, tmp_path):
    other = make_family(tmp_path / "other", ["it-IT"], seed=5)
    spec = MergeSpec(family.base, [*srcs(family), Source(other.finetuned("it-IT"), "it-IT")], "linear", {}, tmp_path / "m")
    refused(spec, "fine-tuned from base .* not from")


@pytest.mark.parametrize("config, problem", [({"hidden": 48}, "shape"), ({"vocab_size": 300}, "vocabulary")])
def test_outside_checkpoint_of_another_architecture_is_refused(family, tmp_path, config, problem):
    other = make_base(tmp_path / "other", seed=0, **config).parent.parent
    make_finetuned(other, "it-IT")
    outside = copy_outside(Layout(other, "tiny"), "it-IT", tmp_path / "outside")
    refused(MergeSpec(family.base, [*srcs(family), Source(outside, "it-IT")], "linear", {}, tmp_path / "m"), problem)


def test_different_tensor_names_are_refused(family, tmp_path):
    outside = copy_outside(family, "fr-FR", tmp_path / "renamed")
    state = load_file(str(outside / "model.safetensors"))
    state["extra.weight"] = state.pop("classifier.out_proj.bias")
    save_file(state, str(outside / "model.safetensors"))
    refused(MergeSpec(family.base, [Source(outside, None)], "linear", {}, tmp_path / "m"), "different architecture")


def test_label_order_mismatch_is_refused(family, tmp_path):
    outside = copy_outside(family, "fr-FR", tmp_path / "labels")
    cfg = json.loads((outside / "config.json").read_text())
    cfg["id2label"]["0"], cfg["id2label"]["1"] = cfg["id2label"]["1"], cfg["id2label"]["0"]
    (outside / "config.json").write_text(json.dumps(cfg))
    refused(MergeSpec(family.base, [Source(outside, None)], "linear", {}, tmp_path / "m"), "label order")


def test_missing_weights_are_refused(family, tmp_path):
    broken = copy_outside(family, "fr-FR", tmp_path / "noweights")
    (broken / "model.safetensors").unlink()
    refused(MergeSpec(family.base, [Source(broken, None)], "linear", {}, tmp_path / "m"), "no .safetensors")
    refused(MergeSpec(family.base, [Source(tmp_path / "nowhere", None)], "linear", {}, tmp_path / "m"), "does not exist")


def test_truncated_weights_are_refused(family, tmp_path):
    broken = tmp_path / "truncated"
    shutil.copytree(family.finetuned("fr-FR"), broken)
    f = broken / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    refused(MergeSpec(family.base, [Source(broken, "fr-FR")], "linear", {}, tmp_path / "m"), "truncated")
    f.write_bytes(data[:5])
    refused(MergeSpec(family.base, [Source(broken, "fr-FR")], "linear", {}, tmp_path / "m"), "corrupt or truncated")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_a_source_is_refused_mid_stream_and_nothing_lands(family, tmp_path, bad):
    broken = tmp_path / "nan"
    shutil.copytree(family.finetuned("fr-FR"), broken)
    state = load_file(str(broken / "model.safetensors"))
    # the last tensor of the file, so earlier blocks were already merged and written when it is found
    last = max(state, key=lambda n: n)
    state[last].view(-1)[-1] = bad
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    spec = MergeSpec(family.base, [Source(family.finetuned("de-DE"), "de-DE"), Source(broken, "fr-FR")], "ties", {},
                     tmp_path / "m", memory_mb=0.004, progress=False)
    refused(spec, "NaN/inf")


def test_duplicate_sources_are_refused(family, tmp_path):
    a = family.finetuned("de-DE")
    refused(MergeSpec(family.base, [Source(a, "de-DE"), Source(a, "de-DE")], "linear", {}, tmp_path / "m"), "given twice")
    twin = copy_outside(family, "de-DE", tmp_path / "twin")
    refused(MergeSpec(family.base, [Source(a, "de-DE"), Source(twin, None)], "linear", {}, tmp_path / "m"), "identical weights")


def test_inctar_without_the_target_model_is_refused(family, tmp_path):
    spec = MergeSpec(family.base, srcs(family), "linear", {}, tmp_path / "m", target="sw-KE", include_target=True)
    refused(spec, "IncTar")
    spec = MergeSpec(family.base, srcs(family, ("de-DE", "sw-KE")), "linear", {}, tmp_path / "m", target="sw-KE", include_target=False)
    refused(spec, "ExcTar")


@pytest.mark.parametrize("weights,match", [([1.0, -0.5], "weights must be finite and >= 0"), ([0.0, 0.0], "sum to zero"),
                                           ([float("nan"), 1.0], "finite")])
def test_bad_weights_are_refused(family, tmp_path, weights, match):
    refused(MergeSpec(family.base, srcs(family, weights=weights), "linear", {}, tmp_path / "m"), match)


@pytest.mark.parametrize("method,params,match", [
    ("ties", {"density": 0.0}, r"density=0.0 is outside \(0, 1\]"),
    ("ties", {"density": 1.5}, r"outside \(0, 1\]"),
    ("breadcrumbs", {"density": 0.995, "gamma": 0.01}, "exceed 1"),
    ("dare_linear", {"p": 1.0}, r"in \[0, 1\)"),
    ("ties", {"k": 20}, "has no parameter"),
    ("ties", {"scope": "layer"}, "is not one of"),
    ("ties", {"density": "lots"}, "not a valid float"),
    ("slerp", {"t": 0.5}, "exactly two sources"),
    ("nonsense", {}, "unknown merge method"),
])
def test_bad_methods_and_parameters_are_refused(family, tmp_path, method, params, match):
    locales = ("de-DE", "fr-FR", "sw-KE") if method == "slerp" else ("de-DE", "fr-FR")
    refused(MergeSpec(family.base, srcs(family, locales), method, params, tmp_path / "m"), match)


def test_bad_exclude_patterns_are_refused(family, tmp_path):
    refused(MergeSpec(family.base, srcs(family), "linear", {}, tmp_path / "m", exclude=["*nothing_like_this*"]), "matches no tensor")
    refused(MergeSpec(family.base, srcs(family), "linear", {}, tmp_path / "m", exclude=["re:(unclosed"]), "not a valid regular")
    refused(MergeSpec(family.base, srcs(family), "linear", {}, tmp_path / "m", exclude=["*"]), "leave no tensor")


def test_existing_output_is_kept_without_overwrite(family, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        merge(MergeSpec(family.base, srcs(family), "linear", {}, out))
    assert (out / "keep.txt").read_text() == "mine"
    merge(MergeSpec(family.base, srcs(family), "linear", {}, out, overwrite=True, progress=False))
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_no_sources_and_bad_dtype_are_refused(family, tmp_path):
    refused(MergeSpec(family.base, [], "linear", {}, tmp_path / "m"), "no sources")
    refused(MergeSpec(family.base, srcs(family), "linear", {}, tmp_path / "m", dtype="int8"), "unknown output dtype")


def test_nan_in_base_is_refused(family, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(family.base, base)
    state = load_file(str(base / "model.safetensors"))
    state["classifier.dense.bias"][0] = float("nan")
    save_file(state, str(base / "model.safetensors"), metadata={"format": "pt"})
    outside = [Source(copy_outside(family, "de-DE", tmp_path / "o1"), None)]
    # (linear never reads the base's merged tensors, so a method that uses the base)
    refused(MergeSpec(base, outside, "task_arithmetic", {}, tmp_path / "m", progress=False), "NaN/inf")
    assert torch.isnan(state["classifier.dense.bias"][0])
