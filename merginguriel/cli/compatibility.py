"""`merginguriel compatibility`."""

from __future__ import annotations

from typing import Literal, Optional

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED
from merginguriel.data.config import DataSource


def compatibility(
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
) -> int:
    """The compatibility matrix of fine-tuned source models: task-vector cosine (streamed) or linear CKA.

    Args:
        backbone: the backbone whose fine-tunes are compared.
        root: the checkpoints root.
        locales: locales to compare (default: every finished fine-tune).
        kind: ``cosine`` (task vectors against the shared base) or ``cka`` (hidden states on shared inputs).
        exclude: tensor-name patterns left out of the cosine, e.g. ``classifier.*``.
        split: the split CKA inputs come from (never test).
        max_examples: number of shared CKA inputs.
        data: the MASSIVE data source (CKA).
        output: output folder (default ``<root>/<backbone>/compatibility/<kind>``).
        overwrite: replace an output computed from other inputs (an identical one is reused).
        device: device for the CKA forward passes.
    """
    import pandas as pd

    from merginguriel.checkpoints import COMPATIBILITY_MATRIX
    from merginguriel.compatibility.output import write_compatibility

    out, reused = write_compatibility(backbone, root, locales, kind, exclude, split, max_examples, data, output, overwrite, device)
    print(pd.read_csv(out / COMPATIBILITY_MATRIX, index_col=0).round(4).to_string())
    print(f"\ncompatibility ({kind}) {'reused from' if reused else 'written to'} {out / COMPATIBILITY_MATRIX}")
    return 0
