"""Compatibility: streamed task-vector cosine and linear CKA against direct in-memory computations; the weighting."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_class_release as write_release
from merginguriel.compatibility import (
    apply_compatibility,
    cka_matrix,
    compatibility_weights,
    linear_cka,
    task_vector_cosine,
)
from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError
from conftest import make_family

LOCALES = ["sw-KE", "th-TH", "vi-VN", "fi-FI"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    return make_family(root, LOCALES)


def _direct_cosine(base: Path, models: list[Path], skip=lambda name: False) -> torch.Tensor:
    """All task vectors flattened in memory, cosine by the textbook formula."""
    b = load_file(str(base / "model.safetensors"))
    vecs = []
    for m in models:
        sd = load_file(str(m / "model.safetensors"))
        vecs.append(torch.cat([(sd[k].double() - b[k].double()).flatten() for k in sorted(b) if b[k].is_floating_point() and not skip(k)]))
    v = torch.stack(vecs)
    return torch.nn.functional.cosine_similarity(v[:, None, :], v[None, :, :], dim=-1)


@pytest.mark.parametrize("block", [64, 1 << 22])  # row-sliced tensors and whole tensors give the same matrix
def test_task_vector_cosine_matches_direct(family, block):
    models = {loc: family.finetuned(loc) for loc in LOCALES}
    got = task_vector_cosine(family.base, models, block_elements=block)
    expected = _direct_cosine(family.base, list(models.values()))
    assert list(got.index) == LOCALES and list(got.columns) == LOCALES
    assert torch.allclose(torch.tensor(got.values), expected, atol=1e-10)
    assert torch.allclose(torch.tensor(got.values).diagonal(), torch.ones(len(LOCALES), dtype=torch.float64))


def test_task_vector_cosine_exclude(family):
    models = {loc: family.finetuned(loc) for loc in LOCALES[:3]}
    got = task_vector_cosine(family.base, models, exclude=["classifier.*"])
    expected = _direct_cosine(family.base, list(models.values()), skip=lambda k: k.startswith("classifier."))
    assert torch.allclose(torch.tensor(got.values), expected, atol=1e-10)


def test_task_vector_cosine_rejects_other_architecture(family, tmp_path):
    import shutil

    other = make_family(tmp_path, ["sw-KE"], hidden=16, intermediate=32)
    with pytest.raises(InputError, match="different base"):
        task_vector_cosine(family.base, {"a": family.finetuned("th-TH"), "b": other.finetuned("sw-KE")})
    # Without a manifest to compare, the tensor shapes still give it away.
    bare = tmp_path / "bare"
    shutil.copytree(other.finetuned("sw-KE"), bare)
    (bare / "manifest.json").unlink()
    with pytest.raises(InputError, match="shape"):
        task_vector_cosine(family.base, {"a": family.finetuned("th-TH"), "b": bare})


def _reference_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA through centred Gram matrices (HSIC form), an independent route to the same number."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = x.double() @ x.double().T, y.double() @ y.double().T
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)  # noqa: E731
    return float(hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l)))


def test_linear_cka_formula():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=gen)
    y = x @ torch.randn(8, 6, generator=gen) + 0.5 * torch.randn(50, 6, generator=gen)
    assert linear_cka(x, y) == pytest.approx(_reference_cka(x, y), abs=1e-10)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen))
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-10)  # invariant to rotation and scale


def test_cka_matrix_matches_direct(family, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data_dir = write_release(tmp_path / "data", ["sw-KE", "th-TH"], {"train": 5, "dev": 12, "test": 5})
    data = DataConfig(source="release", data_path=str(data_dir), root=str(tmp_path))
    models = {loc: family.finetuned(loc) for loc in LOCALES[:3]}
    got = cka_matrix(models, ["sw-KE", "th-TH"], split="validation", data=data, max_examples=20, batch_size=7)
    # Direct: the same 20 utterances (round-robin over the two locales' dev rows), one batch, HF tokenizer padding.
    import json

    rows = {loc: [json.loads(l) for l in (data_dir / "1.1" / "data" / f"{loc}.jsonl").read_text().splitlines()] for loc in ["sw-KE", "th-TH"]}
    dev = {loc: [r["utt"] for r in rs if r["partition"] == "dev"] for loc, rs in rows.items()}
    utts = [u for pair in zip(dev["sw-KE"], dev["th-TH"]) for u in pair][:20]
    tok = AutoTokenizer.from_pretrained(family.base)
    enc = tok(utts, return_tensors="pt", padding=True)
    states = []
    for path in models.values():
        m = AutoModelForSequenceClassification.from_pretrained(path).eval()
        with torch.no_grad():
            states.append(m(**enc, output_hidden_states=True).hidden_states[-1][:, 0])
    for i, a in enumerate(models):
        for j, b in enumerate(models):
            assert got.loc[a, b] == pytest.approx(_reference_cka(states[i], states[j]), abs=1e-5)


def test_compatibility_weights_by_hand():
    compat = pd.DataFrame(
        [[1.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.0]], index=["a", "b", "c"], columns=["a", "b", "c"]
    )
    got = compatibility_weights(["a", "b", "c"], [0.5, 0.3, 0.2], compat)
    raw = [0.5 * (0.5 + 0.1) / 2, 0.3 * (0.5 + 0.3) / 2, 0.2 * (0.1 + 0.3) / 2]
    assert got == pytest.approx([r / sum(raw) for r in raw])
    # Anti-aligned sources get no weight (floored at 0), never a negative one.
    neg = compat.copy()
    neg.loc["c", ["a", "b"]] = neg.loc[["a", "b"], "c"] = -0.4
    got = compatibility_weights(["a", "b", "c"], [0.5, 0.3, 0.2], neg)
    assert got[2] == 0.0 and sum(got) == pytest.approx(1.0)
    with pytest.raises(InputError, match="no entry for d"):
        compatibility_weights(["a", "d"], [0.5, 0.5], compat)


def test_apply_compatibility_on_a_selection_dataclass():
    from dataclasses import dataclass

    @dataclass
    class Sel:
        target: str
        sources: list
        weights: list
        weighting: str

    # three sources, c agreeing with neither a nor b: reweighting must move weight away from c
    compat = pd.DataFrame([[1.0, 0.8, 0.1], [0.8, 1.0, 0.2], [0.1, 0.2, 1.0]], index=list("abc"), columns=list("abc"))
    out = apply_compatibility(Sel("x", ["a", "b", "c"], [0.4, 0.3, 0.3], "scores"), compat)
    raw = [0.4 * 0.45, 0.3 * 0.5, 0.3 * 0.15]
    assert out.weights == pytest.approx([r / sum(raw) for r in raw]) and out.weighting == "similarity_x_compatibility"
    assert out.weights[2] < 0.15 < 0.3  # c lost most of its weight


def test_compatibility_cli(family, tmp_path, capsys):
    from merginguriel.cli.main import main

    out = tmp_path / "cos"
    assert main(["compatibility", "--backbone", "tiny", "--root", str(family.root), "--locales", "[sw-KE, th-TH, vi-VN]",
                 "--output", str(out)]) == 0
    frame = pd.read_csv(out / "matrix.csv", index_col=0)
    expected = _direct_cosine(family.base, [family.finetuned(l) for l in ["sw-KE", "th-TH", "vi-VN"]])
    assert torch.allclose(torch.tensor(frame.values), expected, atol=1e-5)
    assert (out / "manifest.json").is_file()
    # Bad input: an unknown locale fails early with exit status 2, nothing written.
    assert main(["compatibility", "--backbone", "tiny", "--root", str(family.root), "--locales", "[sw-KE, xx-XX]",
                 "--output", str(tmp_path / "bad")]) == 2
    assert "xx-XX" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_merge_cli_similarity_x_compatibility(family):
    """`merginguriel merge --weighting similarity_x_compatibility`: the manifest's weights are the URIEL score weights
    times each source's mean task-vector cosine with the others, renormalised."""
    import json

    from merginguriel.cli.main import run
    from merginguriel.similarity import select_for_target

    assert run("merge", ["--backbone", "tiny", "--root", str(family.root), "--target", "sw-KE", "--selection.similarity",
                         "uriel", "--selection.num_sources", "3", "--selection.weighting", "similarity_x_compatibility",
                         "--merge.method", "linear", "--run", "compat", "--evaluate.splits", "[]"]) == 0
    manifest = json.loads((family.merged("sw-KE", "compat") / "manifest.json").read_text())
    sel = select_for_target("sw-KE", "uriel", 3, False, "scores", family.finetuned_locales(), root=str(family.root))
    cos = _direct_cosine(family.base, [family.finetuned(s) for s in sel.sources])
    compat = pd.DataFrame(cos.numpy(), index=sel.sources, columns=sel.sources)
    expected = compatibility_weights(sel.sources, sel.weights, compat)
    assert max(abs(e - w) for e, w in zip(expected, sel.weights)) > 0.01  # the reweighting really moves the weights
    assert [s["locale"] for s in manifest["sources"]] == sel.sources
    assert [s["weight"] for s in manifest["sources"]] == pytest.approx(expected, abs=1e-6)
    assert manifest["selection"]["weighting"] == "similarity_x_compatibility"
