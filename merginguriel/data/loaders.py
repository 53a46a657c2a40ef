"""DataLoaders over tokenised MASSIVE splits: dynamic padding, length-sorted evaluation, length-grouped training.

A loader fetches a whole batch at once and pads it in one vectorised gather (:func:`pad_flat`); evaluation batches are
padded once per split and then shared by every loader over it (every model of an NxN run, every epoch's validation).

Both batch samplers follow PyTorch's ``BatchSampler`` API (``sampler, batch_size, drop_last`` first), so Lightning can
inject a distributed or index-tracking sampler into them; the grouping then applies to whatever indices that sampler yields.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from merginguriel.data.config import EVAL_BATCH_SIZE, DataConfig
from merginguriel.data.tokenized import TokenizedSplit, tokenized_split
from merginguriel.errors import InputError
from merginguriel.locales import check_locales


def pad_flat(flat: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Rows ``flat[starts[i] : starts[i] + lengths[i]]`` right-padded with ``pad_id`` to the longest, in one gather.

    Returns ``{"input_ids", "attention_mask"}`` LongTensors ``[rows, longest]``; no per-row Python, so a batch costs
    microseconds whatever its size. The one padding routine: every loader and batch builder goes through it.
    """
    starts, lengths = starts.long(), lengths.long()
    width = int(lengths.max()) if lengths.numel() else 0
    pos = torch.arange(width)
    mask = pos < lengths[:, None]
    if flat.numel():
        # Positions past a row's end read whatever follows it (clamped inside ``flat``); the mask replaces them.
        ids = torch.where(mask, flat[(starts[:, None] + pos).clamp_(max=flat.numel() - 1)].long(), pad_id)
    else:
        ids = torch.full(mask.shape, pad_id, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask.long()}


def pad_batch(rows: Sequence[Sequence[int] | torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """Token id rows (lists or tensors) right-padded to the longest: ``input_ids`` and ``attention_mask`` LongTensors."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    parts = [torch.as_tensor(r, dtype=torch.long) for r in rows]
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    return pad_flat(flat, starts, lengths, int(pad_id))


class BatchedSplit(Dataset):
    """A tokenised split that a DataLoader reads one batch at a time.

    ``__getitems__(indices)`` (PyTorch's batched fetch) pads those rows with :func:`pad_flat` and adds their labels. With
    ``keep=True`` every padded batch is kept and served again: evaluation batches are length-sorted and so the same on
    every pass and for every model evaluated on the split (the NxN matrix, a sweep's merged models, each validation
    epoch), and are padded once. Training batches differ every epoch, so the training loader does not keep them.
    """

    def __init__(self, split: TokenizedSplit, pad_id: int, keep: bool = False):
        self.split, self.pad_id, self.keep = split, int(pad_id), keep
        self._kept: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.split[i]

    @property
    def labels(self) -> torch.Tensor:
        return self.split.labels

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        key = tuple(indices)
        batch = self._kept.get(key) if self.keep else None
        if batch is None:
            idx = torch.as_tensor(key, dtype=torch.long)
            starts = self.split.offsets[idx]
            batch = pad_flat(self.split.flat, starts, self.split.offsets[idx + 1] - starts, self.pad_id)
            batch["labels"] = self.split.labels[idx]
            if self.keep:
                self._kept[key] = batch
        return dict(batch)  # a new dict each time: nothing downstream can alter the kept one's keys


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``BatchedSplit`` already returns a padded batch; the loader passes it on (a module-level function: picklable)."""
    return batch


# split -> {pad_id: its evaluation view}: every evaluation loader over the same split shares the kept batches.
_EVAL_VIEWS: "weakref.WeakKeyDictionary[TokenizedSplit, dict[int, BatchedSplit]]" = weakref.WeakKeyDictionary()


def eval_view(split: TokenizedSplit, pad_id: int) -> BatchedSplit:
    """The one evaluation view of ``split`` (padded batches kept), shared for as long as the split lives."""
    views = _EVAL_VIEWS.setdefault(split, {})
    if pad_id not in views:
        views[pad_id] = BatchedSplit(split, pad_id, keep=True)
    return views[pad_id]


def pad_id_of(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise InputError(f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token before loading data")
    return int(pad)


class LengthSortedBatchSampler(BatchSampler):
    """Evaluation batches of rows of similar length (longest first), so little compute goes to padding.

    ``order`` lists the dataset index of every row in the order batches yield them; ``to_dataset_order`` undoes it.
    """

    def __init__(self, sampler: Sampler[int] | Sequence[int], batch_size: int, drop_last: bool = False,
                 lengths: Sequence[int] | torch.Tensor | None = None):
        super().__init__(sampler, batch_size, drop_last)
        if lengths is None:
            raise ValueError("LengthSortedBatchSampler needs the row lengths")
        self.lengths = torch.as_tensor(lengths)

    def _batches(self) -> list[list[int]]:
        idx = torch.as_tensor(list(self.sampler), dtype=torch.long)
        # Stable sort, descending: equal lengths keep the sampler's order, and the first batch is the largest.
        idx = idx[torch.sort(self.lengths[idx], descending=True, stable=True).indices].tolist()
        batches = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    @property
    def order(self) -> torch.Tensor:
        return torch.tensor([i for b in self._batches() for i in b], dtype=torch.long)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()


class EpochSampler(SequentialSampler):
    """Indices ``0..n-1`` in order, plus the epoch Lightning sets each epoch (``set_epoch``), which the grouped sampler reads."""

    def __init__(self, data_source: Sequence[Any]):
        super().__init__(data_source)
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class LengthGroupedBatchSampler(BatchSampler):
    """Seeded, shuffled training batches of rows of similar length.

    Each epoch: shuffle the indices (generator seeded by ``seed`` and the epoch), cut them into mega-batches of
    ``batch_size * mega_batch_mult`` rows, sort each mega-batch by length, cut it into batches, then shuffle the batches.
    Every row appears exactly once per epoch; the order differs between epochs and is the same for the same seed.
    The epoch is the inner sampler's ``epoch`` once something set it (Lightning calls ``set_epoch`` on it before every
    epoch, so a resumed fit continues the same sequence of orders); otherwise it advances by one on each pass.
    """

    def __init__(self, sampler: Sampler[int] | Sequence[int], batch_size: int, drop_last: bool = False,
                 lengths: Sequence[int] | torch.Tensor | None = None, seed: int = 42, mega_batch_mult: int = 50):
        super().__init__(sampler, batch_size, drop_last)
        if lengths is None:
            raise ValueError("LengthGroupedBatchSampler needs the row lengths")
        self.lengths = torch.as_tensor(lengths)
        self.seed = int(seed)
        self.mega_batch_mult = int(mega_batch_mult)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        idx = torch.as_tensor(list(self.sampler), dtype=torch.long)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        mega = self.batch_size * self.mega_batch_mult
        batches: list[list[int]] = []
        for start in range(0, len(idx), mega):
            chunk = idx[start : start + mega]
            chunk = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices].tolist()
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[list[int]]:
        epoch = getattr(self.sampler, "epoch", None)
        if epoch is None:
            epoch = self.epoch
            self.epoch += 1
        yield from self.batches(int(epoch))

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        if not self.drop_last:
            # Mega-batches may leave one short batch each.
            full, rest = divmod(n, self.batch_size * self.mega_batch_mult)
            return full * self.mega_batch_mult + -(-rest // self.batch_size)
        full, rest = divmod(n, self.batch_size * self.mega_batch_mult)
        return full * self.mega_batch_mult + rest // self.batch_size


def to_dataset_order(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows produced in loader ``order`` (``loader.order``) put back in dataset order."""
    out = torch.empty_like(values)
    out[order.to(values.device)] = values
    return out


def _own_generator(seed: int = 0) -> torch.Generator:
    """A loader draws its workers' base seed each time it is iterated; from its own generator, that draw leaves the
    global one (dropout's) alone, so a resumed fit, whose loaders start at other moments, draws what an uninterrupted
    one draws."""
    return torch.Generator().manual_seed(seed)


def split_dataloader(split: TokenizedSplit, tokenizer: Any, batch_size: int = EVAL_BATCH_SIZE, num_workers: int = 0) -> DataLoader:
    """An evaluation loader over an already tokenised split; ``loader.order`` maps its rows back to the split's order."""
    sampler = LengthSortedBatchSampler(SequentialSampler(range(len(split))), batch_size, lengths=split.lengths)
    loader = DataLoader(eval_view(split, pad_id_of(tokenizer)), batch_sampler=sampler, collate_fn=collate_batch,
                        num_workers=num_workers, persistent_workers=num_workers > 0, generator=_own_generator())
    loader.order = sampler.order  # type: ignore[attr-defined]
    return loader


def eval_dataloader(data: DataConfig, tokenizer: Any, locale: str, split: str, batch_size: int = EVAL_BATCH_SIZE,
                    num_workers: int = 0) -> DataLoader:
    """Batches of ``locale``'s ``split`` sorted by length; ``loader.order`` holds each yielded row's dataset index."""
    return split_dataloader(tokenized_split(data, tokenizer, locale, split), tokenizer, batch_size, num_workers)


def _as_list(locales: str | Sequence[str]) -> list[str]:
    return [locales] if isinstance(locales, str) else list(locales)


def train_split(data: DataConfig, tokenizer: Any, locales: str | Sequence[str], seed: int = 42,
                max_examples: int | None = None, split: str = "train") -> TokenizedSplit:
    """The ``split`` of several locales concatenated; with ``max_examples``, a seeded random subset of that size."""
    locales = check_locales(_as_list(locales))
    if not locales:
        raise InputError("no locales given; name at least one MASSIVE locale")
    parts = [tokenized_split(data, tokenizer, loc, split) for loc in locales]
    whole = parts[0] if len(parts) == 1 else TokenizedSplit.concat(parts)
    if max_examples is not None:
        if max_examples < 1:
            raise InputError(f"max_examples must be at least 1, got {max_examples}")
        if max_examples < len(whole):
            gen = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(whole), generator=gen)[:max_examples].sort().values
            whole = whole.subset(keep.tolist())
    return whole


def train_dataloader(data: DataConfig, tokenizer: Any, locales: str | Sequence[str], batch_size: int = 32,
                     seed: int = 42, max_examples: int | None = None, num_workers: int = 0) -> DataLoader:
    """Shuffled, length-grouped, seeded training batches over the train splits of ``locales``."""
    ds = train_split(data, tokenizer, locales, seed=seed, max_examples=max_examples)
    sampler = LengthGroupedBatchSampler(EpochSampler(range(len(ds))), batch_size, lengths=ds.lengths, seed=seed)
    return DataLoader(BatchedSplit(ds, pad_id_of(tokenizer)), batch_sampler=sampler, collate_fn=collate_batch,
                      num_workers=num_workers, persistent_workers=num_workers > 0, generator=_own_generator(seed))
