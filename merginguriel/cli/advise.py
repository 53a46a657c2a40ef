"""`merginguriel advise`."""

from __future__ import annotations

from typing import Optional

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED
from merginguriel.data.config import EVAL_BATCH_SIZE, DataSource


def advise(
    target: str,
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    data: DataSource = DataSource(),
    candidates: Optional[list[str]] = None,
    methods: list[str] = ["similarity", "ties"],  # noqa: B006
    num_sources: list[int] = [3, 5],  # noqa: B006
    similarities: list[str] = ["uriel", "real"],  # noqa: B006
    include_target: bool = False,
    weighting: str = "scores",
    params: Optional[dict] = None,
    margin: float = 0.005,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    db: Optional[str] = None,
    output: Optional[str] = None,
) -> int:
    """Merge or not? Pilot merges judged on the target's validation split against the best single source.

    Args:
        target: the target locale.
        backbone: backbone of the fine-tuned models.
        root: the checkpoints root.
        data: the MASSIVE data source.
        candidates: locales allowed as sources (default: every fine-tuned locale but the target).
        methods: pilot merge methods (data-dependent ones included).
        num_sources: pilot values of K.
        similarities: pilot similarity kinds (real is skipped without a validation NxN matrix).
        include_target: IncTar pilots.
        weighting: source weighting.
        params: merge parameters per method, e.g. '{ties: {density: 0.3}}'.
        margin: how much the best merge must beat the best single source by (validation accuracy).
        batch_size: evaluation batch size.
        device: evaluation device.
        db: keep the pilot rows in this results database.
        output: also write the advice as JSON here.
    """
    from merginguriel.experiments.advise import advise as run_advice
    from merginguriel.report.table_text import to_markdown

    advice = run_advice(target, backbone, root, data, candidates, methods, num_sources, similarities, include_target,
                        weighting, params, margin, batch_size, device, db, output)
    print(f"pilot on {advice.target}, judged on the validation split:\n")
    print(to_markdown(advice.evidence, 4))
    for note in advice.notes:
        print(f"note: {note}")
    print(f"\n{advice.summary()}")
    return 0
