"""`merginguriel similarity`: a URIEL or REAL similarity matrix as CSV (indexed by locale) plus a heatmap PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from merginguriel.checkpoints import DEFAULT_ROOT, Layout
from merginguriel.errors import InputError
from merginguriel.io import atomic_dir, write_manifest
from merginguriel.locales import LOCALES
from merginguriel.similarity.matrix import SIMILARITY_KINDS, similarity_matrix
from merginguriel.similarity.real import read_nxn
from merginguriel.similarity.uriel import DEFAULT_FEATURE_SET

MATRIX_FILE = "similarity.csv"
HEATMAP_FILE = "heatmap.png"


def write_similarity(
    kind: str = "uriel",
    output: str = "similarity",
    locales: Optional[list[str]] = None,
    backbone: Optional[str] = None,
    root: str = str(DEFAULT_ROOT),
    nxn: Optional[str] = None,
    feature_set: str = DEFAULT_FEATURE_SET,
    overwrite: bool = False,
) -> Path:
    """Compute a similarity matrix and write ``similarity.csv`` (S.loc[target, source]), ``heatmap.png`` and a manifest.

    Args:
        kind: ``uriel`` (lang2vec cosine of ``feature_set``, mapped to [0, 1]), ``uriel_<distance>`` (urielplus
            1 - distance: genetic, syntactic, featural, phonological, inventory, geographic, script) or ``real``
            (from the NxN matrix: S.loc[target, source] = accuracy of source's model on target's data).
        output: output folder (written atomically).
        locales: locales to include; default: the fine-tuned locales of ``backbone`` if given, the NxN's locales for
            ``real``, otherwise all MASSIVE locales.
        backbone: backbone whose fine-tuned locales are the default set.
        root: checkpoints root (also holds the URIEL cache under ``cache/similarity``).
        nxn: the NxN ``evaluation_matrix.csv`` (``real`` only; the validation split keeps the test split unseen).
        feature_set: lang2vec feature set for ``uriel``.
        overwrite: replace an existing output folder.
    """
    if kind not in SIMILARITY_KINDS:
        raise InputError(f"unknown similarity kind {kind!r}; choose one of: {', '.join(SIMILARITY_KINDS)}")
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; choose another --output or pass --overwrite true")
    if locales is None:
        if backbone is not None:
            locales = Layout.for_backbone(backbone, root).finetuned_locales()
            if not locales:
                raise InputError(f"no fine-tuned models for backbone {backbone} under {root}; pass --locales explicitly")
        elif kind == "real" and nxn is not None:
            frame = read_nxn(nxn)
            locales = [loc for loc in frame.index if loc in set(frame.columns)]
        else:
            locales = list(LOCALES)
    matrix = similarity_matrix(kind, list(locales), nxn_csv=nxn, feature_set=feature_set, root=root)
    from merginguriel.report.plots import heatmap

    title = f"{kind} similarity" + (f" ({feature_set})" if kind == "uriel" else "")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        matrix.index.name = "target"
        matrix.to_csv(tmp / MATRIX_FILE, float_format="%.6f")
        heatmap(matrix, tmp / HEATMAP_FILE, title, xlabel="source", ylabel="target")
        write_manifest(tmp, "similarity", similarity=kind, feature_set=feature_set if kind == "uriel" else None,
                       nxn=str(nxn) if kind == "real" else None, locales=list(matrix.index),
                       convention="S.loc[target, source]")
    return out


def main(argv: list[str]) -> int:
    """`merginguriel similarity`."""
    import pandas as pd
    from merginguriel.cli.function import parse_function_args

    kwargs = parse_function_args(write_similarity, argv, "merginguriel similarity")
    out = write_similarity(**kwargs)
    matrix = pd.read_csv(out / MATRIX_FILE, index_col=0)
    with pd.option_context("display.width", 200, "display.max_columns", 12):
        print(matrix.round(3).to_string() if len(matrix) <= 12 else matrix.round(3))
    print(f"\n{kwargs['kind']} similarity of {len(matrix)} locales written to {out / MATRIX_FILE} (+ {HEATMAP_FILE})")
    return 0
