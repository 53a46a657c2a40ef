"""Dynamic padding, length-sorted evaluation batches that map back to dataset order, and the seeded length-grouped
training sampler (every row once per epoch, new order each epoch, same order for the same seed)."""

from __future__ import annotations

import pytest
import torch
from conftest import write_release
from conftest import tiny_tokenizer
from torch.utils.data import SequentialSampler

from merginguriel.data import DataConfig, eval_dataloader, load_locale, to_dataset_order, train_dataloader
from merginguriel.data.loaders import LengthGroupedBatchSampler, pad_batch
from merginguriel.data.tokenized import tokenized_split


@pytest.fixture
def data(tmp_path):
    write_release(tmp_path / "release", ["sw-KE", "fr-FR"])
    return DataConfig(source="release", data_path=str(tmp_path / "release"), root=str(tmp_path / "root"), max_length=12)


def test_pad_batch_pads_to_batch_longest_with_tokenizer_pad_id():
    batch = pad_batch([torch.tensor([0, 5, 2]), [0, 2], [4]], pad_id=7)
    assert batch["input_ids"].tolist() == [[0, 5, 2], [0, 2, 7], [4, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_vectorised_padding_matches_a_row_by_row_reference():
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, 50, (int(n),), generator=gen).tolist() for n in torch.randint(1, 30, (200,), generator=gen)]
    batch = pad_batch(rows, pad_id=1)
    width = max(len(r) for r in rows)
    assert batch["input_ids"].tolist() == [r + [1] * (width - len(r)) for r in rows]
    assert batch["attention_mask"].tolist() == [[1] * len(r) + [0] * (width - len(r)) for r in rows]


def test_evaluation_batches_are_padded_once_and_shared_training_batches_are_not_kept(data):
    tok = tiny_tokenizer()
    first = list(eval_dataloader(data, tok, "sw-KE", "validation", batch_size=4))
    again = list(eval_dataloader(data, tok, "sw-KE", "validation", batch_size=4))  # e.g. the next model of an NxN run
    assert len(first) == len(again) > 1
    for a, b in zip(first, again, strict=True):
        assert a["input_ids"] is b["input_ids"] and a["labels"] is b["labels"]  # served from the kept batches
    train = train_dataloader(data, tok, "sw-KE", batch_size=4, seed=3)
    list(train)
    assert train.dataset._kept == {}


def test_eval_loader_dynamic_padding_and_order(data):
    tok = tiny_tokenizer()
    loader = eval_dataloader(data, tok, "sw-KE", "train", batch_size=8)
    split = tokenized_split(data, tok, "sw-KE", "train")
    widths, seen, labels = [], [], []
    for batch in loader:
        mask = batch["attention_mask"]
        widths.append(batch["input_ids"].shape[1])
        assert int(mask.sum(1).max()) == batch["input_ids"].shape[1]  # padded to this batch's longest row only
        assert bool((batch["input_ids"][mask == 0] == tok.pad_token_id).all())
        seen.extend(row[m.bool()].tolist() for row, m in zip(batch["input_ids"], mask, strict=True))
        labels.append(batch["labels"])
    assert widths == sorted(widths, reverse=True) and len(set(widths)) > 1
    order = loader.order
    assert sorted(order.tolist()) == list(range(len(split)))
    # Rows come back to dataset order through `order`.
    ids = split["input_ids"]
    assert [seen[k] for k in torch.argsort(order).tolist()] == ids
    restored = to_dataset_order(torch.cat(labels), order)
    assert restored.tolist() == [r["label"] for r in load_locale(data, "sw-KE")["train"]]


def test_grouped_sampler_covers_each_row_once_and_is_seeded():
    lengths = torch.randint(1, 40, (103,), generator=torch.Generator().manual_seed(0))

    def make(seed):
        return LengthGroupedBatchSampler(SequentialSampler(range(103)), 4, lengths=lengths, seed=seed, mega_batch_mult=5)

    a, b, c = make(1), make(1), make(2)
    epochs_a = [list(a) for _ in range(3)]
    epochs_b = [list(b) for _ in range(3)]
    assert epochs_a == epochs_b  # reproducible under the seed
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]  # a new order every epoch
    assert list(c) != epochs_a[0]
    for batches in epochs_a:
        assert sorted(i for bt in batches for i in bt) == list(range(103))
        assert len(batches) == len(a)
        # Inside each batch, lengths are close: batches come from length-sorted mega-batches.
        spread = sum(int(lengths[bt].max() - lengths[bt].min()) for bt in batches) / len(batches)
        assert spread < float(lengths.max() - lengths.min()) / 3
    # Lightning's set_epoch on the inner sampler drives the epoch (and so resumes the same sequence).
    d = make(1)
    d.sampler.epoch = 2  # as EpochSampler.set_epoch(2) would leave it
    assert list(d) == epochs_a[2]


def test_train_loader_several_locales_and_max_examples(data):
    tok = tiny_tokenizer()
    n = sum(len(load_locale(data, loc)["train"]) for loc in ("sw-KE", "fr-FR"))
    loader = train_dataloader(data, tok, ["sw-KE", "fr-FR"], batch_size=8, seed=3)
    assert len(loader.dataset) == n
    labels_epoch = [torch.cat([b["labels"] for b in loader]) for _ in range(2)]
    assert sorted(labels_epoch[0].tolist()) == sorted(labels_epoch[1].tolist())
    assert labels_epoch[0].tolist() != labels_epoch[1].tolist()
    again = train_dataloader(data, tok, ["sw-KE", "fr-FR"], batch_size=8, seed=3)
    assert torch.equal(torch.cat([b["input_ids"].flatten() for b in again]),
                       torch.cat([b["input_ids"].flatten() for b in train_dataloader(data, tok, ["sw-KE", "fr-FR"], 8, 3)]))
    small = train_dataloader(data, tok, "sw-KE", batch_size=8, seed=3, max_examples=10)
    assert sum(len(b["labels"]) for b in small) == 10
