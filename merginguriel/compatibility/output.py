"""The N x N compatibility matrix of fine-tuned source models (task-vector cosine or CKA), written with a manifest
(`merginguriel compatibility`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, Optional

from merginguriel.checkpoints import COMPATIBILITY_MATRIX, DEFAULT_ROOT, EMBEDDED
from merginguriel.data.config import DataSource
from merginguriel.errors import InputError


def write_compatibility(
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    locales: Optional[list[str]] = None,
    kind: Literal["cosine", "cka"] = "cosine",
    exclude: Optional[list[str]] = None,
    split: Literal["train", "validation"] = "validation",
    max_examples: int = 256,
    data: DataSource = DataSource(),
    output: Optional[str] = None,
    overwrite: bool = False,
    device: str = "auto",
) -> tuple[Path, bool]:
    """Compute the compatibility matrix of fine-tuned models and write ``matrix.csv`` + ``manifest.json``; returns the
    folder and whether an identical earlier result (same models, same settings) was reused.

    Args:
        backbone: backbone whose fine-tunes are compared (``embedded`` or a hub id / folder).
        root: checkpoints root.
        locales: locales to compare (default: every locale with a finished fine-tune).
        kind: ``cosine`` (task vectors against the shared base, streamed tensor by tensor) or ``cka`` (linear CKA of
            final first-token hidden states on shared inputs).
        exclude: tensor-name patterns (fnmatch) left out of the cosine, e.g. ``classifier.*``.
        split: split the CKA inputs come from (never test).
        max_examples: number of shared CKA inputs.
        data: MASSIVE data source for the CKA inputs.
        output: output folder (default ``<root>/<backbone>/compatibility/<kind>``).
        overwrite: replace an output computed from other inputs (an identical one is reused without it).
        device: device for the CKA forward passes.
    """
    from merginguriel.checkpoints import Layout, is_finished
    from merginguriel.io import atomic_dir, checkpoint_ref, write_manifest
    from merginguriel.io.manifest import reusable
    from merginguriel.locales import check_locales

    layout = Layout.for_backbone(backbone, root)
    locales = check_locales(locales) if locales else layout.finetuned_locales()
    missing = [loc for loc in locales if not is_finished(layout.finetuned(loc))]
    if missing:
        raise InputError(
            f"no finished fine-tune for {', '.join(missing)} under {layout.home / 'finetuned'}; "
            "run `merginguriel fit` for them or leave them out of --locales"
        )
    if len(locales) < 2:
        raise InputError(f"compatibility needs at least 2 fine-tuned locales, found {locales}; fine-tune more locales")
    if not is_finished(layout.base):
        raise InputError(f"no shared base at {layout.base}; create it with `merginguriel base --backbone {backbone}`")
    out = Path(output) if output else layout.compatibility(kind)
    models = {loc: layout.finetuned(loc) for loc in locales}
    inputs = {
        "metric": kind, "locales": locales, "base": checkpoint_ref(layout.base)["hash"],
        "models": {loc: checkpoint_ref(p)["hash"] for loc, p in models.items()}, "exclude": exclude or [],
        **({"split": split, "max_examples": max_examples, "data": data.__dict__} if kind == "cka" else {}),
    }
    if reusable(out, inputs, overwrite, "a compatibility matrix"):
        return out, True
    start = time.perf_counter()
    if kind == "cosine":
        from merginguriel.compatibility.cosine import task_vector_cosine

        frame = task_vector_cosine(layout.base, models, exclude=exclude)
    else:
        from merginguriel.compatibility.cka import cka_matrix

        frame = cka_matrix(models, locales, split=split, data=data.at(root), max_examples=max_examples, device=device)
    seconds = time.perf_counter() - start
    with atomic_dir(out, overwrite=True) as tmp:
        frame.to_csv(tmp / COMPATIBILITY_MATRIX, float_format="%.6f")
        write_manifest(tmp, kind="compatibility", inputs=inputs, base=str(layout.base), timings={"total_s": round(seconds, 3)})
    return out, False
