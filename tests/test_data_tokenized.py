"""The tokenisation cache: one real tokenisation per locale and split, only the splits asked for, identical tensors
from memory and disk, keys that change with the tokenizer, the max length and the input file."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import write_jsonl, write_release
from conftest import tiny_tokenizer

from merginguriel.data import DataConfig, load_locale
from merginguriel.data.tokenized import TOKENIZE_CALLS, cache_file, clear_memo, tokenized_locale, tokenized_split


@pytest.fixture
def release(tmp_path):
    write_release(tmp_path / "release", ["sw-KE", "fr-FR"])
    return DataConfig(source="release", data_path=str(tmp_path / "release"), root=str(tmp_path / "root"), max_length=8)


def reference_ids(tokenizer, data: DataConfig, locale: str, split: str) -> list[list[int]]:
    """Row-by-row tokenisation, the independent reference for the batched, cached one."""
    rows = load_locale(data, locale)[split]
    return [tokenizer(r["utt"], truncation=True, max_length=data.max_length)["input_ids"] for r in rows]


def test_tokenizes_once_and_matches_reference(release):
    tok = tiny_tokenizer()
    before = TOKENIZE_CALLS["sw-KE"]
    splits = tokenized_locale(release, tok, "sw-KE")
    assert TOKENIZE_CALLS["sw-KE"] == before + 1  # the three splits after one read of the data
    assert {s: tokenized_split(release, tok, "sw-KE", s) for s in splits} == splits  # then served, not redone
    assert TOKENIZE_CALLS["sw-KE"] == before + 1
    for split, ts in splits.items():
        ref = reference_ids(tok, release, "sw-KE", split)
        assert ts["input_ids"] == ref
        assert max(len(x) for x in ts["input_ids"]) <= release.max_length
        assert any(len(x) == release.max_length for x in ref)  # truncation actually happened
        assert ts["labels"] == [r["label"] for r in load_locale(release, "sw-KE")[split]]
        assert len(ts) == len(ref)
    # In-process hit.
    again = tokenized_split(release, tok, "sw-KE", "train")
    assert TOKENIZE_CALLS["sw-KE"] == before + 1 and again is splits["train"]


def test_an_evaluation_tokenises_only_its_split(release):
    """NxN cells and judgements read one split: the locale's training rows are neither tokenised nor cached."""
    tok = tiny_tokenizer()
    calls = TOKENIZE_CALLS["fr-FR"]
    validation = tokenized_split(release, tok, "fr-FR", "validation")
    assert TOKENIZE_CALLS["fr-FR"] == calls + 1
    cached = sorted(p.name.split("-")[2] for p in cache_file(release, tok, "fr-FR", "train").parent.glob("fr-FR-*.pt"))
    assert cached == ["validation"] and validation["input_ids"] == reference_ids(tok, release, "fr-FR", "validation")
    train = tokenized_split(release, tok, "fr-FR", "train")  # asked for later: tokenised then
    assert TOKENIZE_CALLS["fr-FR"] == calls + 2 and train["input_ids"] == reference_ids(tok, release, "fr-FR", "train")
    tokenized_locale(release, tok, "fr-FR")  # only test was missing
    assert TOKENIZE_CALLS["fr-FR"] == calls + 3
    tokenized_locale(release, tok, "fr-FR")
    assert TOKENIZE_CALLS["fr-FR"] == calls + 3


def test_disk_cache_survives_a_fresh_process(release):
    tok = tiny_tokenizer()
    first = tokenized_split(release, tok, "fr-FR", "test")
    path = cache_file(release, tok, "fr-FR", "test")
    assert path.is_file() and path.is_relative_to(os.path.join(release.root, "cache", "tokenized"))
    calls = TOKENIZE_CALLS["fr-FR"]
    clear_memo()  # as in a new process: only the disk cache is left
    second = tokenized_split(release, tiny_tokenizer(), "fr-FR", "test")  # an equal tokenizer, a new object
    assert TOKENIZE_CALLS["fr-FR"] == calls
    assert second is not first
    assert torch.equal(second.flat, first.flat) and torch.equal(second.offsets, first.offsets)
    assert torch.equal(second.labels, first.labels) and second.ids == first.ids


def test_key_changes_with_max_length_tokenizer_and_input(release, tmp_path):
    tok = tiny_tokenizer()
    base = cache_file(release, tok, "sw-KE", "train")
    longer = DataConfig(source="release", data_path=release.data_path, root=release.root, max_length=16)
    assert cache_file(longer, tok, "sw-KE", "train") != base
    other_tok = tiny_tokenizer()
    other_tok.add_tokens(["extra_token"])
    assert cache_file(release, other_tok, "sw-KE", "train") != base
    assert cache_file(release, tok, "fr-FR", "train") != base
    # Different max_length: a real second tokenisation with a different result.
    calls = TOKENIZE_CALLS["sw-KE"]
    short = tokenized_split(release, tok, "sw-KE", "train")
    long = tokenized_split(longer, tok, "sw-KE", "train")
    assert TOKENIZE_CALLS["sw-KE"] == calls + 2
    assert int(long.lengths.max()) > int(short.lengths.max())
    # Rewriting the input file changes the key, so stale tokens are never served.
    path = tmp_path / "release/1.1/data/sw-KE.jsonl"
    write_jsonl(path, [{"id": "0", "partition": "train", "intent": "alarm_set", "utt": "w7 w8 w9 w10 w11 w12 w13"}])
    os.utime(path, ns=(1, 1))  # a different modification time even on coarse-clock filesystems
    assert cache_file(release, tok, "sw-KE", "train") != base
    fresh = tokenized_split(release, tok, "sw-KE", "train")
    assert len(fresh) == 1 and fresh["input_ids"] == reference_ids(tok, release, "sw-KE", "train")


def test_corrupt_cache_file_is_rebuilt(release):
    tok = tiny_tokenizer()
    path = cache_file(release, tok, "sw-KE", "validation")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file")
    clear_memo()
    calls = TOKENIZE_CALLS["sw-KE"]
    ts = tokenized_split(release, tok, "sw-KE", "validation")
    assert TOKENIZE_CALLS["sw-KE"] == calls + 1
    assert ts["input_ids"] == reference_ids(tok, release, "sw-KE", "validation")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_bad_split_name(release):
    from merginguriel.errors import InputError

    with pytest.raises(InputError, match="unknown split 'dev'"):
        tokenized_split(release, tiny_tokenizer(), "sw-KE", "dev")

