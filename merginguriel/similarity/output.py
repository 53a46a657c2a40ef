"""A URIEL or REAL similarity matrix written as CSV (indexed by locale) plus a heatmap PNG (`merginguriel similarity`)."""

from __future__ import annotations


from pathlib import Path
from typing import Optional

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, SIMILARITY_MATRIX, Layout
from merginguriel.io import atomic_dir, write_manifest
from merginguriel.io.manifest import reusable
from merginguriel.locales import LOCALES
from merginguriel.similarity.matrix import check_similarity_kind, similarity_matrix
from merginguriel.similarity.real import nxn_file, nxn_locales, nxn_record, read_nxn
from merginguriel.similarity.uriel import DEFAULT_FEATURE_SET

def write_similarity(
    kind: str = "uriel",
    locales: Optional[list[str]] = None,
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    nxn: Optional[str] = None,
    feature_set: str = DEFAULT_FEATURE_SET,
    output: Optional[str] = None,
    overwrite: bool = False,
) -> tuple[Path, bool]:
    """Compute a similarity matrix and write ``similarity.csv`` (S.loc[target, source]), ``heatmap.png`` and a manifest;
    returns the folder and whether an identical earlier result was reused.

    Args:
        kind: ``uriel`` (lang2vec cosine of ``feature_set``, mapped to [0, 1]), ``uriel_<distance>`` (urielplus
            1 - distance: genetic, syntactic, featural, phonological, inventory, geographic, script) or ``real``
            (from the NxN matrix: S.loc[target, source] = accuracy of source's model on target's data).
        locales: locales to include; default: for ``real`` the NxN's models (those also evaluated as locales), otherwise
            the fine-tuned locales of ``backbone``, else (none fine-tuned) every MASSIVE locale.
        backbone: the backbone whose fine-tuned locales are the default set and under whose folder the output goes.
        root: checkpoints root (also holds the URIEL cache).
        nxn: the NxN matrix (``real`` only; default: the backbone's validation matrix, so the test split stays unseen).
        feature_set: lang2vec feature set for ``uriel``.
        output: output folder (default ``<root>/<backbone>/similarity/<kind>``).
        overwrite: replace an output computed from other inputs (an identical one is reused without it).
    """
    check_similarity_kind(kind)
    layout = Layout.for_backbone(backbone, root)
    name = kind if kind != "uriel" or feature_set == DEFAULT_FEATURE_SET else f"{kind}-{feature_set}"
    out = Path(output) if output else layout.similarity(name)
    nxn_rec = None
    if kind == "real":
        nxn = nxn or str(layout.nxn_matrix("validation"))
        nxn_rec = nxn_record(nxn) if Path(nxn_file(nxn)).is_file() else None
    if locales is None:
        if kind == "real" and nxn_rec is not None:  # the matrix's own models, whatever else the root holds
            locales = nxn_locales(read_nxn(nxn))
        else:
            locales = layout.finetuned_locales() or list(LOCALES)
    inputs = {"similarity": kind, "feature_set": feature_set if kind == "uriel" else None, "nxn": nxn_rec,
              "locales": sorted(locales)}
    if reusable(out, inputs, overwrite, "a similarity matrix"):
        return out, True
    matrix = similarity_matrix(kind, list(locales), nxn_csv=nxn, feature_set=feature_set, root=root)
    from merginguriel.plots import heatmap

    title = f"{kind} similarity" + (f" ({feature_set})" if kind == "uriel" else "")
    with atomic_dir(out, overwrite=True) as tmp:
        matrix.index.name = "target"
        matrix.to_csv(tmp / SIMILARITY_MATRIX, float_format="%.6f")
        heatmap(matrix, tmp / "heatmap.png", title, xlabel="source", ylabel="target")
        write_manifest(tmp, "similarity", inputs=inputs, convention="S.loc[target, source]")
    return out, False
