"""Every merge method against an independent in-memory reference (tests/merge_refs.py), with the default block size
and with tiny row blocks so that blocking, pre-passes and streamed thresholds are exercised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import merge_refs as ref
from merginguriel.merging import MergeSpec, Source, merge
from merginguriel.merging.dare_mask import keep_mask
from tiny import make_family

LOCALES = ["de-DE", "fr-FR", "sw-KE"]
WEIGHTS = [0.5, 0.3, 0.2]
TINY_BLOCKS_MB = 0.02  # about 440 floats per block (K=3): every tensor larger than that is split into row blocks


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    layout = make_family(root, LOCALES)
    base = ref.load(layout.base)
    models = [ref.load(layout.finetuned(loc)) for loc in LOCALES]
    return layout, base, models


def run(layout, tmp_path: Path, method: str, params: dict, memory_mb: float, weights=WEIGHTS, locales=LOCALES, **kw) -> dict:
    srcs = [Source(layout.finetuned(loc), loc, w) for loc, w in zip(locales, weights)]
    out = tmp_path / f"{method}-{memory_mb}-{len(list(tmp_path.iterdir()))}"
    merge(MergeSpec(layout.base, srcs, method, params, out, memory_mb=memory_mb, progress=False, **kw))
    return ref.load(out)


def assert_state_close(got: dict, want: dict, atol=2e-6, rtol=1e-5) -> None:
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name].float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


BLOCKS = pytest.mark.parametrize("memory_mb", [384.0, TINY_BLOCKS_MB], ids=["whole", "tiny-blocks"])


@BLOCKS
def test_linear_matches_weighted_sum(family, tmp_path, memory_mb):
    layout, base, models = family
    assert_state_close(run(layout, tmp_path, "linear", {}, memory_mb), ref.linear(base, models, WEIGHTS))
    blocks = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())["blocks"]
    assert (blocks["split_tensors"] >= 10) == (memory_mb == TINY_BLOCKS_MB)  # the tiny budget really splits tensors


def test_linear_average_ignores_given_weights_and_records_uniform(family, tmp_path):
    layout, base, models = family
    got = run(layout, tmp_path, "linear", {"weighting": "average"}, 384.0)
    assert_state_close(got, ref.linear(base, models, [1, 1, 1]))
    manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    assert [s["weight"] for s in manifest["sources"]] == pytest.approx([1 / 3] * 3)


def test_linear_without_normalising_uses_raw_weights(family, tmp_path):
    layout, base, models = family
    got = run(layout, tmp_path, "linear", {"normalise": False}, 384.0, weights=[0.5, 0.25, 0.5])
    want = {n: sum(w * m[n] for w, m in zip([0.5, 0.25, 0.5], models)) for n in base}
    assert_state_close(got, want)


@BLOCKS
@pytest.mark.parametrize("weighted,lam", [(True, 0.7), (False, 0.3)])
def test_task_arithmetic(family, tmp_path, memory_mb, weighted, lam):
    layout, base, models = family
    got = run(layout, tmp_path, "task_arithmetic", {"weighted": weighted, "lam": lam}, memory_mb)
    assert_state_close(got, ref.task_arithmetic(base, models, WEIGHTS, lam, weighted))


@BLOCKS
@pytest.mark.parametrize("scope,mode", [("global", "dis-mean"), ("tensor", "dis-mean"), ("global", "dis-sum"), ("tensor", "dis-sum")])
def test_ties(family, tmp_path, memory_mb, scope, mode):
    layout, base, models = family
    got = run(layout, tmp_path, "ties", {"density": 0.3, "scope": scope, "merge": mode}, memory_mb)
    lam = 1.0 if mode == "dis-mean" else 0.3
    assert_state_close(got, ref.ties(base, models, WEIGHTS, 0.3, scope, mode, lam))


def test_ties_global_differs_from_tensor_scope(family, tmp_path):
    layout, _, _ = family
    a = run(layout, tmp_path, "ties", {"density": 0.2, "scope": "global"}, 384.0)
    b = run(layout, tmp_path, "ties", {"density": 0.2, "scope": "tensor"}, 384.0)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def dare_taus(layout, base, models, p, seed=42, rescale=True):
    taus = []
    for loc, m in zip(LOCALES, models):
        t = {}
        for n in base:
            shape = tuple(base[n].shape)
            mask = keep_mask(seed, loc, n, shape, (0, shape[0] if shape else 1), p)
            t[n] = (m[n] - base[n]) * mask / ((1 - p) if rescale else 1.0)
        taus.append(t)
    return taus


@BLOCKS
def test_dare_linear_and_task_arithmetic(family, tmp_path, memory_mb):
    layout, base, models = family
    taus = dare_taus(layout, base, models, 0.5)
    got = run(layout, tmp_path, "dare_linear", {"p": 0.5}, memory_mb)
    assert_state_close(got, ref.task_arithmetic(base, models, WEIGHTS, 1.0, True, taus=taus))
    got = run(layout, tmp_path, "dare_task_arithmetic", {"p": 0.5, "lam": 0.6}, memory_mb)
    assert_state_close(got, ref.task_arithmetic(base, models, WEIGHTS, 0.6, True, taus=taus))


@BLOCKS
@pytest.mark.parametrize("density,scope", [(1.0, "global"), (0.5, "global"), (0.5, "tensor")])
def test_dare_ties(family, tmp_path, memory_mb, density, scope):
    layout, base, models = family
    taus = dare_taus(layout, base, models, 0.7)
    got = run(layout, tmp_path, "dare_ties", {"p": 0.7, "density": density, "scope": scope}, memory_mb)
    assert_state_close(got, ref.ties(base, models, WEIGHTS, density, scope, taus=taus))


def test_dare_mask_drops_at_rate_and_rescales(family, tmp_path):
    layout, base, models = family
    got = run(layout, tmp_path, "dare_task_arithmetic", {"p": 0.8, "weighted": False, "lam": 1.0}, 384.0,
              weights=[1.0], locales=["de-DE"])
    name = "roberta.embeddings.word_embeddings.weight"
    tau = models[0][name] - base[name]
    delta = got[name] - base[name]
    kept = delta != 0
    assert 0.17 < kept.float().mean().item() < 0.23
    torch.testing.assert_close(delta[kept], tau[kept] / 0.2, atol=1e-6, rtol=1e-5)


def test_dare_is_deterministic_under_a_seed_and_changes_with_it(family, tmp_path):
    layout, _, _ = family
    a = run(layout, tmp_path, "dare_ties", {"p": 0.9}, 384.0, seed=7)
    b = run(layout, tmp_path, "dare_ties", {"p": 0.9}, TINY_BLOCKS_MB, seed=7)
    c = run(layout, tmp_path, "dare_ties", {"p": 0.9}, 384.0, seed=8)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    seeds = {json.loads(p.read_text())["seed"] for p in tmp_path.glob("*/manifest.json")}
    assert seeds == {7, 8}


def test_dare_mask_is_independent_of_block_boundaries():
    shape = (3000, 700)  # > 2 chunks of the mask generator
    whole = keep_mask(3, "de-DE", "w", shape, (0, 3000), 0.9)
    parts = torch.cat([keep_mask(3, "de-DE", "w", shape, (a, min(3000, a + 457)), 0.9) for a in range(0, 3000, 457)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, keep_mask(3, "fr-FR", "w", shape, (0, 3000), 0.9))


@BLOCKS
def test_breadcrumbs(family, tmp_path, memory_mb):
    layout, base, models = family
    got = run(layout, tmp_path, "breadcrumbs", {"density": 0.8, "gamma": 0.05, "lam": 0.9}, memory_mb)
    assert_state_close(got, ref.breadcrumbs(base, models, WEIGHTS, 0.8, 0.05, 0.9))


@BLOCKS
@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_directional_consensus(family, tmp_path, memory_mb, alpha):
    layout, base, models = family
    got = run(layout, tmp_path, "directional_consensus", {"alpha": alpha, "lam": 0.8}, memory_mb)
    assert_state_close(got, ref.directional_consensus(base, models, WEIGHTS, alpha, 0.8))


@BLOCKS
@pytest.mark.parametrize("params", [{}, {"lambda_1": 0.5, "lambda_2": 1.2, "mask_rate": 0.3}])
def test_neuromerging(family, tmp_path, memory_mb, params):
    layout, base, models = family
    got = run(layout, tmp_path, "neuromerging", params, memory_mb)
    want = ref.neuromerging(base, models, WEIGHTS, params.get("mask_rate", 0.15), params.get("lambda_1", 0.0), params.get("lambda_2"))
    assert_state_close(got, want, atol=5e-6)


def test_neuromerging_anchors_on_the_base_not_a_source(family, tmp_path):
    """The parallel part is taken along the BASE rows: with lambda_1 = 1, lambda_2 = 1 and nothing masked, one source
    merges back to itself, which holds only if τ∥ + τ⊥ = τ for that anchor."""
    layout, base, models = family
    got = run(layout, tmp_path, "neuromerging", {"mask_rate": 0.0, "lambda_1": 1.0, "lambda_2": 1.0}, 384.0,
              weights=[1.0], locales=["fr-FR"])
    assert_state_close(got, models[1], atol=1e-6)


@BLOCKS
def test_slerp_two_models(family, tmp_path, memory_mb):
    layout, base, models = family
    got = run(layout, tmp_path, "slerp", {"t": 0.3}, memory_mb, weights=[1, 1], locales=LOCALES[:2])
    assert_state_close(got, ref.slerp(models[:2], [0.7, 0.3], t=0.3))


@BLOCKS
def test_slerp_k3_folds_pairwise_at_cumulative_weights(family, tmp_path, memory_mb):
    layout, base, models = family
    got = run(layout, tmp_path, "slerp", {}, memory_mb)
    assert_state_close(got, ref.slerp(models, [w / sum(WEIGHTS) for w in WEIGHTS]))


def test_slerp_equal_weights_of_two_is_the_midpoint(family, tmp_path):
    layout, base, models = family
    got = run(layout, tmp_path, "slerp", {}, 384.0, weights=[2, 2], locales=LOCALES[:2])
    assert_state_close(got, ref.slerp(models[:2], [0.5, 0.5], t=0.5))


def test_every_registered_static_method_has_a_test():
    from merginguriel.merging import load_methods

    tested = {"linear", "task_arithmetic", "ties", "dare_linear", "dare_task_arithmetic", "dare_ties", "breadcrumbs",
              "directional_consensus", "neuromerging", "slerp"}
    mine = {n for n, m in load_methods().items() if m.fn.__module__.split(".")[-1] in
            {"linear", "task_arithmetic", "ties", "breadcrumbs", "consensus", "neuromerging", "slerp", "dare"}}
    assert mine == tested
