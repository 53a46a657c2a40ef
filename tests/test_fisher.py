"""Fisher merging: the diagonal Fisher against a naive per-example reference, the merge against the formula, statistics
cached per locale and reused, and bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import one_thread, WORLD_SOURCES as SOURCES, WORLD_TARGET as TARGET, load_state, make_world
from merginguriel.errors import InputError
from merginguriel.merging import MergeContext, merge
from merginguriel.statistics import COMPUTE_CALLS
from merginguriel.statistics.fisher import fisher_diagonal

_one_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("fisher"), scale=0.1)


def _naive_fisher(model, rows):
    """Mean over examples of the squared gradient of log p(argmax | x), one plain forward/backward per example."""
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    for row in rows:
        ids = torch.tensor([row])
        logp = torch.log_softmax(model(input_ids=ids).logits, -1)[0]
        grads = torch.autograd.grad(logp[logp.argmax()], list(params.values()), allow_unused=True)
        for (n, _), g in zip(params.items(), grads):
            if g is not None:
                acc[n] += g.square()
    return {n: a / len(rows) for n, a in acc.items()}


def test_fisher_matches_per_example_reference(world):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(world.layout.finetuned(SOURCES[0])).eval()
    gen = torch.Generator().manual_seed(0)
    # Rows with repeated tokens, so embedding rows get gradients from several positions.
    rows = [[0, *torch.randint(3, 200, (n,), generator=gen).tolist(), 7, 7, 2] for n in (3, 8, 1, 12, 5)]
    got = fisher_diagonal(model, rows, label="argmax")
    ref = _naive_fisher(model, rows)
    assert set(got) == set(ref)
    for name, r in ref.items():
        torch.testing.assert_close(got[name], r, atol=1e-9, rtol=1e-4, msg=name)
    emb = "roberta.embeddings.word_embeddings.weight"
    unused = sorted(set(range(got[emb].shape[0])) - {t for r in rows for t in r})
    assert got[emb][7].sum() > 0 and torch.count_nonzero(got[emb][unused]) == 0
    # Sampled labels: seeded, so reproducible; a different seed gives other labels and another estimate.
    a = fisher_diagonal(model, rows, label="sample", seed=1)
    b = fisher_diagonal(model, rows, label="sample", seed=1)
    assert all(torch.equal(a[n], b[n]) for n in a)


def merged_with_statistics(world, spec):
    """A library merge of a method that needs statistics: computed (or found in the cache) under the world's layout."""
    out = merge(spec, MergeContext(data=world.data, layout=world.layout))
    kind = spec.method
    return out, [Path(f) for f in json.loads((out / "manifest.json").read_text())["statistics"][kind]]


def test_fisher_merge_is_the_formula_and_statistics_are_reused(world):
    params = {"examples": 10, "label": "argmax", "data": "both"}
    spec = world.spec("fisher1", method="fisher", params=params, weights=[0.5, 0.3, 0.2])
    before = COMPUTE_CALLS.copy()
    out, folders = merged_with_statistics(world, spec)
    assert [COMPUTE_CALLS[("fisher", s)] - before[("fisher", s)] for s in SOURCES] == [1, 1, 1]
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["settings"]["data_locales"] == [TARGET, SOURCES[0]] and manifest["examples_used"] == 10
    # Reference: Σ c_i max(F_i, eps) θ_i / Σ c_i max(F_i, eps) from the saved files.
    fishers = [load_state(f) for f in folders]
    models = [load_state(world.layout.finetuned(s)) for s in SOURCES]
    merged = load_state(out)
    c = [0.5, 0.3, 0.2]
    for name in merged:
        num = sum(ci * f[name].clamp_min(1e-6) * m[name] for ci, f, m in zip(c, fishers, models))
        den = sum(ci * f[name].clamp_min(1e-6) for ci, f in zip(c, fishers))
        torch.testing.assert_close(merged[name], num / den, atol=1e-6, rtol=1e-5, msg=name)
    # The merge differs from the plain weighted average (the Fisher actually weighs).
    name = "roberta.encoder.layer.0.attention.self.query.weight"
    avg = sum(ci * m[name] for ci, m in zip(c, models))
    assert not torch.allclose(merged[name], avg, atol=1e-4)
    # A second merge with the same settings reads the cache: no recomputation, files untouched.
    mtimes = [(f / "statistics.safetensors").stat().st_mtime_ns for f in folders]
    again, again_folders = merged_with_statistics(world, world.spec("fisher2", method="fisher", params=params, weights=[0.5, 0.3, 0.2]))
    assert [COMPUTE_CALLS[("fisher", s)] - before[("fisher", s)] for s in SOURCES] == [1, 1, 1]
    assert again_folders == folders
    assert [(f / "statistics.safetensors").stat().st_mtime_ns for f in folders] == mtimes
    torch.testing.assert_close(load_state(again), merged)
    # Other settings (more examples) are another cache entry.
    _, other = merged_with_statistics(world, world.spec("fisher3", method="fisher", params={**params, "examples": 6}))
    assert other[0] != folders[0]


def test_fisher_bad_input(world, tmp_path):
    with pytest.raises(InputError, match="need --target"):
        merged_with_statistics(world, world.spec("f", method="fisher", target=None))
    with pytest.raises(InputError, match="split"):
        merged_with_statistics(world, world.spec("f", method="fisher", params={"split": "test"}))
    empty = make_world(tmp_path / "e", sizes={"train": 4, "dev": 0, "test": 2})
    with pytest.raises(InputError, match=r"sw-KE has no validation rows \(partition .dev.\) in .*sw-KE.jsonl"):
        merged_with_statistics(empty, empty.spec("f", method="fisher", params={"examples": 4}))
    assert not (empty.root / "tiny" / "statistics").exists()
    assert not world.layout.merged(TARGET, "f").exists()
