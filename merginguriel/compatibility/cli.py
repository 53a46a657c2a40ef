"""`merginguriel compatibility`: the N x N compatibility matrix of fine-tuned source models (task-vector cosine or CKA)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, Optional

from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError


def compatibility(
    backbone: str = "embedded",
    root: str = "checkpoints",
    locales: Optional[list[str]] = None,
    kind: Literal["cosine", "cka"] = "cosine",
    exclude: Optional[list[str]] = None,
    split: Literal["train", "validation"] = "validation",
    max_examples: int = 256,
    data: DataConfig = DataConfig(),
    output: Optional[str] = None,
    overwrite: bool = False,
    device: str = "auto",
) -> Path:
    """Compute the compatibility matrix of fine-tuned models and write ``matrix.csv`` + ``manifest.json``.

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
        overwrite: replace an existing output.
        device: device for the CKA forward passes.
    """
    from merginguriel.checkpoints import is_finished
    from merginguriel.checkpoints import Layout
    from merginguriel.io import atomic_dir, write_manifest
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
    out = Path(output) if output else layout.home / "compatibility" / kind
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --overwrite true to replace it or choose another --output")
    models = {loc: layout.finetuned(loc) for loc in locales}
    start = time.perf_counter()
    if kind == "cosine":
        from merginguriel.compatibility.cosine import task_vector_cosine

        frame = task_vector_cosine(layout.base, models, exclude=exclude)
    else:
        from merginguriel.compatibility.cka import cka_matrix

        frame = cka_matrix(models, locales, split=split, data=data, max_examples=max_examples, device=device)
    seconds = time.perf_counter() - start
    with atomic_dir(out, overwrite=overwrite) as tmp:
        frame.to_csv(tmp / "matrix.csv", float_format="%.6f")
        write_manifest(
            tmp,
            kind="compatibility",
            metric=kind,
            locales=locales,
            base=str(layout.base),
            exclude=exclude or [],
            split=split if kind == "cka" else None,
            max_examples=max_examples if kind == "cka" else None,
            timings={"total_s": round(seconds, 3)},
        )
    return out


def main(argv: list[str]) -> int:
    from merginguriel.cli.function import parse_function_args

    kwargs = parse_function_args(compatibility, argv, "merginguriel compatibility")
    out = compatibility(**kwargs)
    import pandas as pd

    frame = pd.read_csv(out / "matrix.csv", index_col=0)
    print(frame.round(4).to_string())
    print(f"\ncompatibility ({kwargs['kind']}) written to {out / 'matrix.csv'}")
    return 0
