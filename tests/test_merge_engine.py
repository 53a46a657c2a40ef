"""The streaming engine: exact global thresholds, output files that transformers loads (sharded or not, any dtype),
exclude patterns, the manifest, the statistics interface for methods that declare `needs`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file, save_file

import merge_refs as ref
from merginguriel.merging import MergeSpec, Source, merge
from merginguriel.merging.registry import METHODS, Block, Params, Reads, Sums, Thresholds, register
from merginguriel.merging.threshold import RadixSelect, SampledSelect, kth_largest_abs
from conftest import make_family

LOCALES = ["de-DE", "fr-FR"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    return make_family(root, LOCALES)


def sources(layout, weights=(0.6, 0.4)):
    return [Source(layout.finetuned(loc), loc, w) for loc, w in zip(LOCALES, weights)]


@pytest.mark.parametrize("n,block", [(50_000, 997), (9_000_000, 1_000_000)])
def test_global_threshold_equals_kthvalue(n, block):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=gen) * torch.rand(n, generator=gen) ** 3
    x[: n // 100] = 0.25  # many exact ties
    x[n // 100 : n // 50] = 0.0
    ranks = [1, 2, n // 100, n // 100 + 1, n // 5, n // 2, n - n // 50, n - n // 50 + 1, n]
    got = kth_largest_abs(list(x.split(block)), ranks)
    want = torch.stack([torch.kthvalue(x.abs(), n - r + 1).values for r in ranks])
    assert torch.equal(got, want)


def test_radix_select_keeps_groups_apart():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(30_000, generator=gen), torch.randn(20_000, generator=gen) * 5
    sel = RadixSelect({"a": [10, 3000], "b": [7]})
    for _ in range(2):
        for chunk in a.split(4096):
            sel.add("a", chunk)
        for chunk in b.split(333):
            sel.add("b", chunk)
        if sel.pass_no == 1:
            sel.next_pass()
    assert torch.equal(sel.result("a"), torch.stack([torch.kthvalue(a.abs(), a.numel() - r + 1).values for r in (10, 3000)]))
    assert sel.result("b")[0] == torch.kthvalue(b.abs(), b.numel() - 6).values


def test_sampled_select_is_exact_in_one_pass_and_reports_a_missed_bracket():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2_000_000, generator=gen) * torch.rand(2_000_000, generator=gen)
    n = x.numel()
    ranks = [n // 5, 3, n - 2]
    sel = SampledSelect({0: ranks, 1: [n // 5]}, {0: n, 1: n})
    for b in x.split(50_000):
        sel.sample(0, b[:200])
        sel.sample(1, b[:200] * 10)  # a sample that misrepresents what the full pass sees
    sel.freeze()
    for b in x.split(50_000):
        sel.add(0, b)
        sel.add(1, b)
    assert torch.equal(sel.result(0), torch.stack([torch.kthvalue(x.abs(), n - r + 1).values for r in ranks]))
    assert sel.filled[0][0] < n // 10  # only a band around the answer was kept (8,000 samples)
    assert sel.result(1) is None  # the caller then falls back to RadixSelect


def test_sampled_select_grows_a_band_buffer_that_was_too_small():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(400_000, generator=gen)
    n = x.numel()
    sel = SampledSelect({0: [n // 3]}, {0: n})
    for b in x.split(10_000):
        sel.sample(0, b[:100])
    sel.freeze()
    sel.band[0][0] = sel.band[0][0][:10]  # far too small: every add must grow it
    for b in x.split(10_000):
        sel.add(0, b)
    assert sel.result(0)[0] == torch.kthvalue(x.abs(), n - n // 3 + 1).values


def test_output_loads_with_transformers_and_keeps_labels(family, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from merginguriel.locales import INTENTS

    out = merge(MergeSpec(family.base, sources(family), "linear", {}, tmp_path / "m", progress=False))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(60)] == list(INTENTS)
    want = ref.linear(ref.load(family.base), [ref.load(family.finetuned(l)) for l in LOCALES], [0.6, 0.4])
    state = model.state_dict()
    for name, value in want.items():
        torch.testing.assert_close(state[name], value, atol=1e-6, rtol=1e-5)
    assert (out / "tokenizer_config.json").is_file() or (out / "tokenizer.json").is_file()
    assert not list(tmp_path.glob(".m.tmp-*"))


def test_sharded_output_loads(family, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = merge(MergeSpec(family.base, sources(family), "task_arithmetic", {}, tmp_path / "m", shard_mb=0.05, progress=False))
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    merged = {}
    for s in shards:
        merged.update(load_file(str(s)))
    assert set(index["weight_map"]) == set(merged)
    want = ref.task_arithmetic(ref.load(family.base), [ref.load(family.finetuned(l)) for l in LOCALES], [0.6, 0.4], 1.0)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    for name, value in want.items():
        torch.testing.assert_close(model.state_dict()[name], value, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_output_dtype(family, tmp_path, dtype):
    from transformers import AutoModelForSequenceClassification

    out = merge(MergeSpec(family.base, sources(family), "linear", {}, tmp_path / "m", dtype=dtype, progress=False))
    raw = load_file(str(out / "model.safetensors"))
    assert {v.dtype for v in raw.values()} == {getattr(torch, dtype)}
    want = ref.linear(ref.load(family.base), [ref.load(family.finetuned(l)) for l in LOCALES], [0.6, 0.4])
    eps = torch.finfo(getattr(torch, dtype)).eps
    for name, value in want.items():  # equal up to one rounding step of the output dtype
        torch.testing.assert_close(raw[name].float(), value, rtol=eps, atol=1e-6)
    AutoModelForSequenceClassification.from_pretrained(out)
    assert json.loads((out / "manifest.json").read_text())["dtype"] == dtype


def test_exclude_keeps_base_values_and_is_recorded(family, tmp_path):
    base = ref.load(family.base)
    out = merge(MergeSpec(family.base, sources(family), "ties", {"density": 0.5}, tmp_path / "m",
                          exclude=["*embeddings*", "re:^classifier\\."], memory_mb=0.004, progress=False))
    got = ref.load(out)
    excluded = [n for n in base if "embeddings" in n or n.startswith("classifier.")]
    assert excluded and all(torch.equal(got[n], base[n]) for n in excluded)
    kept = [n for n in base if n not in excluded]
    # the global threshold is taken over the merged tensors only
    want = ref.ties(base, [ref.load(family.finetuned(l)) for l in LOCALES], [0.6, 0.4], 0.5, names=kept)
    for n in kept:
        torch.testing.assert_close(got[n], want[n], atol=2e-6, rtol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exclude"]["patterns"] == ["*embeddings*", "re:^classifier\\."]
    assert sorted(manifest["exclude"]["tensors"]) == sorted(excluded)


def test_manifest_records_everything(family, tmp_path):
    from merginguriel.io import read_manifest

    out = merge(MergeSpec(family.base, sources(family, (3, 1)), "dare_ties", {"p": 0.5}, tmp_path / "m", seed=5,
                          target="sw-KE", selection={"similarity": "uriel"}, progress=False))
    m = read_manifest(out)
    assert m["kind"] == "merged" and m["method"] == "dare_ties" and m["seed"] == 5 and m["target"] == "sw-KE"
    assert m["params"] == {"p": 0.5, "rescale": True, "density": 1.0, "scope": "global", "merge": "dis-mean", "lam": 1.0,
                           "rounding": "auto"}
    assert m["base"] == {"path": str(family.base), "hash": read_manifest(family.base)["hash"]}
    assert [(s["locale"], s["weight"], s["hash"]) for s in m["sources"]] == [
        (loc, w, read_manifest(family.finetuned(loc))["hash"]) for loc, w in zip(LOCALES, (3, 1))
    ]
    assert m["weights_normalised"] == pytest.approx([0.75, 0.25])
    assert m["selection"] == {"similarity": "uriel"}
    assert m["memory"]["peak_rss_mb"] > 0 and m["timings"]["total_s"] > 0
    assert m["device"] == "cpu" and "torch" in m["versions"]


@dataclass(frozen=True)
class _ScaledParams(Params):
    """Test method: per-entry weights from a statistics tensor.

    Args:
        eps: floor.
    """

    eps: float = 1e-6


def test_methods_that_need_statistics_get_them_streamed(family, tmp_path):
    """A method that reads statistics ``fisher`` receives each source's same-named statistics, row-sliced like the
    weights, whole when shaped otherwise, None where missing."""
    seen_shapes = {}

    @register("_test_fisher_like", _ScaledParams, reads=lambda p: Reads(inputs="models", statistics=("fisher",)))
    def fisher_like(block: Block, p: _ScaledParams) -> torch.Tensor:
        stats = block.stats["fisher"]
        if stats[0] is None:
            return block.base
        seen_shapes[block.name] = tuple(stats[0].shape)
        if stats[0].shape != block.base.shape:  # e.g. a Gram matrix: not an entry-wise weight
            return block.base
        num = sum(c * (f + p.eps) * t for c, f, t in zip(block.weights, stats, block.sources))
        den = sum(c * (f + p.eps) for c, f in zip(block.weights, stats))
        return num / den

    try:
        base = ref.load(family.base)
        models = [ref.load(family.finetuned(l)) for l in LOCALES]
        gen = torch.Generator().manual_seed(0)
        fishers, folders = [], []
        gram_name = "roberta.encoder.layer.0.attention.self.query.weight"
        for loc in LOCALES:
            f = {n: torch.rand(v.shape, generator=gen) for n, v in base.items() if n != "classifier.out_proj.bias"}
            f[gram_name] = torch.rand(7, 7, generator=gen)  # shaped differently from the weight: passed whole
            folder = family.statistics("fisher", loc, "test-key")
            folder.mkdir(parents=True, exist_ok=True)
            save_file(f, str(folder / "model.safetensors"))
            fishers.append(f)
            folders.append(folder)
        out = merge(MergeSpec(family.base, sources(family), "_test_fisher_like", {}, tmp_path / "m", memory_mb=0.004,
                              progress=False, statistics={"fisher": folders}))
        got = ref.load(out)
        w = ref.norm_w([0.6, 0.4])
        for n in base:
            if n in ("classifier.out_proj.bias",) or n == gram_name:
                continue
            num = sum(w[i] * (fishers[i][n] + 1e-6) * models[i][n] for i in range(2))
            den = sum(w[i] * (fishers[i][n] + 1e-6) for i in range(2))
            torch.testing.assert_close(got[n], num / den, atol=1e-6, rtol=1e-5)
        assert torch.equal(got["classifier.out_proj.bias"], base["classifier.out_proj.bias"])
        assert torch.equal(got[gram_name], base[gram_name])
        assert seen_shapes[gram_name] == (7, 7)
        emb = "roberta.embeddings.word_embeddings.weight"
        assert seen_shapes[emb][1:] == base[emb].shape[1:] and seen_shapes[emb][0] < base[emb].shape[0]
    finally:
        METHODS.pop("_test_fisher_like", None)


def test_statistics_a_method_reads_but_nobody_gives_are_refused(family, tmp_path):
    from merginguriel.errors import InputError

    @register("_test_reads_fisher", _ScaledParams, reads=lambda p: Reads(inputs="models", statistics=("fisher",)))
    def reads_fisher(block: Block, p) -> torch.Tensor:
        return block.base

    try:
        with pytest.raises(InputError, match=r"reads fisher statistics of every source.*MergeSpec.statistics"):
            merge(MergeSpec(family.base, sources(family), "_test_reads_fisher", {}, tmp_path / "m", progress=False))
        assert not (tmp_path / "m").exists()
    finally:
        METHODS.pop("_test_reads_fisher", None)


def test_statistics_without_a_context_are_refused(family, tmp_path):
    """A method that needs statistics, run without them and without the data to compute them, is refused before
    anything is written."""
    from merginguriel.errors import InputError
    from merginguriel.merging.registry import Needs, Statistic

    never = Statistic("regmean_test", compute=lambda *a: pytest.fail("nothing may be computed"))

    @register("_test_needs_regmean", _ScaledParams, reads=lambda p: Reads(statistics=("regmean_test",)),
              needs=Needs(statistics=(never,)))
    def needs(block: Block, p) -> torch.Tensor:
        return block.base

    try:
        with pytest.raises(InputError, match="needs regmean_test statistics of every source.*MergeContext"):
            merge(MergeSpec(family.base, sources(family), "_test_needs_regmean", {}, tmp_path / "m", progress=False))
        assert not (tmp_path / "m").exists()
    finally:
        METHODS.pop("_test_needs_regmean", None)


def test_block_size_shrinks_with_k_so_memory_stays_flat(family):
    from merginguriel.merging.engine import plan_units
    from merginguriel.merging.validate import prepare

    def largest_unit(k_sources):
        plan = prepare(MergeSpec(family.base, k_sources, "linear", {}, family.root / "never", progress=False))
        units, _ = plan_units(plan, memory_mb=0.01)
        return max(sum((it.stop - it.start) * math.prod(plan.base.checkpoint.tensors[it.name].shape[1:]) for it in u) for u in units)

    one = largest_unit(sources(family)[:1])
    two = largest_unit(sources(family))
    assert two < one and two * 10 <= one * 8 + 64  # 2K + 6 blocks fit the same budget


@dataclass(frozen=True)
class _SumsParams(Params):
    """Test method: per-tensor sums on some tensors, read after the thresholds.

    Args:
        density: keep fraction whose threshold the sums see.
    """

    density: float = 0.5


def test_tensor_sums_only_where_asked_and_after_the_thresholds(family, tmp_path):
    """``Sums.applies`` limits the per-tensor sums (and the pre-pass reads) to the tensors it accepts; with
    ``after_thresholds`` every block handed to the sums already carries its thresholds; the totals over a split
    tensor's blocks equal the whole tensor's."""
    from merginguriel.merging.methods._common import keep_count

    seen: dict[str, list] = {}
    totals: dict[str, float] = {}

    def sums(block: Block) -> dict[str, torch.Tensor]:
        seen.setdefault(block.name, []).append(block.thresholds)
        below = sum((s.abs() < block.thresholds[i, 0]).sum() for i, s in enumerate(block.sources))
        return {"below": below.double().reshape(())}

    @register("_test_late_sums", _SumsParams, reads=lambda p: Reads(
        thresholds=Thresholds("tensor", lambda n: [keep_count(p.density, n)]),
        sums=Sums(sums, applies=lambda name, shape: "word_embeddings" in name, after_thresholds=True)))
    def late(block: Block, p) -> torch.Tensor:
        if "word_embeddings" in block.name:
            totals[block.name] = float(block.sums["below"])
        else:
            assert block.sums == {}
        return block.base

    try:
        merge(MergeSpec(family.base, sources(family), "_test_late_sums", {}, tmp_path / "m", memory_mb=0.004, progress=False))
        emb = "roberta.embeddings.word_embeddings.weight"
        assert set(seen) == {emb} and len(seen[emb]) > 1  # split into blocks, summed in the pre-pass, nothing else
        assert all(t is not None for t in seen[emb])
        base = ref.load(family.base)
        taus = [ref.load(family.finetuned(l))[emb] - base[emb] for l in LOCALES]
        keep = keep_count(0.5, base[emb].numel())
        want = sum(int((t.abs() < ref.kth_largest(t, keep)).sum()) for t in taus)
        assert totals[emb] == want
    finally:
        METHODS.pop("_test_late_sums", None)
