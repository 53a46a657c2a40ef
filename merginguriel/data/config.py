"""Where MASSIVE data comes from, as one small value every command shares (fit, nxn, merge --evaluate, experiments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from merginguriel.checkpoints import DEFAULT_ROOT

DataSourceKind = Literal["embedded", "release", "hub"]

# The default evaluation batch (rows) everywhere: evaluation keeps no activations for a backward pass, so it affords
# twice the rows of a training batch, and fewer batches means less per-batch overhead (benchmarks/results/nxn.md).
EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class DataConfig:
    """MASSIVE data source and tokenisation settings.

    Args:
        source: ``embedded`` (generated offline, the default), ``release`` (the official jsonl files or tarball at
            ``data_path``) or ``hub`` (``AmazonScience/massive`` through its parquet revision).
        data_path: the release folder (holding ``1.1/data/<locale>.jsonl`` or ``data/<locale>.jsonl``) or the
            ``.tar.gz`` itself; only for ``release``.
        root: the checkpoints root; the embedded data and the tokenisation cache live under it.
        max_length: tokenisation length limit (the reference recipe uses 128).
    """

    source: DataSourceKind = "embedded"
    data_path: Optional[str] = None
    root: str = DEFAULT_ROOT
    max_length: int = 128

    def key(self, split: str) -> str:
        """What decides an evaluation besides the model: the data source, its path, the length limit and the split."""
        import json

        return json.dumps({"source": self.source, "data_path": self.data_path, "max_length": self.max_length,
                           "split": split}, sort_keys=True)


@dataclass(frozen=True)
class DataSource:
    """Where MASSIVE data comes from, without the checkpoints root (a merge job and a sweep give the root once).

    Args:
        source: ``embedded`` (generated offline, the default), ``release`` (the official jsonl files or tarball at
            ``data_path``) or ``hub`` (``AmazonScience/massive`` through its parquet revision).
        data_path: the release folder or ``.tar.gz`` (``release`` only).
        max_length: tokenisation length limit.
    """

    source: DataSourceKind = "embedded"
    data_path: Optional[str] = None
    max_length: int = 128

    def at(self, root: str) -> DataConfig:
        """The full data config under a checkpoints root (which holds the embedded data and the tokenisation cache)."""
        return DataConfig(source=self.source, data_path=self.data_path, root=str(root), max_length=self.max_length)
