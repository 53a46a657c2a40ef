"""`merginguriel nxn`."""

from __future__ import annotations

from typing import Literal, Optional

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED
from merginguriel.data.config import EVAL_BATCH_SIZE, DataSource


def nxn(
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    split: Literal["validation", "test"] = "validation",
    locales: Optional[list[str]] = None,
    models: Optional[list[str]] = None,
    data: DataSource = DataSource(),
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    output: Optional[str] = None,
    chunk: int = 0,
    progress: bool = True,
) -> int:
    """Evaluate every fine-tuned model on every locale's split: the NxN transfer matrix (resumable, cell by cell).

    Args:
        backbone: the backbone whose fine-tuned models are evaluated.
        root: the checkpoints root.
        split: ``validation`` (REAL similarity and every choice read it) or ``test`` (final numbers only).
        locales: evaluated locales (columns); default: the models' locales.
        models: source model locales (rows); default: every finished fine-tune of the backbone.
        data: the MASSIVE data source.
        batch_size: evaluation batch size.
        device: ``auto``, ``cpu`` or ``cuda``.
        output: output folder (default ``<root>/<backbone>/nxn/<split>``).
        chunk: locales per evaluation call (0: all of a model's missing locales in one call).
        progress: show a progress bar.
    """
    import json

    import pandas as pd

    from merginguriel.checkpoints import NXN_MATRIX, NXN_SUMMARY
    from merginguriel.evaluation.nxn import compute_nxn

    folder = compute_nxn(backbone=backbone, root=root, split=split, locales=locales, models=models, data=data.at(root),
                         batch_size=batch_size, device=device, output=output, chunk=chunk, progress=progress)
    matrix = pd.read_csv(folder / NXN_MATRIX, index_col=0)
    summary = json.loads((folder / NXN_SUMMARY).read_text(encoding="utf-8"))
    print(matrix.round(4).to_string())
    t = summary["timings"]
    print(f"\n{summary['cells']['computed']} cell(s) computed, {summary['cells']['resumed']} resumed, "
          f"{summary['loads']} model load(s), {t['total_s']} s")
    print(f"NxN matrix ({split}) written to {folder / NXN_MATRIX}")
    return 0
