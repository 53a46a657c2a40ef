"""RegMean: the closed form on a single linear layer against least squares on the stacked inputs, the Gram matrices
against the model's hidden states, the merge against the formula, statistics cached and reused."""

from __future__ import annotations

import pytest
import torch

from conftest import one_thread, WORLD_SOURCES as SOURCES, load_state, make_world
from merginguriel.merging.methods.regmean import RegMeanParams, regmean
from merginguriel.merging.registry import Block
from merginguriel.statistics import COMPUTE_CALLS
from test_fisher import merged_with_statistics
from merginguriel.statistics.regmean import gram_matrices

_one_thread = pytest.fixture(autouse=True)(one_thread)


def _block(base, sources, grams, weights, rows=None):
    w = torch.tensor(weights, dtype=torch.float32)
    rows = rows or (0, base.shape[0])
    return Block(
        name="lin.weight", shape=tuple(base.shape), rows=rows, base=base, sources=[s.clone() for s in sources],
        weights=w / w.sum(), raw_weights=w, seed=0, source_keys=[str(i) for i in range(len(sources))],
        stats={"regmean": grams},
    )


def test_single_linear_layer_closed_form_is_least_squares():
    gen = torch.Generator().manual_seed(0)
    d_in, d_out, n = 6, 4, 50
    xs = [torch.randn(n, d_in, generator=gen) * (i + 1) for i in range(3)]
    ws = [torch.randn(d_out, d_in, generator=gen) for _ in range(3)]
    grams = [(x.T @ x / n).unsqueeze(0) for x in xs]
    got = regmean(_block(torch.zeros(d_out, d_in), ws, grams, [1, 1, 1]), RegMeanParams(alpha=1.0))
    # RegMean minimises Σ_i ||X_i Wᵀ − X_i W_iᵀ||²: least squares on the stacked inputs and targets.
    x = torch.cat(xs).double()
    y = torch.cat([xi @ wi.T for xi, wi in zip(xs, ws)]).double()
    ref = torch.linalg.lstsq(x, y).solution.T.float()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # α scales off-diagonals: α = 0 is the Gram-diagonal-weighted average, per input column.
    diag = regmean(_block(torch.zeros(d_out, d_in), ws, grams, [1, 1, 1]), RegMeanParams(alpha=0.0))
    d = torch.stack([g[0].diagonal() for g in grams])  # [K, in]
    ref0 = sum(d[i] * ws[i] for i in range(3)) / d.sum(0)
    torch.testing.assert_close(diag, ref0, atol=1e-5, rtol=1e-5)
    # A block of rows merges to those rows of the whole merge (the engine may split large weights).
    part = regmean(_block(torch.zeros(2, d_in), [w[1:3] for w in ws], grams, [1, 1, 1], rows=(1, 3)), RegMeanParams(alpha=1.0))
    torch.testing.assert_close(part, got[1:3], atol=1e-6, rtol=1e-6)
    # A tensor without Gram matrices (a bias) is the weighted average.
    bias = regmean(_block(torch.zeros(d_out, 1)[:, 0], [w[:, 0] for w in ws], [None] * 3, [2, 1, 1]), RegMeanParams())
    torch.testing.assert_close(bias, 0.5 * ws[0][:, 0] + 0.25 * ws[1][:, 0] + 0.25 * ws[2][:, 0])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("regmean"), scale=0.1)


def test_gram_matrices_are_the_layer_inputs(world):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(world.layout.finetuned(SOURCES[0])).eval()
    rows = [[0, 5, 6, 7, 2], [0, 9, 2], [0, 11, 12, 13, 14, 15, 2]]
    grams = gram_matrices(model, rows, pad_id=1, batch_size=2)
    # Reference: the hidden states entering layer 0's query projection and the classifier's dense layer.
    ids = torch.full((3, 7), 1)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    mask = ids != 1
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
    x0 = hs[0][mask]
    torch.testing.assert_close(grams["roberta.encoder.layer.0.attention.self.query.weight"][0], x0.T @ x0 / len(x0), atol=1e-5, rtol=1e-4)
    cls = hs[-1][:, 0]
    torch.testing.assert_close(grams["classifier.dense.weight"][0], cls.T @ cls / 3, atol=1e-5, rtol=1e-4)
    assert grams["roberta.encoder.layer.1.output.dense.weight"].shape == (1, 64, 64)


def test_regmean_merge_and_cache(world):
    params = {"examples": 12, "alpha": 0.6, "data": "sources"}
    weights = [0.5, 0.25, 0.25]
    before = COMPUTE_CALLS.copy()
    out, folders = merged_with_statistics(world, world.spec("rm1", method="regmean", params=params, weights=weights, target=None))
    assert [COMPUTE_CALLS[("regmean", s)] - before[("regmean", s)] for s in SOURCES] == [1, 1, 1]
    merged = load_state(out)
    grams = [load_state(f) for f in folders]
    models = [load_state(world.layout.finetuned(s)) for s in SOURCES]
    name = "roberta.encoder.layer.1.intermediate.dense.weight"
    gs = [w * (0.6 * g[name][0] + 0.4 * torch.diag(g[name][0].diagonal())).double() for w, g in zip(weights, grams)]
    ref = torch.linalg.solve(sum(gs), sum(m[name].double() @ g for m, g in zip(models, gs)).T).T
    torch.testing.assert_close(merged[name], ref.float(), atol=1e-5, rtol=1e-4)
    bias = "roberta.encoder.layer.1.intermediate.dense.bias"
    torch.testing.assert_close(merged[bias], sum(w * m[bias] for w, m in zip(weights, models)), atol=1e-6, rtol=1e-5)
    # Reused on the second merge.
    mtimes = [(f / "statistics.safetensors").stat().st_mtime_ns for f in folders]
    _, again = merged_with_statistics(world, world.spec("rm2", method="regmean", params=params, weights=weights, target=None))
    assert [COMPUTE_CALLS[("regmean", s)] - before[("regmean", s)] for s in SOURCES] == [1, 1, 1]
    assert [(f / "statistics.safetensors").stat().st_mtime_ns for f in again] == mtimes
