"""One entry point for every similarity kind, and the one selection call `merge` and `experiment` use."""

from __future__ import annotations

import os

import pandas as pd

from merginguriel.checkpoints import DEFAULT_ROOT
from merginguriel.errors import InputError, did_you_mean
from merginguriel.locales import LOCALES, as_locale, check_locales
from merginguriel.similarity.real import read_nxn, real_scores, real_similarity
from merginguriel.similarity.selection import DEFAULT_TEMPERATURE, Selection, Weighting, select_sources
from merginguriel.similarity.uriel import DEFAULT_FEATURE_SET, URIEL_KINDS, uriel_similarity

SIMILARITY_KINDS: tuple[str, ...] = (*URIEL_KINDS, "real")


def check_similarity_kind(kind: str, name: str = "similarity kind") -> None:
    """Refuse a similarity kind that is not one of SIMILARITY_KINDS, suggesting the closest and listing them all."""
    if kind not in SIMILARITY_KINDS:
        raise InputError(f"unknown {name} {kind!r}.{did_you_mean(kind, SIMILARITY_KINDS)} Choose one of: {', '.join(SIMILARITY_KINDS)}")


def similarity_matrix(
    kind: str,
    locales: list[str],
    nxn_csv: str | os.PathLike | None = None,
    feature_set: str = DEFAULT_FEATURE_SET,
    root: str | os.PathLike | None = DEFAULT_ROOT,
) -> pd.DataFrame:
    """Square similarity over ``locales`` (index = columns), values in [0, 1], ``S.loc[target, source]``.

    Args:
        kind: ``uriel`` (lang2vec cosine, ``feature_set``), ``uriel_<distance>`` (urielplus 1 - distance) or ``real``.
        locales: MASSIVE locales.
        nxn_csv: the NxN ``evaluation_matrix.csv`` (``real`` only).
        feature_set: lang2vec feature set for ``uriel``.
        root: checkpoints root holding the URIEL cache (``cache/similarity``); None: no cache.
    """
    check_similarity_kind(kind)
    if kind == "real":
        if nxn_csv is None:
            raise InputError("REAL similarity needs the NxN matrix: pass nxn_csv (CLI: --nxn path/to/evaluation_matrix.csv)")
        return real_similarity(nxn_csv, locales)
    return uriel_similarity(locales, kind=kind, feature_set=feature_set, root=root)


def select_for_target(
    target: str,
    similarity: str,
    num_sources: int,
    include_target: bool = False,
    weighting: Weighting = "scores",
    candidates: list[str] | None = None,
    nxn_csv: str | os.PathLike | None = None,
    feature_set: str = DEFAULT_FEATURE_SET,
    root: str | os.PathLike | None = DEFAULT_ROOT,
    temperature: float = DEFAULT_TEMPERATURE,
) -> Selection:
    """Select and weight ``num_sources`` sources for ``target`` by a named similarity.

    Args:
        target: the target locale.
        similarity: a kind of ``similarity_matrix`` (``uriel``, ``uriel_genetic``, ..., ``real``).
        num_sources: K.
        include_target: IncTar (true) or ExcTar (false).
        weighting: ``scores``, ``softmax`` or ``sinkhorn``.
        candidates: locales allowed as sources (normally the locales with a fine-tuned model). Default: for ``real``
            the NxN matrix's model rows, for URIEL kinds every MASSIVE locale.
        nxn_csv: the NxN matrix (``real`` only; use the validation split so the test split stays unseen).
        feature_set: lang2vec feature set (``uriel`` only).
        root: checkpoints root for the URIEL cache.
        temperature: the softmax temperature (``weighting="softmax"``).
    """
    target = as_locale(target)
    check_similarity_kind(similarity, "similarity")
    options: dict = {}
    if similarity == "real":
        if nxn_csv is None:
            raise InputError("REAL similarity needs the NxN matrix: pass nxn_csv (the validation split's evaluation_matrix.csv; selection.nxn in a merge job)")
        nxn = read_nxn(nxn_csv)
        candidates = check_locales(list(nxn.index) if candidates is None else candidates)
        sources = list(dict.fromkeys([*candidates, *([target] if include_target else [])]))
        if weighting == "sinkhorn":
            # Sinkhorn balances the square matrix over the target and its candidates (see selection.py).
            if target not in nxn.index:
                raise InputError(
                    f"Sinkhorn weighting with REAL similarity balances the square NxN matrix over the target and its "
                    f"candidates, but {target} has no model row in {nxn_csv}; use --selection.weighting scores, or fine-tune "
                    f"{target} and rerun `merginguriel nxn`"
                )
            frame = real_similarity(nxn, list(dict.fromkeys([*candidates, target])))
        else:
            frame = real_scores(nxn, [target], sources, where=str(nxn_csv))
    else:
        candidates = check_locales(list(LOCALES) if candidates is None else candidates)
        frame = uriel_similarity(list(dict.fromkeys([*candidates, target])), kind=similarity, feature_set=feature_set, root=root)
        if similarity == "uriel":
            options["feature_set"] = feature_set
    selection = select_sources(target, frame, num_sources, include_target, weighting, candidates, name=similarity,
                               temperature=temperature)
    selection.options.update(options)
    return selection
