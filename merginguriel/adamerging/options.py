"""The parameters of AdaMerging (``merge.params`` of ``merge.method: adamerging``, also given as the ``adamerging``
section: ``--adamerging.steps 100``); its Trainer settings are the job's ``trainer`` section (merginguriel.training)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from merginguriel.errors import InputError


@dataclass(frozen=True)
class AdaMergingOptions:
    """AdaMerging settings (see methods.md).

    Defaults: the paper's 500 steps, init 0.3 and clamp to [0, 1], layer-wise, but Adam lr 1e-2 instead of its 1e-3.
    Adam moves a coefficient by about lr per step while the gradient's sign holds, so 1e-3 can move λ by at most 0.1 in
    100 steps (every λ ended at 0.393 from 0.3 in the reference runs) and 0.5 in 500. Measured on the embedded
    default (targets pt-PT and es-ES, K = 3 REAL sources, layer-wise): at lr 1e-2 the entropy levels off within
    ~100 steps (3.0 -> 0.75 nats on es-ES), the sources' mean coefficients separate (0.30 -> 0.60 / 0.49 / 0.38),
    and test accuracy is at or above the starting merge (es-ES 0.380 -> 0.437, pt-PT 0.340 -> 0.403; lr 1e-3 for 500
    steps: 0.447, 0.397). Task-wise, entropy minimisation drives every coefficient up to the clamp (Σλ -> K, a
    sharper but wrong model: pt-PT test 0.12 at lr 1e-2, 0.30 at 1e-3): prefer layer-wise, or fewer steps / a
    lower lr for ``granularity: task``. The step log, the manifest (``adaptation.trajectory``) and
    ``adamerging.png`` beside the model show the entropy curve and every source's coefficients per step.

    Args:
        granularity: ``task`` (one coefficient per source) or ``layer`` (one per source and parameter tensor).
        plus_plus: AdaMerging++: learn coefficients over TIES-processed task vectors.
        ties_density: the TIES keep fraction used by ``plus_plus``.
        init: ``weights`` (start from the selection's source weights) or ``constant`` (``init_value`` for every coefficient).
        init_value: the constant prior.
        clamp: keep coefficients in [0, 1] after every step.
        lr: Adam learning rate.
        steps: optimisation steps.
        batch_size: unlabelled utterances per step (global, across all devices).
        split: the target split whose utterances (labels unused) drive the entropy; ``test`` leaks the evaluation data
            and needs ``allow_test_split``.
        allow_test_split: explicit consent to adapt on the test split (a warning is printed and recorded).
        max_examples: cap on the number of target utterances used (None: the whole split).
        task_vector_dtype: dtype the task vectors are held in on the device.
        embedding: ``shared`` (one coefficient per source for the word-embedding matrix, applied only to the rows of the
            tokens in each batch) or ``frozen`` (the embedding matrix takes the initial coefficients).
        embedding_storage: where the word-embedding matrices of the base and the sources live: ``file`` (read from
            the checkpoint files, only the rows of each batch's tokens, so they never occupy memory) or ``device``
            (their task vectors held on the device like every other tensor). Both give identical results;
            ``plus_plus`` always uses ``device`` (TIES trims over the whole task vector).
        seed: seed for data order and initialisation.
        checkpoint_every: save a Lightning checkpoint (the coefficients and optimiser state) every this many steps.
        resume: ``auto`` (continue from the run's last Lightning checkpoint when one exists), ``never``, or the path
            of a ``.ckpt`` file to continue from.
        tensorboard: also log to TensorBoard (a CSV log is always written).
    """

    granularity: Literal["task", "layer"] = "layer"
    plus_plus: bool = False
    ties_density: float = 0.2
    init: Literal["weights", "constant"] = "constant"
    init_value: float = 0.3
    clamp: bool = True
    lr: float = 1e-2
    steps: int = 500
    batch_size: int = 16
    split: Literal["train", "validation", "test"] = "validation"
    allow_test_split: bool = False
    max_examples: Optional[int] = None
    task_vector_dtype: Literal["float32", "bfloat16"] = "float32"
    embedding: Literal["shared", "frozen"] = "shared"
    embedding_storage: Literal["file", "device"] = "file"
    seed: int = 42
    checkpoint_every: int = 50
    resume: str = "auto"
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.split == "test" and not self.allow_test_split:
            raise InputError(
                "adamerging.split=test adapts on the evaluation data (test-set leakage); use validation (the default) or "
                "train, or pass --adamerging.allow_test_split true to accept the leak (it is recorded in the manifest)"
            )
        if self.steps < 1:  # zero steps would write the initial coefficients as if they had been adapted
            raise InputError(
                f"adamerging.steps={self.steps}: AdaMerging needs at least one optimisation step (the paper's 500 is the "
                "default); for the merge with the initial coefficients unadapted use task_arithmetic"
            )
        if self.batch_size < 1 or self.lr < 0:
            raise InputError(
                f"adamerging needs batch_size >= 1 and lr >= 0 (got batch_size={self.batch_size}, lr={self.lr})"
            )
        if not 0 < self.ties_density <= 1:
            raise InputError(f"adamerging.ties_density must be in (0, 1], got {self.ties_density}")
        if self.resume not in ("auto", "never") and not Path(self.resume).is_file():
            raise InputError(f"adamerging.resume={self.resume!r} is not a checkpoint file; use auto, never or a .ckpt path")
