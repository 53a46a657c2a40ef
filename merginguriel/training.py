"""The Lightning Trainer settings a merge method that trains exposes (``--trainer.*``): a method whose ``Needs`` ask
for a trainer gets them from the job's ``trainer`` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class TrainerOptions:
    """The Lightning Trainer settings of a method that trains (`--trainer.devices 4 --trainer.strategy ddp`).

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

    def identity(self) -> dict:
        """The settings that change what a training computes (the rest only say where and how fast)."""
        return {"precision": self.precision, "deterministic": self.deterministic}
