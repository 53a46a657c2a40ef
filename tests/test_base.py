"""The shared base: the backbone's encoder plus a 60-intent head fixed by a seed, saved once per backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config, tiny_tokenizer

from merginguriel.errors import InputError
from merginguriel.io import checkpoint_hash, read_manifest
from merginguriel.locales import INTENTS
from merginguriel.models.base import ensure_base


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A tiny masked-LM 'pretrained' backbone, as a hub model would be."""
    from transformers import XLMRobertaForMaskedLM

    folder = tmp_path_factory.mktemp("backbone") / "tiny-mlm"
    torch.manual_seed(3)
    XLMRobertaForMaskedLM(tiny_config()).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_base_is_encoder_plus_seeded_head(backbone: Path, tmp_path: Path) -> None:
    a = ensure_base(str(backbone), tmp_path / "a", seed=7)
    b = ensure_base(str(backbone), tmp_path / "b", seed=7)
    c = ensure_base(str(backbone), tmp_path / "c", seed=8)
    assert a == tmp_path / "a" / "tiny-mlm" / "base"
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    encoder = load_file(backbone / "model.safetensors")
    # Encoder weights are the backbone's, untouched.
    for name, t in encoder.items():
        if name.startswith("roberta.encoder"):
            torch.testing.assert_close(wa[name], t)
    # Same seed: the same head bit for bit; another seed: another head.
    assert torch.equal(wa["classifier.out_proj.weight"], wb["classifier.out_proj.weight"])
    assert not torch.equal(wa["classifier.out_proj.weight"], wc["classifier.out_proj.weight"])
    assert wa["classifier.out_proj.weight"].shape[0] == len(INTENTS)
    manifest = read_manifest(a)
    assert manifest["kind"] == "base" and manifest["seed"] == 7 and manifest["hash"] == checkpoint_hash(a)
    from transformers import AutoConfig

    assert [AutoConfig.from_pretrained(a).id2label[i] for i in range(60)] == list(INTENTS)


def test_base_is_made_once(backbone: Path, tmp_path: Path) -> None:
    a = ensure_base(str(backbone), tmp_path, seed=1)
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert ensure_base(str(backbone), tmp_path, seed=1) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(InputError, match="head seed 1, not 2"):
        ensure_base(str(backbone), tmp_path, seed=2)


def test_a_base_made_from_another_build_of_the_backbone_is_refused(backbone: Path, tmp_path: Path) -> None:
    """A backbone folder rebuilt (the embedded world after an upgrade) must not silently keep the old base, whose
    fine-tunes and merges belong to the old build."""
    import shutil

    from transformers import XLMRobertaForMaskedLM


    copy = tmp_path / "bb"
    shutil.copytree(backbone, copy)
    base = ensure_base(str(copy), tmp_path / "root", seed=1)
    assert read_manifest(base)["source_hash"]
    model = XLMRobertaForMaskedLM.from_pretrained(copy)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(copy)  # the backbone rebuilt with other weights
    with pytest.raises(InputError, match="another build"):
        ensure_base(str(copy), tmp_path / "root", seed=1)
