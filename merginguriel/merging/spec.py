"""What a library merge is asked to do: the base, the sources with their weights, the method and its parameters, the
output, and how to run it (``merginguriel.merging.merge(spec)``; a merge job builds its plan from checked inputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional


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
        params: the method's parameters: a mapping (parsed once, unknown names refused) or its params dataclass.
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
        statistics: per statistics kind a method reads, one folder per source in source order; without them a merge
            given a context computes and caches them (merginguriel.merging.run.MergeContext).
        weights_from: where the weights come from (``given``, ``equal``, a selection's ``similarity`` scores), for
            the methods whose parameters depend on it (linear's ``weighting``).
        memory_mb: working-memory budget for the blocks held at once (all K sources of a block together).
        shard_mb: weights larger than this are written as several safetensors shards plus an index.
        progress: show a progress bar over tensors.
        job: the merge job (merginguriel.jobs) that asked for this merge, recorded in the manifest as given.
    """

    base: Path
    sources: list[Source]
    method: str
    params: Any
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
    weights_from: Literal["given", "equal", "similarity"] = "given"

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        self.output = Path(self.output)
        self.sources = [s if isinstance(s, Source) else Source(**s) for s in self.sources]
        if self.params is None or isinstance(self.params, dict):
            self.params = dict(self.params or {})
        self.exclude = list(self.exclude or [])

    @property
    def options(self) -> "RunOptions":
        return RunOptions(memory_mb=self.memory_mb, shard_mb=self.shard_mb, progress=self.progress, overwrite=self.overwrite)


@dataclass(frozen=True)
class RunOptions:
    """How a checked merge runs (not what it computes).

    Args:
        memory_mb: working-memory budget of the streaming merge (all K sources of a block together).
        shard_mb: weights larger than this are written as several safetensors shards plus an index.
        progress: show a progress bar over tensors.
        overwrite: replace an existing output folder.
    """

    memory_mb: float = 256.0
    shard_mb: float = 2048.0
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        from merginguriel.errors import InputError

        if self.memory_mb <= 0 or self.shard_mb <= 0:
            raise InputError(f"memory_mb and shard_mb must be positive (got {self.memory_mb}, {self.shard_mb})")
