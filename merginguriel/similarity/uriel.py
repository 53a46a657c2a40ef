"""URIEL language similarity for MASSIVE locales, from the URIEL data that lang2vec and urielplus ship offline.

Two families, both returned as a square ``pandas.DataFrame`` indexed (rows and columns) by locale with values in [0, 1]:

* ``kind="uriel"``: cosine similarity of lang2vec feature vectors mapped to [0, 1] by ``(cos + 1) / 2``. The feature set
  defaults to ``syntax_knn`` (what the reference runs used; the ``*_knn`` sets are fully imputed); any lang2vec set can
  be chosen. For sets with missing values (``--``) the cosine is taken over the features both languages have.
* ``kind="uriel_<distance>"`` for genetic, syntactic, featural, phonological, inventory, geographic, script:
  ``1 - distance`` with urielplus's ``new_distance`` (angular distance over the features both languages have).

Locales map to ISO 639-3 through ``merginguriel.locales.ISO639_3``; where urielplus lacks data for that code but has it
for the macrolanguage (``ISO639_3_MACRO``, e.g. arb -> ara for inventory, pes -> fas for script) the macro code is used; zh-CN and zh-TW share ``cmn`` so their similarity is
1 (URIEL cannot tell them apart). Matrices are cached as CSV (indexed by ISO code) under ``<root>/cache/similarity``
because urielplus is slow (initialisation ~1 s, the 51-language genetic matrix ~3 min); a cached matrix over any
superset of the requested codes is sliced, which is exact because every entry depends only on its pair of languages.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from merginguriel.checkpoints import DEFAULT_ROOT
from merginguriel.errors import InputError
from merginguriel.io import atomic_write_text
from merginguriel.locales import ISO639_3, ISO639_3_MACRO, check_locales

URIEL_DISTANCES: tuple[str, ...] = ("genetic", "syntactic", "featural", "phonological", "inventory", "geographic", "script")
DEFAULT_FEATURE_SET = "syntax_knn"
# lang2vec's `learned` set fails under current numpy (see environment notes), so it is not offered.
LANG2VEC_FEATURE_SETS: tuple[str, ...] = (
    "syntax_wals", "phonology_wals", "syntax_sswl", "syntax_ethnologue", "phonology_ethnologue", "inventory_ethnologue",
    "inventory_phoible_aa", "inventory_phoible_gm", "inventory_phoible_saphon", "inventory_phoible_spa",
    "inventory_phoible_ph", "inventory_phoible_ra", "inventory_phoible_upsid", "syntax_knn", "phonology_knn",
    "inventory_knn", "syntax_average", "phonology_average", "inventory_average", "fam", "id", "geo",
)
URIEL_KINDS: tuple[str, ...] = ("uriel", *(f"uriel_{d}" for d in URIEL_DISTANCES))

_URIELPLUS = None


class MissingUrielData(InputError):
    """URIEL holds no usable data for some languages (``codes``) in the chosen feature set or distance."""

    def __init__(self, message: str, codes: list[str]):
        super().__init__(message)
        self.codes = list(codes)


@contextlib.contextmanager
def quiet_uriel() -> Iterator[None]:
    """Silence urielplus (which logs every call at INFO through the root logger) and lang2vec's import warning."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _urielplus():
    global _URIELPLUS
    if _URIELPLUS is None:
        with quiet_uriel():
            from urielplus import urielplus

            _URIELPLUS = urielplus.URIELPlus()
    return _URIELPLUS


def _lang2vec():
    with quiet_uriel():
        import lang2vec.lang2vec as l2v
    return l2v


def lang2vec_vectors(codes: list[str], feature_set: str = DEFAULT_FEATURE_SET) -> dict[str, np.ndarray]:
    """lang2vec feature vectors, missing values (``--``) as NaN."""
    if feature_set not in LANG2VEC_FEATURE_SETS:
        raise InputError(
            f"unknown lang2vec feature set {feature_set!r}; choose one of: {', '.join(LANG2VEC_FEATURE_SETS)}"
        )
    l2v = _lang2vec()
    with quiet_uriel():
        try:
            feats = l2v.get_features(list(codes), feature_set)
        except Exception as err:  # lang2vec raises a bare Exception naming an unknown language
            unknown = [c for c in codes if c in str(err)] or list(codes)
            raise MissingUrielData(f"lang2vec cannot look up {', '.join(unknown)}: {err}".strip(), unknown) from None
    return {c: np.array([np.nan if v == "--" else float(v) for v in feats[c]], dtype=float) for c in codes}


def cosine_similarity_matrix(vectors: dict[str, np.ndarray], what: str) -> pd.DataFrame:
    """(cos + 1) / 2 for every pair, over the features both vectors have; an InputError names codes without data."""
    codes = list(vectors)
    empty = [c for c in codes if not np.isfinite(vectors[c]).any() or not np.any(np.nan_to_num(vectors[c]))]
    if empty:
        raise MissingUrielData(f"no {what} data for ISO 639-3 code(s) {', '.join(empty)}", empty)
    out = np.eye(len(codes))
    bad_pairs: list[tuple[str, str]] = []
    for i, a in enumerate(codes):
        for j in range(i + 1, len(codes)):
            b = codes[j]
            mask = np.isfinite(vectors[a]) & np.isfinite(vectors[b])
            u, v = vectors[a][mask], vectors[b][mask]
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            if nu == 0 or nv == 0:
                bad_pairs.append((a, b))
                continue
            cos = float(np.clip(u @ v / (nu * nv), -1.0, 1.0))
            out[i, j] = out[j, i] = (cos + 1.0) / 2.0
    if bad_pairs:
        raise MissingUrielData(
            f"no shared non-zero {what} features for pair(s) {', '.join(f'{a}-{b}' for a, b in bad_pairs)}",
            sorted({c for pair in bad_pairs for c in pair}),
        )
    return pd.DataFrame(out, index=codes, columns=codes)


def _codes_covering_missing(missing: np.ndarray, codes: list[str]) -> list[str]:
    """The few codes to blame for the missing pairs: greedily the code in most missing pairs, until none is left."""
    missing = missing.copy()
    blamed = []
    while missing.any():
        i = int(missing.sum(axis=1).argmax())
        blamed.append(codes[i])
        missing[i, :] = False
        missing[:, i] = False
    return sorted(blamed)


def urielplus_similarity_matrix(codes: list[str], distance: str) -> pd.DataFrame:
    """1 - urielplus ``new_distance`` for every pair; pairs urielplus cannot compute (it returns -1) raise InputError."""
    if distance not in URIEL_DISTANCES:
        raise InputError(f"unknown URIEL distance {distance!r}; choose one of: {', '.join(URIEL_DISTANCES)}")
    u = _urielplus()
    with quiet_uriel():
        unknown = [c for c in codes if c not in set(u.langs[0])]
        if unknown:
            raise MissingUrielData(f"ISO 639-3 code(s) {', '.join(unknown)} unknown to urielplus", unknown)
        if len(codes) == 1:
            dist = np.zeros((1, 1))
        elif len(codes) == 2:  # urielplus returns a float (and raises when there is no shared data) for a pair
            try:
                d = float(u.new_distance(distance, list(codes)))
            except ValueError as err:
                raise MissingUrielData(
                    f"urielplus has no shared {distance} data for pair(s) {codes[0]}-{codes[1]}", list(codes)
                ) from err
            dist = np.array([[0.0, d], [d, 0.0]])
        else:
            dist = np.asarray(u.new_distance(distance, list(codes)), dtype=float)
    if (dist < 0).any():
        lacking = _codes_covering_missing(dist < 0, codes)
        raise MissingUrielData(
            f"urielplus has no (shared) {distance} data for ISO 639-3 code(s) {', '.join(lacking)} "
            f"({int((dist < 0).sum()) // 2} pairs cannot be computed)",
            lacking,
        )
    # A language is at distance 0 from itself; urielplus returns rounding noise (up to ~4e-4) on the geographic diagonal.
    np.fill_diagonal(dist, 0.0)
    return pd.DataFrame(1.0 - dist, index=codes, columns=codes)


def _cache_dir(root: str | os.PathLike) -> Path:
    from merginguriel.checkpoints import cache_dir

    return cache_dir(root, "similarity")


def _cache_key(kind: str, feature_set: str) -> str:
    return f"{kind}-{feature_set}" if kind == "uriel" else kind


def _read_cached(cache: Path, key: str, codes: list[str]) -> pd.DataFrame | None:
    if not cache.is_dir():
        return None
    for path in sorted(cache.glob(f"{key}-*.csv")):
        try:
            frame = pd.read_csv(path, index_col=0)
        except (OSError, ValueError, pd.errors.ParserError):
            continue  # a damaged cache file is recomputed, never trusted
        if set(codes) <= set(frame.index) and set(codes) <= set(frame.columns):
            return frame.loc[codes, codes].astype(float)
    return None


def _write_cached(cache: Path, key: str, frame: pd.DataFrame) -> None:
    digest = hashlib.sha256(",".join(frame.index).encode()).hexdigest()[:12]
    atomic_write_text(cache / f"{key}-{digest}.csv", frame.to_csv(float_format="%.10g"))


def uriel_code_matrix(
    codes: list[str], kind: str = "uriel", feature_set: str = DEFAULT_FEATURE_SET, root: str | os.PathLike | None = None
) -> pd.DataFrame:
    """The URIEL similarity between ISO 639-3 codes (cached under ``<root>/cache/similarity`` when ``root`` is given)."""
    codes = sorted(set(codes))
    key = _cache_key(kind, feature_set)
    if root is not None and (hit := _read_cached(_cache_dir(root), key, codes)) is not None:
        return hit
    if kind == "uriel":
        frame = cosine_similarity_matrix(lang2vec_vectors(codes, feature_set), f"lang2vec {feature_set}")
    elif kind.startswith("uriel_") and kind[len("uriel_"):] in URIEL_DISTANCES:
        frame = urielplus_similarity_matrix(codes, kind[len("uriel_"):])
    else:
        raise InputError(f"unknown URIEL similarity kind {kind!r}; choose one of: {', '.join(URIEL_KINDS)}")
    if root is not None:
        _write_cached(_cache_dir(root), key, frame)
    return frame


def _name_locales(err: MissingUrielData, code_of: dict[str, str]) -> MissingUrielData:
    named = [f"{loc} ({code})" for loc, code in code_of.items() if code in err.codes]
    return MissingUrielData(
        f"{err} -- locale(s) without data: {', '.join(named)}; choose another similarity kind or feature set "
        "(the default `uriel` with syntax_knn covers every MASSIVE locale), or drop these locales",
        err.codes,
    )


def uriel_similarity(
    locales: list[str],
    kind: str = "uriel",
    feature_set: str = DEFAULT_FEATURE_SET,
    root: str | os.PathLike | None = DEFAULT_ROOT,
) -> pd.DataFrame:
    """Square URIEL similarity between MASSIVE locales, values in [0, 1], symmetric, 1 on the diagonal.

    Args:
        locales: MASSIVE locales (validated; order kept).
        kind: ``uriel`` (lang2vec cosine) or ``uriel_<distance>`` (urielplus 1 - distance).
        feature_set: the lang2vec feature set for ``kind="uriel"``.
        root: checkpoints root whose ``cache/similarity`` folder caches matrices; None disables the cache.
    """
    locales = check_locales(locales)
    if not locales:
        raise InputError("no locales given; pass at least one MASSIVE locale")
    code_of = {loc: ISO639_3[loc] for loc in locales}
    try:
        frame = uriel_code_matrix(sorted(set(code_of.values())), kind, feature_set, root)
    except MissingUrielData as err:
        # Where an individual-language code lacks data, the macrolanguage code may hold it (e.g. arb -> ara): retry once.
        swapped = {loc: ISO639_3_MACRO[loc] for loc, c in code_of.items() if c in err.codes and loc in ISO639_3_MACRO}
        if not swapped:
            raise _name_locales(err, code_of) from None
        code_of.update(swapped)
        try:
            frame = uriel_code_matrix(sorted(set(code_of.values())), kind, feature_set, root)
        except MissingUrielData as err2:
            raise _name_locales(err2, code_of) from None
    iso = [code_of[loc] for loc in locales]
    values = frame.loc[iso, iso].to_numpy(dtype=float)
    values = np.clip(values, 0.0, 1.0)
    return pd.DataFrame(values, index=list(locales), columns=list(locales))
