"""Options of `merginguriel merge --merge.method adamerging` (the `adamerging.*` and `trainer.*` groups of the merge CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union


@dataclass
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


@dataclass
class TrainerOptions:
    """The Lightning Trainer settings the data-dependent methods expose (`--trainer.devices 4 --trainer.strategy ddp`).

    Args:
        accelerator: ``auto``, ``cpu``, ``gpu``, ...
        devices: number of devices (or ``auto``).
        strategy: ``auto``, ``ddp``, ``ddp_spawn``, ...
        num_nodes: number of nodes.
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ...).
        log_every_n_steps: logging interval.
        default_root_dir: where Lightning writes logs and checkpoints (defaults beside the output).
        deterministic: ask torch for deterministic algorithms.
    """

    accelerator: str = "auto"
    devices: Union[int, str] = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: Optional[str] = None
    log_every_n_steps: int = 1
    default_root_dir: Optional[str] = None
    deterministic: bool = True
