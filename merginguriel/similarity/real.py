"""REAL similarity: measured cross-lingual transfer, read from the NxN evaluation matrix.

The NxN matrix (``evaluation_matrix.csv``) has row = source model's locale, column = evaluated locale. The REAL score of
source ``s`` for target ``t`` is the accuracy of ``s``'s model on ``t``'s data, so the similarity frame is the transpose:
``S.loc[target, source] = nxn.loc[source, target]`` (the target's column of the NxN matrix becomes its row here). Use the
validation-split matrix (the default of ``merginguriel nxn``) so that the test split stays unseen.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from merginguriel.errors import InputError
from merginguriel.locales import check_locales


def nxn_file(nxn: str | os.PathLike) -> Path:
    """The matrix file of an NxN given as the file or as its folder."""
    from merginguriel.checkpoints import NXN_MATRIX

    path = Path(nxn)
    return path / NXN_MATRIX if path.is_dir() else path


def nxn_split(nxn: str | os.PathLike) -> str | None:
    """The split an NxN matrix was computed on, from the summary `merginguriel nxn` writes beside it (None if unknown)."""
    import json

    from merginguriel.checkpoints import NXN_SUMMARY

    summary = nxn_file(nxn).parent / NXN_SUMMARY
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("split")
    except (OSError, ValueError, AttributeError):
        return None


def nxn_record(nxn: str | os.PathLike) -> dict:
    """Which NxN matrix a choice read: its file, split and SHA-256 (recorded in every manifest that used one)."""
    from merginguriel.io import file_sha256

    path = nxn_file(nxn)
    return {"path": str(path.resolve()), "split": nxn_split(path), "sha256": file_sha256(path)}


def read_nxn(nxn_csv: str | os.PathLike) -> pd.DataFrame:
    """Read an ``evaluation_matrix.csv`` (row = source model locale, column = evaluated locale, accuracy in [0, 1])."""
    path = nxn_file(nxn_csv)
    if not path.is_file():
        raise InputError(
            f"NxN matrix {path} not found; run `merginguriel nxn --split validation` first, or pass the path of its "
            "evaluation_matrix.csv"
        )
    try:
        frame = pd.read_csv(path, index_col=0, float_precision="round_trip")
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{path} is not an NxN matrix CSV ({err}); pass the evaluation_matrix.csv that `merginguriel nxn` wrote") from None
    frame.index = frame.index.astype(str)
    frame.columns = frame.columns.astype(str)
    check_locales(list(frame.index))
    check_locales(list(frame.columns))
    values = frame.to_numpy(dtype=float)
    bad = np.isfinite(values) & ((values < 0) | (values > 1))
    if bad.any():
        cells = [f"{frame.index[i]}->{frame.columns[j]}" for i, j in zip(*np.where(bad))]
        raise InputError(f"{path}: accuracies outside [0, 1] in cell(s) {', '.join(cells[:20])}; the NxN matrix holds accuracies in [0, 1]")
    return frame.astype(float)


def missing_cells(nxn: pd.DataFrame, sources: list[str], targets: list[str]) -> list[str]:
    """``source->target`` cells that the matrix lacks (absent row/column or empty value)."""
    out = []
    for s in sources:
        for t in targets:
            if s not in nxn.index or t not in nxn.columns or not np.isfinite(nxn.at[s, t]):
                out.append(f"{s}->{t}")
    return out


def real_scores(nxn: pd.DataFrame, targets: list[str], sources: list[str], where: str = "the NxN matrix") -> pd.DataFrame:
    """The REAL frame for given targets (rows) and sources (columns): ``S.loc[t, s] = nxn.loc[s, t]``."""
    missing = missing_cells(nxn, sources, targets)
    if missing:
        shown = ", ".join(missing[:30]) + (f", ... ({len(missing)} in all)" if len(missing) > 30 else "")
        raise InputError(
            f"{where} lacks the cell(s) (source model -> evaluated locale) {shown}; run `merginguriel nxn` for these "
            "models and locales (it resumes and fills only the missing cells)"
        )
    return nxn.loc[sources, targets].T.astype(float).copy()


def nxn_locales(nxn: pd.DataFrame) -> list[str]:
    """The locales an NxN matrix covers: those that are both a source model (row) and an evaluated locale (column)."""
    columns = set(nxn.columns)
    return [loc for loc in nxn.index if loc in columns]


def real_similarity(nxn_csv: str | os.PathLike | pd.DataFrame, locales: list[str] | None = None) -> pd.DataFrame:
    """Square REAL similarity over ``locales``: ``S.loc[target, source] = nxn.loc[source, target]``.

    Args:
        nxn_csv: path of ``evaluation_matrix.csv`` (or its folder), or the matrix itself.
        locales: the locales (default: those that are both a model row and an evaluated column, in row order).
            Every (source, target) cell among them must be present; missing ones are listed in the error.
    """
    nxn = nxn_csv if isinstance(nxn_csv, pd.DataFrame) else read_nxn(nxn_csv)
    if locales is None:
        locales = nxn_locales(nxn)
        if not locales:
            raise InputError(
                "the NxN matrix has no locale that is both a source model (row) and an evaluated locale (column); "
                "run `merginguriel nxn` with --locales covering the models' locales"
            )
    locales = check_locales(locales)
    return real_scores(nxn, locales, locales, where=str(nxn_csv) if not isinstance(nxn_csv, pd.DataFrame) else "the NxN matrix")
