"""URIEL and REAL similarity against direct lang2vec / urielplus calls and the NxN convention; the similarity CLI."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from merginguriel.cli.main import main as cli_main
from merginguriel.errors import InputError
from merginguriel.locales import ISO639_3, LOCALES
from merginguriel.similarity import real_similarity, similarity_matrix, uriel_similarity
from merginguriel.similarity import uriel as uriel_mod


def direct_l2v_cosine(a: str, b: str, feature_set: str = "syntax_knn") -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import lang2vec.lang2vec as l2v
    f = l2v.get_features([a, b], feature_set)
    u, v = np.array(f[a], dtype=float), np.array(f[b], dtype=float)
    return (float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))) + 1) / 2


def direct_urielplus(kind: str, a: str, b: str) -> float:
    logging.disable(logging.INFO)
    try:
        return 1.0 - float(uriel_mod._urielplus().new_distance(kind, [a, b]))
    finally:
        logging.disable(logging.NOTSET)


PAIRS = [("en-US", "de-DE"), ("sw-KE", "fi-FI"), ("ja-JP", "ko-KR")]


def test_uriel_cosine_matches_lang2vec(tmp_path) -> None:
    locs = sorted({loc for pair in PAIRS for loc in pair})
    sim = uriel_similarity(locs, root=tmp_path)
    for a, b in PAIRS:
        assert sim.at[a, b] == pytest.approx(direct_l2v_cosine(ISO639_3[a], ISO639_3[b]), abs=1e-9)
    sim2 = uriel_similarity(locs, feature_set="phonology_knn", root=None)
    assert sim2.at["en-US", "de-DE"] == pytest.approx(direct_l2v_cosine("eng", "deu", "phonology_knn"), abs=1e-9)


@pytest.mark.parametrize("kind", ["syntactic", "geographic", "featural"])
def test_uriel_distances_match_urielplus(kind, tmp_path) -> None:
    locs = sorted({loc for pair in PAIRS for loc in pair})
    sim = uriel_similarity(locs, kind=f"uriel_{kind}", root=tmp_path)
    for a, b in PAIRS:
        assert sim.at[a, b] == pytest.approx(direct_urielplus(kind, ISO639_3[a], ISO639_3[b]), abs=1e-6)


def test_genetic_pair_matches_urielplus() -> None:
    sim = uriel_similarity(["en-US", "de-DE"], kind="uriel_genetic", root=None)
    assert sim.at["en-US", "de-DE"] == pytest.approx(direct_urielplus("genetic", "eng", "deu"), abs=1e-6)


@pytest.mark.parametrize("kind", ["uriel", "uriel_syntactic", "uriel_geographic", "uriel_featural", "uriel_script"])
def test_every_locale_resolves_symmetric_in_range(kind, tmp_path) -> None:
    sim = uriel_similarity(list(LOCALES), kind=kind, root=tmp_path)
    assert list(sim.index) == list(sim.columns) == list(LOCALES)
    values = sim.to_numpy()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    np.testing.assert_allclose(values, values.T)
    np.testing.assert_allclose(np.diag(values), 1.0)
    assert sim.at["zh-CN", "zh-TW"] == 1.0  # one ISO code: URIEL cannot tell them apart


def test_macro_code_fallback_for_script() -> None:
    # urielplus has no script data for pes, but has it for the macrolanguage fas.
    sim = uriel_similarity(["fa-IR", "en-US"], kind="uriel_script", root=None)
    assert sim.at["fa-IR", "en-US"] == pytest.approx(direct_urielplus("script", "fas", "eng"), abs=1e-6)


def test_locale_without_data_is_named() -> None:
    with pytest.raises(InputError, match=r"it-IT \(ita\)"):
        uriel_similarity(["it-IT", "en-US", "de-DE"], kind="uriel_phonological", root=None)


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="unknown locale"):
        uriel_similarity(["en-US", "xx-YY"], root=None)
    with pytest.raises(InputError, match="unknown similarity kind"):
        similarity_matrix("uriel_morphology", ["en-US", "de-DE"], root=None)
    with pytest.raises(InputError, match="feature set"):
        uriel_similarity(["en-US", "de-DE"], feature_set="syntax_nope", root=None)
    with pytest.raises(InputError, match="needs the NxN matrix"):
        similarity_matrix("real", ["en-US", "de-DE"])


def test_cache_is_used_and_sliced(tmp_path, monkeypatch) -> None:
    full = uriel_similarity(["en-US", "de-DE", "fr-FR", "sw-KE"], root=tmp_path)
    assert list((tmp_path / "cache" / "similarity").glob("uriel-syntax_knn-*.csv"))

    def fail(*args, **kwargs):
        raise AssertionError("the library was called although the matrix is cached")

    monkeypatch.setattr(uriel_mod, "lang2vec_vectors", fail)
    part = uriel_similarity(["sw-KE", "en-US"], root=tmp_path)
    assert part.at["sw-KE", "en-US"] == pytest.approx(full.at["sw-KE", "en-US"])


def write_nxn(path, rows: dict[str, dict[str, float]]):
    frame = pd.DataFrame(rows).T
    frame.index.name = "source"
    frame.to_csv(path)
    return path


def test_real_direction_column_is_target(tmp_path) -> None:
    # nxn.loc[source, target]: es model scores 0.9 on it-IT, it model scores 0.3 on es-ES.
    csv = write_nxn(tmp_path / "m.csv", {"es-ES": {"es-ES": 0.95, "it-IT": 0.9}, "it-IT": {"es-ES": 0.3, "it-IT": 0.97}})
    real = real_similarity(csv)
    assert real.at["it-IT", "es-ES"] == 0.9  # S.loc[target, source] = acc(source model on target)
    assert real.at["es-ES", "it-IT"] == 0.3
    assert similarity_matrix("real", ["es-ES", "it-IT"], nxn_csv=csv).equals(real)


def test_real_missing_cells_listed(tmp_path) -> None:
    csv = write_nxn(tmp_path / "m.csv", {"es-ES": {"es-ES": 0.9, "it-IT": np.nan}, "it-IT": {"es-ES": 0.3, "it-IT": 0.9}})
    with pytest.raises(InputError, match=r"es-ES->it-IT"):
        real_similarity(csv)
    with pytest.raises(InputError, match=r"fr-FR->es-ES.*fr-FR->fr-FR|fr-FR->es-ES"):
        real_similarity(csv, ["es-ES", "fr-FR"])
    with pytest.raises(InputError, match="not found"):
        real_similarity(tmp_path / "absent.csv")


def test_similarity_cli_writes_csv_and_heatmap(tmp_path, capsys) -> None:
    out = tmp_path / "sim"
    status = cli_main(["similarity", "--kind", "uriel", "--locales", "[en-US, de-DE, sw-KE]", "--output", str(out),
                       "--root", str(tmp_path)])
    assert status == 0
    frame = pd.read_csv(out / "similarity.csv", index_col=0)
    assert list(frame.index) == ["en-US", "de-DE", "sw-KE"]
    assert frame.at["en-US", "sw-KE"] == pytest.approx(direct_l2v_cosine("eng", "swh"), abs=1e-6)
    assert (out / "heatmap.png").stat().st_size > 0 and (out / "manifest.json").is_file()
    # a locale without data: error, nothing written
    bad = tmp_path / "bad"
    assert cli_main(["similarity", "--kind", "uriel_phonological", "--locales", "[it-IT, en-US]", "--output", str(bad)]) == 2
    assert "it-IT" in capsys.readouterr().err and not bad.exists()
    # the same inputs again: reused as it is (a rerun is idempotent)
    stamp = (out / "similarity.csv").stat().st_mtime_ns
    assert cli_main(["similarity", "--kind", "uriel", "--locales", "[en-US, de-DE, sw-KE]", "--output", str(out),
                     "--root", str(tmp_path)]) == 0
    assert "reused" in capsys.readouterr().out and (out / "similarity.csv").stat().st_mtime_ns == stamp
    # an existing output of other inputs is refused, and replaced only with --overwrite
    assert cli_main(["similarity", "--locales", "[en-US, de-DE]", "--output", str(out), "--root", str(tmp_path)]) == 2
    assert "other inputs" in capsys.readouterr().err
    assert cli_main(["similarity", "--locales", "[en-US, de-DE]", "--output", str(out), "--root", str(tmp_path),
                     "--overwrite", "true"]) == 0
    assert list(pd.read_csv(out / "similarity.csv", index_col=0).index) == ["en-US", "de-DE"]


def test_similarity_cli_real(tmp_path, tiny_family_factory) -> None:
    """REAL similarity from a given NxN covers that matrix's models, not the fine-tunes the root happens to hold."""
    csv = write_nxn(tmp_path / "m.csv", {"es-ES": {"es-ES": 0.95, "it-IT": 0.9}, "it-IT": {"es-ES": 0.3, "it-IT": 0.97}})
    tiny_family_factory(["de-DE", "fr-FR"], root=tmp_path / "ck")  # other finished fine-tunes under the root
    out = tmp_path / "real"
    args = ["similarity", "--kind", "real", "--nxn", str(csv), "--root", str(tmp_path / "ck"), "--backbone", "tiny"]
    assert cli_main([*args, "--output", str(out)]) == 0
    frame = pd.read_csv(out / "similarity.csv", index_col=0)
    assert sorted(frame.index) == sorted(frame.columns) == ["es-ES", "it-IT"]
    assert frame.at["it-IT", "es-ES"] == 0.9 and frame.at["es-ES", "it-IT"] == 0.3


def test_every_locale_has_genetic_data() -> None:
    # The full 52-locale genetic matrix takes urielplus ~3 min (see the slow test); each locale against English is quick.
    for loc in LOCALES:
        if loc == "en-US":
            continue
        sim = uriel_similarity([loc, "en-US"], kind="uriel_genetic", root=None)
        assert 0.0 <= sim.at[loc, "en-US"] <= 1.0


@pytest.mark.slow
def test_full_genetic_matrix(tmp_path) -> None:
    sim = uriel_similarity(list(LOCALES), kind="uriel_genetic", root=tmp_path)
    values = sim.to_numpy()
    assert values.min() >= 0 and values.max() <= 1
    np.testing.assert_allclose(values, values.T)
    assert sim.at["en-US", "de-DE"] == pytest.approx(direct_urielplus("genetic", "eng", "deu"), abs=1e-6)
