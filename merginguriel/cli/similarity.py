"""`merginguriel similarity`."""

from __future__ import annotations

from typing import Optional

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED


def similarity(
    kind: str = "uriel",
    locales: Optional[list[str]] = None,
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    nxn: Optional[str] = None,
    feature_set: str = "syntax_knn",
    output: Optional[str] = None,
    overwrite: bool = False,
) -> int:
    """A URIEL or REAL language similarity matrix: CSV (S.loc[target, source]) + heatmap.

    Args:
        kind: ``uriel`` (lang2vec cosine), ``uriel_<distance>`` (genetic, syntactic, featural, phonological, inventory,
            geographic, script) or ``real`` (measured transfer, from the validation NxN matrix).
        locales: locales to include (default: the backbone's fine-tuned locales).
        backbone: the backbone whose fine-tuned locales are the default set.
        root: the checkpoints root.
        nxn: the NxN matrix for ``real`` (default: the backbone's validation matrix).
        feature_set: lang2vec feature set of ``uriel``.
        output: output folder (default ``<root>/<backbone>/similarity/<kind>``).
        overwrite: replace an output computed from other inputs (an identical one is reused).
    """
    import pandas as pd

    from merginguriel.checkpoints import SIMILARITY_MATRIX
    from merginguriel.similarity.output import write_similarity

    out, reused = write_similarity(kind, locales, backbone, root, nxn, feature_set, output, overwrite)
    matrix = pd.read_csv(out / SIMILARITY_MATRIX, index_col=0)
    with pd.option_context("display.width", 200, "display.max_columns", 12):
        print(matrix.round(3).to_string() if len(matrix) <= 12 else matrix.round(3))
    print(f"\n{kind} similarity of {len(matrix)} locales {'reused from' if reused else 'written to'} {out / SIMILARITY_MATRIX}")
    return 0
