"""Unlabelled target-locale utterances for AdaMerging, sharded across devices.

Batches are drawn as *global* batches: step ``s`` takes positions ``[s·B, (s+1)·B)`` of a stream of seeded
permutations of the utterances, and rank ``r`` of ``W`` takes its ``r``-th slice of ``B / W`` rows. So every rank sees
a different shard, a run on W devices consumes exactly the utterances a one-device run with the same global batch
consumes, and the batch of any step is known without replaying the ones before it (resuming from a checkpoint
continues the same sequence).
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch

from merginguriel.data.config import DataConfig
from merginguriel.data.loaders import pad_batch
from merginguriel.errors import InputError


def target_utterances(
    data: DataConfig,
    tokenizer,
    locale: str,
    split: str,
    max_examples: int | None = None,
    seed: int = 42,
) -> list[list[int]]:
    """Token ids of ``locale``'s ``split`` utterances (labels are never read); a seeded subset when ``max_examples``."""
    from merginguriel.data import tokenized_split

    rows = tokenized_split(data, tokenizer, locale, split)  # refuses a split without rows, naming the data file
    n = len(rows)
    order = list(range(n))
    if max_examples is not None:
        if max_examples < 1:
            raise InputError(f"max_examples must be at least 1 (or null for the whole split), got {max_examples}")
        gen = torch.Generator().manual_seed(seed)
        order = sorted(torch.randperm(n, generator=gen)[: min(max_examples, n)].tolist())
    offsets = rows.offsets.tolist()
    return [rows.flat[offsets[i] : offsets[i + 1]].tolist() for i in order]


class GlobalBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's rows of global batches ``start .. steps-1`` (see the module docstring)."""

    def __init__(self, n: int, global_batch: int, steps: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if global_batch % world_size:
            raise InputError(
                f"the global batch ({global_batch}) must divide evenly across {world_size} devices; "
                f"set adamerging.batch_size to a multiple of {world_size}"
            )
        self.n, self.global_batch, self.steps, self.seed = n, global_batch, steps, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=gen).tolist()}
        return self._perms[epoch]

    def global_batch_at(self, step: int) -> list[int]:
        """The row indices of global batch ``step``."""
        positions = range(step * self.global_batch, (step + 1) * self.global_batch)
        return [self._perm(p // self.n)[p % self.n] for p in positions]

    def __iter__(self) -> Iterator[list[int]]:
        local = self.global_batch // self.world_size
        for step in range(self.start, self.steps):
            batch = self.global_batch_at(step)
            yield batch[self.rank * local : (self.rank + 1) * local]

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> list[int]:
        return self.rows[i]


class TargetUtterances(L.LightningDataModule):
    """Unlabelled utterances as global batches sharded by rank (run the Trainer with ``use_distributed_sampler=False``).

    Args:
        rows: token id rows.
        pad_id: the tokenizer's padding id.
        global_batch: rows per step over all devices.
        steps: total optimisation steps.
        seed: seed of the row order.
    """

    def __init__(self, rows: list[list[int]], pad_id: int, global_batch: int, steps: int, seed: int = 42):
        super().__init__()
        if not rows:
            raise InputError("no target utterances to adapt on; check the target locale, split and data source")
        self.rows, self.pad_id, self.global_batch, self.steps, self.seed = rows, pad_id, global_batch, steps, seed

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        start = trainer.global_step if trainer is not None else 0  # restored before the loader is built on resume
        sampler = GlobalBatchSampler(len(self.rows), self.global_batch, self.steps, self.seed, rank, world, start)
        pad_id = self.pad_id
        return torch.utils.data.DataLoader(
            _Rows(self.rows), batch_sampler=sampler, collate_fn=lambda rows: pad_batch(rows, pad_id), num_workers=0
        )
