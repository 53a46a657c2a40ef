"""Today's task-vector method names are presets of one composed family (sparsification, sign consensus, combination,
scaling): every preset gives, bit for bit, what the method gave before it became a preset (tests/legacy_merges.py, a
frozen transcription of that code), across its parameters."""

from __future__ import annotations

import pytest
import torch

from conftest import make_family
from legacy_merges import legacy_merge
from merginguriel.io import read_manifest
from merginguriel.merging import MergeSpec, Source, merge

LOCALES = ["de-DE", "fr-FR", "sw-KE"]
WHOLE_MB = 384.0  # no tensor of the tiny family is split into row blocks: the transcription works on whole tensors

CASES = [
    ("task_arithmetic", {}),
    ("task_arithmetic", {"weighted": False}),
    ("task_arithmetic", {"lam": 0.7}),
    ("task_arithmetic", {"weighted": False, "lam": 0.45}),
    ("dare_task_arithmetic", {}),
    ("dare_task_arithmetic", {"p": 0.5}),
    ("dare_task_arithmetic", {"p": 0.7, "rescale": False, "lam": 0.6}),
    ("dare_task_arithmetic", {"p": 0.4, "weighted": False}),
    ("dare_linear", {"p": 0.5}),
    ("dare_linear", {"p": 0.6, "normalise": False}),
    ("dare_linear", {"p": 0.3, "weighting": "average"}),
    ("ties", {}),
    ("ties", {"scope": "tensor"}),
    ("ties", {"merge": "dis-sum"}),
    ("ties", {"density": 0.3, "scope": "tensor", "rounding": "ceil"}),
    ("ties", {"density": 0.5, "rounding": "floor", "lam": 0.8}),
    ("ties", {"density": 1.0, "merge": "dis-sum", "lam": 0.5}),
    ("dare_ties", {}),
    ("dare_ties", {"density": 0.5, "p": 0.7}),
    ("dare_ties", {"density": 0.4, "scope": "tensor", "p": 0.5}),
    ("dare_ties", {"merge": "dis-sum", "p": 0.5, "rescale": False}),
    ("breadcrumbs", {}),
    ("breadcrumbs", {"density": 0.8, "gamma": 0.05, "lam": 0.9}),
    ("breadcrumbs", {"density": 0.7, "gamma": 0.1, "rounding": "floor"}),
    ("breadcrumbs", {"weighted": False, "lam": 0.4, "gamma": 0.0}),
]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("presets"), LOCALES)


@pytest.mark.parametrize("weights", [[0.5, 0.3, 0.2], [2.0, 1.0, 1.0]], ids=["normalised", "raw"])
@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_every_preset_equals_the_method_it_was_bit_for_bit(family, tmp_path, method, params, weights):
    folders = [family.finetuned(loc) for loc in LOCALES]
    out = tmp_path / "out"
    merge(MergeSpec(family.base, [Source(f, loc, w) for f, loc, w in zip(folders, LOCALES, weights)], method, dict(params),
                    out, memory_mb=WHOLE_MB, progress=False, device="cpu"))
    from safetensors.torch import load_file

    got = load_file(str(out / "model.safetensors"))
    want = legacy_merge(family.base, folders, weights, method, params, [read_manifest(f)["hash"] for f in folders])
    assert set(got) == set(want)
    differ = [n for n in want if not torch.equal(got[n], want[n])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[0]}: max {float((got[differ[0]] - want[differ[0]]).abs().max())}"
