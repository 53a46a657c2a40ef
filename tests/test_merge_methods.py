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
from conftest import make_family

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
    """``method`` merged by the engine from the family's checkpoints (a MergeSpec; ``kw`` are its other fields)."""
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
@pytest.mark.parametrize("scope,mode,rounding", [
    ("global", "dis-mean", "auto"), ("tensor", "dis-mean", "auto"), ("global", "dis-sum", "auto"), ("tensor", "dis-sum", "auto"),
    ("tensor", "dis-mean", "ceil"), ("global", "dis-mean", "floor"),
])
def test_ties(family, tmp_path, memory_mb, scope, mode, rounding):
    layout, base, models = family
    got = run(layout, tmp_path, "ties", {"density": 0.3, "scope": scope, "merge": mode, "rounding": rounding}, memory_mb)
    lam = 1.0 if mode == "dis-mean" else 0.3
    rule = rounding if rounding != "auto" else ("floor" if scope == "tensor" else "ceil")
    assert_state_close(got, ref.ties(base, models, WEIGHTS, 0.3, scope, mode, lam, rounding=rule))


@BLOCKS
def test_ties_tensor_scope_equals_mergekit_where_density_times_n_is_fractional(family, tmp_path, memory_mb):
    """Per-tensor TIES with its default (mergekit) rounding equals a re-implementation of mergekit's ties at a
    density where density·n is fractional for most tensors (0.3 · 32 = 9.6: mergekit keeps 9, the ceiling 10)."""
    layout, base, models = family
    assert any((0.3 * t.numel()) % 1 > 1e-6 for t in base.values())
    want = ref.mergekit_ties(base, models, WEIGHTS, 0.3)
    got = run(layout, tmp_path, "ties", {"density": 0.3, "scope": "tensor"}, memory_mb)
    assert_state_close(got, want)
    ceil = run(layout, tmp_path, "ties", {"density": 0.3, "scope": "tensor", "rounding": "ceil"}, memory_mb)
    assert any(not torch.allclose(ceil[n], want[n], atol=1e-6) for n in want)  # the rounding is what makes it agree


def test_ties_global_differs_from_tensor_scope(family, tmp_path):
    layout, _, _ = family
    a = run(layout, tmp_path, "ties", {"density": 0.2, "scope": "global"}, 384.0)
    b = run(layout, tmp_path, "ties", {"density": 0.2, "scope": "tensor"}, 384.0)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def dare_taus(layout, base, models, p, seed=42, rescale=True):
    """DARE's task vectors, each source's mask keyed by the weights hash its manifest records."""
    from merginguriel.io import read_manifest

    taus = []
    for loc, m in zip(LOCALES, models):
        key = read_manifest(layout.finetuned(loc))["hash"]
        t = {}
        for n in base:
            shape = tuple(base[n].shape)
            mask = keep_mask(seed, key, n, shape, (0, shape[0] if shape else 1), p)
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


def make_conflicting_family(root: Path, scale: float = 0.02):
    """A tiny family whose task vectors conflict: τ_de and τ_fr point the same way, τ_sw mostly the opposite way."""
    from transformers import AutoModelForSequenceClassification

    from merginguriel.checkpoints import Layout
    from conftest import make_base, save_finetuned

    make_base(root, "tiny", seed=0)
    layout = Layout(root, "tiny")
    base_model = AutoModelForSequenceClassification.from_pretrained(layout.base)
    gen = torch.Generator().manual_seed(5)
    shared = {n: torch.randn(p.shape, generator=gen) * scale for n, p in base_model.named_parameters()}
    mix = {"de-DE": (1.0, 0.3), "fr-FR": (0.8, 0.5), "sw-KE": (-1.0, 0.4)}
    for loc, (along, noise) in mix.items():
        model = AutoModelForSequenceClassification.from_pretrained(layout.base)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.add_(along * shared[n] + noise * scale * torch.randn(p.shape, generator=gen))
        save_finetuned(layout, model, loc)
    return layout


@pytest.fixture(scope="module")
def conflicting(tmp_path_factory):
    layout = make_conflicting_family(tmp_path_factory.mktemp("conflict"))
    return layout, ref.load(layout.base), [ref.load(layout.finetuned(loc)) for loc in LOCALES]


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[n].double() - b[n].double()).abs().max()) for n in a)


@BLOCKS
@pytest.mark.parametrize("scope", ["row", "tensor"])
def test_directional_consensus_agreement_equals_reference_and_is_not_task_arithmetic(conflicting, tmp_path, memory_mb, scope):
    """The default variant (agreement-gated) against an independent reference, on conflicting task vectors where it
    must drop the disagreeing source: far from weighted task arithmetic."""
    layout, base, models = conflicting
    got = run(layout, tmp_path, "directional_consensus", {"scope": scope, "lam": 0.9}, memory_mb)
    assert_state_close(got, ref.dc_agreement(base, models, WEIGHTS, 0.9, scope))
    ta = ref.task_arithmetic(base, models, WEIGHTS, 0.9)
    emb = "roberta.embeddings.word_embeddings.weight"
    tau_ta = ta[emb] - base[emb]
    assert float((got[emb] - ta[emb]).norm() / tau_ta.norm()) > 0.5  # not a rounding difference: another merge


def test_directional_consensus_agreement_drops_the_source_that_points_against_the_consensus(conflicting, tmp_path):
    """With sw-KE's task vector opposite to the consensus in every row, the gated merge of a row is the merge of the
    other two sources with weights w_i·cos(τ_i, d), renormalised: no trace of sw-KE."""
    layout, base, models = conflicting
    got = run(layout, tmp_path, "directional_consensus", {}, 384.0)
    name = "roberta.encoder.layer.0.attention.self.query.weight"
    taus = [(m[name] - base[name]).double() for m in models]
    s = sum(taus)
    cos = [torch.nn.functional.cosine_similarity(t, s, dim=1) for t in taus]
    assert bool((cos[2] < 0).all()) and bool((cos[0] > 0).all()) and bool((cos[1] > 0).all())
    g = [WEIGHTS[i] * cos[i] for i in range(2)]
    want = base[name].double() + (g[0][:, None] * taus[0] + g[1][:, None] * taus[1]) / (g[0] + g[1])[:, None]
    torch.testing.assert_close(got[name].double(), want, atol=2e-6, rtol=1e-5)


@BLOCKS
def test_directional_consensus_research_log_variant(conflicting, tmp_path, memory_mb):
    """The research log's definition against its reference; it equals weighted task arithmetic under uniform
    weights (linear in τ) and differs from it under non-uniform ones."""
    layout, base, models = conflicting
    got = run(layout, tmp_path, "directional_consensus", {"variant": "research_log", "lam": 0.7}, memory_mb)
    assert_state_close(got, ref.dc_research_log(base, models, WEIGHTS, 0.7))
    assert max_diff(got, ref.task_arithmetic(base, models, WEIGHTS, 0.7)) > 1e-3
    uniform = run(layout, tmp_path, "directional_consensus", {"variant": "research_log", "lam": 0.7}, memory_mb, weights=[1, 1, 1])
    assert_state_close(uniform, ref.task_arithmetic(base, models, [1, 1, 1], 0.7))


@BLOCKS
@pytest.mark.parametrize("uniform", [True, False], ids=["equal-weights", "weighted"])
def test_neuromerging_published_equals_the_reference_code(family, tmp_path, memory_mb, uniform):
    """The published variant against a transcription of the authors' reference code (global mask at the reference's
    kthvalue rule, neuron kernel in each row's singular basis, ties kernel for 1-D tensors): with equal weights the
    reference's own arithmetic; with weights, its weighted generalisation."""
    layout, base, models = family
    weights = [1, 1, 1] if uniform else WEIGHTS
    got = run(layout, tmp_path, "neuromerging", {}, memory_mb, weights=weights)
    want = ref.neuromerging_published(base, models, None if uniform else weights)
    assert_state_close(got, want, atol=5e-6)
    params = {"mode": "full", "mask_rate": 0.6, "lambda_1": 0.7, "lambda_2": 1.3}
    got = run(layout, tmp_path, "neuromerging", params, memory_mb, weights=weights)
    want = ref.neuromerging_published(base, models, None if uniform else weights, 0.6, 0.7, 1.3, mode="full")
    assert_state_close(got, want, atol=5e-6)


def test_neuromerging_kernel_equals_the_reference_kernel_on_tiny_tensors():
    """The neuron kernel alone, on hand-made tiny rows: more sources than the row length, a source whose row is all
    zero (it takes no part in the disjoint mean, as in the reference), opposite sources, a single source."""
    from merginguriel.merging.methods.neuromerging import _neuron_rows

    gen = torch.Generator().manual_seed(3)
    base = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    taus = torch.randn(4, 5, 3, generator=gen, dtype=torch.float64)  # K = 4 > n = 3
    taus[1, 2] = 0.0  # source 1 has nothing on row 2
    taus[3, 4] = -taus[0, 4]  # sources 0 and 3 cancel on row 4
    for k in (4, 2, 1):
        w = torch.full((k,), 1.0 / k, dtype=torch.float64)
        for lam1, lam2 in ((0.0, 1.0), (1.0, 1.0), (0.5, 2.0)):
            proj, rep = ref.nm_neuro_kernel(base, list(taus[:k]))
            got = _neuron_rows(base.float(), taus[:k].float(), w, lam1, lam2).double()
            torch.testing.assert_close(got, lam1 * proj + lam2 * rep, atol=1e-6, rtol=1e-5)
    # one source: the orthogonal part is its own τ⊥, exactly
    proj, rep = ref.nm_neuro_kernel(base, [taus[0]])
    par = (taus[0] * base).sum(1, keepdim=True) / (base * base).sum(1, keepdim=True) * base
    torch.testing.assert_close(rep, taus[0] - par)


@BLOCKS
@pytest.mark.parametrize("params", [{}, {"lambda_1": 0.5, "lambda_2": 1.2, "mask_rate": 0.3}])
def test_neuromerging_research_log_variant(family, tmp_path, memory_mb, params):
    layout, base, models = family
    got = run(layout, tmp_path, "neuromerging", {"variant": "research_log", **params}, memory_mb)
    want = ref.neuromerging_research_log(base, models, WEIGHTS, params.get("mask_rate", 0.15), params.get("lambda_1", 0.0), params.get("lambda_2"))
    assert_state_close(got, want, atol=5e-6)


def test_neuromerging_research_log_anchors_on_the_base_not_a_source(family, tmp_path):
    """The parallel part is taken along the BASE rows: with lambda_1 = 1, lambda_2 = 1 and nothing masked, one source
    merges back to itself, which holds only if τ∥ + τ⊥ = τ for that anchor."""
    layout, base, models = family
    got = run(layout, tmp_path, "neuromerging", {"variant": "research_log", "mask_rate": 0.0, "lambda_1": 1.0, "lambda_2": 1.0},
              384.0, weights=[1.0], locales=["fr-FR"])
    assert_state_close(got, models[1], atol=1e-6)


def test_neuromerging_variants_differ(family, tmp_path):
    """The two variants are different methods (the ablation compares them): far apart relative to the task vectors."""
    layout, base, models = family
    pub = run(layout, tmp_path, "neuromerging", {}, 384.0)
    log = run(layout, tmp_path, "neuromerging", {"variant": "research_log"}, 384.0)
    name = "roberta.encoder.layer.1.intermediate.dense.weight"
    rel = float((pub[name] - log[name]).norm() / (log[name] - base[name]).norm())
    assert rel > 0.3, rel


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


def _default_references(layout, base, models) -> dict:
    """Every static method with its DEFAULT parameters, as the independent references compute it."""
    taus9 = dare_taus(layout, base, models, 0.9)
    w = WEIGHTS
    return {
        "linear": lambda: ref.linear(base, models, w),
        "similarity": lambda: ref.linear(base, models, w),
        "average": lambda: ref.linear(base, models, [1, 1, 1]),
        "task_arithmetic": lambda: ref.task_arithmetic(base, models, w, 1.0, True),
        "task_vectors": lambda: ref.task_arithmetic(base, models, w, 1.0, True),
        "ties": lambda: ref.ties(base, models, w, 0.2, "global"),
        "dare_linear": lambda: ref.task_arithmetic(base, models, w, 1.0, True, taus=taus9),
        "dare_task_arithmetic": lambda: ref.task_arithmetic(base, models, w, 1.0, True, taus=taus9),
        "dare_ties": lambda: ref.ties(base, models, w, 0.2, "global", taus=taus9),
        "breadcrumbs": lambda: ref.breadcrumbs(base, models, w),
        "breadcrumbs_ties": lambda: ref.breadcrumbs_ties(base, models, w),
        "directional_consensus": lambda: ref.dc_agreement(base, models, w),
        "neuromerging": lambda: ref.neuromerging_published(base, models, w),
        "slerp": lambda: ref.slerp(models, w),
    }


def test_every_registered_method_matches_its_reference_at_its_defaults(family, tmp_path):
    """Driven by the registry, not by a list: a method registered without a reference here fails this test by name,
    and so does one whose defaults drift from the published ones the reference encodes."""
    from merginguriel.merging import load_methods

    layout, base, models = family
    refs = _default_references(layout, base, models)
    static = sorted(n for n, m in load_methods().items() if not m.needs.data and not n.startswith("_test"))
    assert sorted(refs) == static, "every registered static method needs a reference computation here"
    for name in static:
        got = run(layout, tmp_path, name, {}, 384.0, weights_from="similarity" if name == "similarity" else "given")
        assert_state_close(got, refs[name](), atol=5e-6)
    data = sorted(n for n, m in load_methods().items() if m.needs.data)
    # checked against their formulas in test_fisher.py, test_regmean.py and test_adamerging.py
    assert data == ["adamerging", "fisher", "regmean"]


def test_dare_mask_follows_the_weights_not_the_folder(family, tmp_path):
    """The mask is keyed by each source's weights hash: the same models under other folder names, in other places,
    without locales, give a bit-identical DARE merge; two folders of one name in different parents merge."""
    import shutil

    layout, _, _ = family
    first = run(layout, tmp_path, "dare_ties", {"p": 0.7}, 384.0)
    moved = [tmp_path / "elsewhere" / f"copy-of-{loc}" / "model" for loc in LOCALES]  # every folder named "model"
    for loc, dst in zip(LOCALES, moved):
        shutil.copytree(layout.finetuned(loc), dst)
    out = tmp_path / "moved"
    merge(MergeSpec(layout.base, [Source(d, None, w) for d, w in zip(moved, WEIGHTS)], "dare_ties", {"p": 0.7}, out, progress=False))
    second = ref.load(out)
    assert all(torch.equal(first[n], second[n]) for n in first)
    # the masks do depend on the source: another order of the same weights gives another merge
    out = tmp_path / "swapped"
    merge(MergeSpec(layout.base, [Source(d, None, w) for d, w in zip(moved[::-1], WEIGHTS)], "dare_ties", {"p": 0.7}, out, progress=False))
    assert any(not torch.equal(first[n], ref.load(out)[n]) for n in first)


def test_mergekit_parameter_names_are_accepted_and_conflicts_refused(family, tmp_path):
    from merginguriel.errors import InputError

    layout, _, _ = family
    ours = run(layout, tmp_path, "dare_task_arithmetic", {"p": 0.7, "lam": 0.6}, 384.0)
    theirs = run(layout, tmp_path, "dare_task_arithmetic", {"density": 0.3, "lambda": 0.6}, 384.0)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    params = [json.loads(m.read_text())["params"] for m in sorted(tmp_path.glob("*/manifest.json"))]
    assert params[0] == params[1] == {"p": 0.7, "rescale": True, "lam": 0.6, "weighted": True}  # canonical names
    with pytest.raises(InputError, match="lambda=0.5 means lam=0.5, but lam=0.6 is given too"):
        run(layout, tmp_path, "task_arithmetic", {"lambda": 0.5, "lam": 0.6}, 384.0)
    with pytest.raises(InputError, match="density=0.5 means p=0.5"):
        run(layout, tmp_path, "dare_linear", {"density": 0.5, "p": 0.9}, 384.0)
    with pytest.raises(InputError, match=r"p=1.0 must be in \[0, 1\).*density"):
        run(layout, tmp_path, "dare_linear", {"density": 0.0}, 384.0)
    # dare_ties has a density of its own (the TIES trim): there it is not DARE's keep rate
    run(layout, tmp_path, "dare_ties", {"density": 0.5}, 384.0)
    newest = max(tmp_path.glob("dare_ties*/manifest.json"), key=lambda m: m.stat().st_mtime)
    assert json.loads(newest.read_text())["params"]["p"] == 0.9
    linear = run(layout, tmp_path, "linear", {"normalize": False}, 384.0, weights=[0.5, 0.25, 0.5])
    assert_state_close(linear, {n: sum(w * m[n] for w, m in zip([0.5, 0.25, 0.5], family[2])) for n in family[1]})


def test_merge_list_states_variants_aliases_and_conventions():
    from merginguriel.merging.registry import format_methods

    text = format_methods()
    assert "variant (agreement|research_log, default 'agreement')" in text
    assert "variant (published|research_log, default 'published')" in text
    assert "equal to weighted task arithmetic when the weights are uniform" in " ".join(text.split())
    assert "density: accepted for p (mergekit's keep rate: p = 1 - density)" in text
    assert "lambda: accepted for lam (mergekit's name)" in text
    assert "rounding (auto|floor|ceil, default 'auto')" in text
    flat = " ".join(text.split())
    assert "t = 0 here is the FIRST source" in flat and "normalised to sum 1 by default" in flat
    assert "NOT mergekit's dare_ties density" in flat
