"""What a merge is asked to do: the base, the sources with their weights, the method and its parameters, the output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class Source:
    """One source checkpoint (a Hugging Face folder) and its weight.

    Args:
        path: the checkpoint folder.
        locale: the locale it was fine-tuned on (None for an outside checkpoint without one).
        weight: its merge weight (>= 0; weights are normalised to sum 1 where a method says so).
    """

    path: Path
    locale: Optional[str] = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        self.path = Path(self.path)


@dataclass
class MergeSpec:
    """A merge: ``merge(spec)`` writes ``output`` (HF folder + manifest.json) atomically.

    Args:
        base: the shared base folder every source was fine-tuned from.
        sources: the K sources; every one takes part with its weight.
        method: a registered method name (``merginguriel merge --list``).
        params: the method's parameters (unknown names are refused).
        output: the output folder.
        exclude: tensor-name patterns (glob, or ``re:<regex>``) whose tensors keep the base's values.
        device: ``auto`` (cuda when present, else cpu), ``cpu``, ``cuda``, ``cuda:1``...
        dtype: output dtype: ``float32``, ``float16``, ``bfloat16`` or ``base`` (the base's dtype per tensor).
        seed: seed for random methods (DARE); always recorded.
        target: the target locale (recorded; used by the IncTar/ExcTar check).
        selection: how the sources were chosen (recorded in the manifest as given).
        overwrite: replace an existing output folder.
        include_target: IncTar (True: the target's own model must be a source) / ExcTar (False: it must not be);
            None: not checked.
        statistics: per statistics kind (a method's ``needs``), one folder per source in source order; a merge job
            computes and caches them (merginguriel.statistics.cache.ensure_statistics).
        memory_mb: working-memory budget for the blocks held at once (all K sources of a block together).
        shard_mb: weights larger than this are written as several safetensors shards plus an index.
        progress: show a progress bar over tensors.
        job: the merge job (merginguriel.jobs) that asked for this merge, recorded in the manifest as given.
    """

    base: Path
    sources: list[Source]
    method: str
    params: dict[str, Any]
    output: Path
    exclude: list[str] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 42
    target: Optional[str] = None
    selection: Optional[dict[str, Any]] = None
    overwrite: bool = False
    include_target: Optional[bool] = None
    statistics: Optional[dict[str, list[Path]]] = None
    memory_mb: float = 256.0
    shard_mb: float = 2048.0
    progress: bool = True
    job: Optional[dict[str, Any]] = None

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        self.output = Path(self.output)
        self.sources = [s if isinstance(s, Source) else Source(**s) for s in self.sources]
        self.params = dict(self.params or {})
        self.exclude = list(self.exclude or [])
