"""NeuroMerging's two modes, each against a transcription of the authors' code for that mode
(tests/neuromerging_reference.py: no weights, no guards, the SVD itself), tensor by tensor, for any λ."""

from __future__ import annotations

import pytest
import torch

import merge_refs as ref
import neuromerging_reference as nm
from merginguriel.errors import InputError
from merginguriel.merging import MergeSpec, Source, merge

LOCALES = ["de-DE", "fr-FR", "sw-KE"]
TOLERANCE = 3e-7


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A tiny family whose base has no all-zero row (the reference divides by a row's norm; XLM-R's padding rows of
    the embeddings are zero at initialisation, so they get small values here)."""
    from transformers import XLMRobertaForSequenceClassification

    from conftest import make_finetuned, tiny_config, tiny_tokenizer
    from merginguriel.checkpoints import Layout
    from merginguriel.models.export import export_hf

    root = tmp_path_factory.mktemp("neuro")
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(tiny_config())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                zero = p.abs().sum(dim=1) == 0
                p[zero] = torch.randn(int(zero.sum()), p.shape[1], generator=gen) * 0.02
    layout = Layout(root, "tiny")
    export_hf(model, tiny_tokenizer(), layout.base, kind="base", backbone="tiny", seed=0)
    for i, loc in enumerate(LOCALES):
        make_finetuned(root, loc, seed=100 + i)
    base = ref.load(layout.base)
    assert all(bool((t.abs().sum(dim=1) > 0).all()) for t in base.values() if t.dim() == 2)
    return layout, base, [ref.load(layout.finetuned(loc)) for loc in LOCALES]


def _merge(layout, tmp_path, params: dict, memory_mb: float) -> dict:
    out = tmp_path / f"nm-{len(list(tmp_path.iterdir()))}"
    merge(MergeSpec(layout.base, [Source(layout.finetuned(loc), loc, 1.0) for loc in LOCALES], "neuromerging", params, out,
                    memory_mb=memory_mb, progress=False, device="cpu"))
    return ref.load(out)


def max_diff(got: dict, want: dict) -> dict[str, float]:
    assert set(got) == set(want)
    return {n: float((got[n].double() - want[n].double()).abs().max()) for n in want}


WHOLE, TINY_BLOCKS = 384.0, 0.02  # every tensor whole; every tensor larger than ~440 floats split into row blocks
MODES = [
    ("lite", 0.0, 1.0, 0.8, WHOLE), ("lite", 0.0, 0.6, 0.8, WHOLE), ("lite", 0.0, 1.7, 0.5, TINY_BLOCKS),
    ("full", 0.0, 1.0, 0.8, WHOLE), ("full", 0.5, 1.0, 0.8, TINY_BLOCKS), ("full", 1.0, 1.0, 0.6, WHOLE),
    ("full", 1.3, 0.4, 0.8, WHOLE), ("full", -0.5, 2.0, 0.5, TINY_BLOCKS),
]


@pytest.mark.parametrize("mode,lambda_1,lambda_2,mask_rate,memory_mb", MODES)
def test_each_mode_equals_the_reference_mode_on_every_tensor(family, tmp_path, memory_mb, mode, lambda_1, lambda_2, mask_rate):
    layout, base, models = family
    params = {"mode": mode, "lambda_2": lambda_2, "mask_rate": mask_rate, **({"lambda_1": lambda_1} if mode == "full" else {})}
    got = _merge(layout, tmp_path, params, memory_mb)
    diffs = max_diff(got, nm.neuromerging(base, models, mode, lam=lambda_2, lam1=lambda_1, mask_rate=mask_rate))
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= TOLERANCE, f"{worst}: {diffs[worst]:.3g}"


def test_the_default_is_lite_and_the_modes_differ_where_the_reference_says(family, tmp_path):
    """With the authors' scripts' λ_1 = 0, Full gives every 1-D tensor half of Lite's merge and equals Lite on neuron
    rows; with λ_1 = λ_2 the 1-D tensors agree and the neuron rows differ by λ_1·parallel."""
    layout, base, models = family
    default = _merge(layout, tmp_path, {}, 384.0)
    lite = nm.neuromerging(base, models, "lite")
    assert max(max_diff(default, lite).values()) <= TOLERANCE
    full0 = _merge(layout, tmp_path, {"mode": "full", "lambda_1": 0.0}, 384.0)
    for n in base:
        if base[n].dim() == 2:
            torch.testing.assert_close(full0[n], default[n], atol=TOLERANCE, rtol=0)
        else:
            torch.testing.assert_close(full0[n] - base[n], (default[n] - base[n]) / 2, atol=TOLERANCE, rtol=0)
    full1 = _merge(layout, tmp_path, {"mode": "full", "lambda_1": 1.0}, 384.0)
    one_d = [n for n in base if base[n].dim() == 1]
    two_d = [n for n in base if base[n].dim() == 2]
    assert all(torch.allclose(full1[n], default[n], atol=TOLERANCE) for n in one_d)
    assert all(not torch.allclose(full1[n], default[n], atol=1e-5) for n in two_d)


def test_lite_refuses_lambda_1_and_research_log_refuses_a_mode(family, tmp_path):
    layout, _, _ = family
    with pytest.raises(InputError, match="mode lite drops the parallel part.*mode full"):
        _merge(layout, tmp_path, {"lambda_1": 0.5}, 384.0)
    with pytest.raises(InputError, match="research_log has one form: drop mode"):
        _merge(layout, tmp_path, {"variant": "research_log", "mode": "full"}, 384.0)
