"""Source selection: top-K, ExcTar/IncTar, deterministic ties, renormalised and Sinkhorn weights, select_for_target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from merginguriel.errors import InputError
from merginguriel.similarity import select_for_target, select_sources, sinkhorn, uriel_similarity

LOCS = ["de-DE", "en-US", "es-ES", "fr-FR", "it-IT"]


def frame(values) -> pd.DataFrame:
    return pd.DataFrame(np.array(values, dtype=float), index=LOCS[: len(values)], columns=LOCS[: len(values)])


S = frame([
    [1.0, 0.8, 0.3, 0.6, 0.2],
    [0.7, 1.0, 0.5, 0.5, 0.4],
    [0.2, 0.6, 1.0, 0.9, 0.7],
    [0.5, 0.5, 0.9, 1.0, 0.8],
    [0.1, 0.4, 0.7, 0.6, 1.0],
])


def reference_sinkhorn(m: list[list[float]], iterations: int) -> list[list[float]]:
    """Plain-Python alternating row/column normalisation (the independent reference)."""
    m = [row[:] for row in m]
    n, k = len(m), len(m[0])
    for _ in range(iterations):
        for i in range(n):
            s = sum(m[i])
            if s > 0:
                m[i] = [x / s for x in m[i]]
        for j in range(k):
            s = sum(m[i][j] for i in range(n))
            if s > 0:
                for i in range(n):
                    m[i][j] /= s
    return m


def test_sinkhorn_converges_to_doubly_stochastic() -> None:
    rng = np.random.default_rng(0)
    m = rng.uniform(0.1, 1.0, size=(6, 6))
    out = sinkhorn(m, 20)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out, reference_sinkhorn(m.tolist(), 20), atol=1e-12)
    with pytest.raises(InputError):
        sinkhorn(-m)


def test_exctar_top_k_and_renormalised_scores() -> None:
    sel = select_sources("es-ES", S, 2, include_target=False)
    assert sel.sources == ["fr-FR", "it-IT"]  # es-ES itself (1.0) is excluded
    assert sel.scores == [0.9, 0.7]
    assert sel.weights == pytest.approx([0.9 / 1.6, 0.7 / 1.6])
    assert sel.include_target is False and sel.weighting == "scores"


def test_inctar_includes_target() -> None:
    sel = select_sources("es-ES", S, 3, include_target=True)
    assert sel.sources == ["es-ES", "fr-FR", "it-IT"]
    assert sum(sel.weights) == pytest.approx(1.0)


def test_inctar_keeps_target_even_when_it_scores_low() -> None:
    # REAL scores where the target's own model transfers worse to it than two other sources do.
    low = S.copy()
    low.loc["es-ES", "es-ES"] = 0.1
    sel = select_sources("es-ES", low, 2, include_target=True)
    assert sel.sources == ["es-ES", "fr-FR"] and sel.scores == [0.1, 0.9]
    assert sel.weights == pytest.approx([0.1, 0.9])
    balanced = select_sources("es-ES", low, 2, include_target=True, weighting="sinkhorn")
    assert balanced.sources == sel.sources and sum(balanced.weights) == pytest.approx(1.0) and min(balanced.weights) > 0


def test_ties_broken_by_locale_name() -> None:
    # en-US: de-DE 0.7, es-ES 0.5, fr-FR 0.5 -> with K=2 the tie between es-ES and fr-FR goes to es-ES.
    sel = select_sources("en-US", S, 2)
    assert sel.sources == ["de-DE", "es-ES"]
    shuffled = S.loc[LOCS[::-1], LOCS[::-1]]
    assert select_sources("en-US", shuffled, 2).sources == sel.sources


def test_candidates_restrict_pool() -> None:
    sel = select_sources("es-ES", S, 2, candidates=["de-DE", "en-US", "it-IT"])
    assert sel.sources == ["it-IT", "en-US"]


def test_sinkhorn_weights_match_hand_recipe() -> None:
    k = 2
    sel = select_sources("es-ES", S, k, include_target=False, weighting="sinkhorn")
    # independent recipe: zero the diagonal (ExcTar), keep each row's top-k (ties by name), balance, read es-ES's row
    sparse = []
    for i, r in enumerate(LOCS):
        row = [(S.iat[i, j], c) for j, c in enumerate(LOCS) if c != r]
        keep = {c for _, c in sorted(row, key=lambda t: (-t[0], t[1]))[:k]}
        sparse.append([S.iat[i, j] if c in keep else 0.0 for j, c in enumerate(LOCS)])
    balanced = reference_sinkhorn(sparse, 20)
    i = LOCS.index("es-ES")
    w = [balanced[i][LOCS.index(s)] for s in sel.sources]
    assert sel.sources == ["fr-FR", "it-IT"]  # Sinkhorn changes weights, not the choice
    assert sel.weights == pytest.approx([x / sum(w) for x in w], abs=1e-12)
    assert sel.weights != pytest.approx(select_sources("es-ES", S, k).weights)


def test_bad_selection_inputs() -> None:
    with pytest.raises(InputError, match="only 4 candidate"):
        select_sources("es-ES", S, 5, include_target=False)
    with pytest.raises(InputError, match="positive integer"):
        select_sources("es-ES", S, 0)
    with pytest.raises(InputError, match="unknown weighting"):
        select_sources("es-ES", S, 2, weighting="softplus")
    with pytest.raises(InputError, match="no row"):
        select_sources("sw-KE", S, 2)
    with pytest.raises(InputError, match="unknown locale"):
        select_sources("es-ES", S, 2, candidates=["xx-XX"])
    with pytest.raises(InputError, match="IncTar needs"):
        select_sources("es-ES", S.drop(columns="es-ES"), 2, include_target=True)
    zero = S.copy()
    zero.loc["es-ES"] = 0.0
    with pytest.raises(InputError, match="sum to zero"):
        select_sources("es-ES", zero, 2)


def write_nxn(path, frame: pd.DataFrame):
    frame.index.name = "source"
    frame.to_csv(path)
    return path


def test_select_for_target_real_reads_target_column(tmp_path) -> None:
    # rows = source models, columns = evaluated locales; REAL for target es-ES reads column es-ES.
    nxn = S.T.copy()  # so that nxn.loc[source, target] = S.loc[target, source]
    csv = write_nxn(tmp_path / "nxn.csv", nxn)
    sel = select_for_target("es-ES", "real", 2, False, "scores", candidates=None, nxn_csv=csv)
    assert sel.sources == ["fr-FR", "it-IT"] and sel.scores == [nxn.at["fr-FR", "es-ES"], nxn.at["it-IT", "es-ES"]]
    assert sel.similarity == "real" and sel.to_dict()["num_sources"] == 2
    sink = select_for_target("es-ES", "real", 2, False, "sinkhorn", candidates=None, nxn_csv=csv)
    assert sink.weights == pytest.approx(select_sources("es-ES", S, 2, weighting="sinkhorn").weights)
    # a target without its own model still gets REAL scores from its column
    no_model = write_nxn(tmp_path / "partial.csv", nxn.drop(index="es-ES"))
    assert select_for_target("es-ES", "real", 2, False, "scores", None, nxn_csv=no_model).sources == ["fr-FR", "it-IT"]
    with pytest.raises(InputError, match="Sinkhorn"):
        select_for_target("es-ES", "real", 2, False, "sinkhorn", None, nxn_csv=no_model)
    with pytest.raises(InputError, match="needs the NxN"):
        select_for_target("es-ES", "real", 2, False, "scores", None)


def test_select_for_target_uriel(tmp_path) -> None:
    cands = ["de-DE", "fr-FR", "sw-KE", "zh-CN"]
    sel = select_for_target("en-US", "uriel", 2, False, "scores", candidates=cands, root=tmp_path)
    sim = uriel_similarity(["en-US", *cands], root=tmp_path)
    expected = sim.loc["en-US", cands].sort_values(ascending=False).index[:2].tolist()
    assert sel.sources == expected and sel.options == {"feature_set": "syntax_knn"}
    with pytest.raises(InputError, match="num_sources=5"):
        select_for_target("en-US", "uriel", 5, False, "scores", candidates=cands, root=tmp_path)
