"""Tokenise each locale once and keep the result: on disk for later runs, in memory for this process.

Each split is tokenised in one batched call of the (fast) tokenizer, truncated to ``max_length`` and left unpadded
(batches are padded to their own longest row when collated), and only when asked for: an evaluation never pays for a
locale's 11k training rows. The result is stored as flat int32 tensors (token ids of every row back to back, plus row
offsets), which load in milliseconds, at
``<root>/cache/tokenized/<tokenizer-hash>-<max_length>/<locale>-<split>-<source-hash>.pt``. The tokenizer hash covers its full
content (vocabulary, normaliser, post-processor, special tokens); the source hash covers the input file's path, size and
modification time, so editing a release file or regenerating the embedded data invalidates the entry.
"""

from __future__ import annotations

import collections
import hashlib
import json
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from merginguriel.data.config import DataConfig
from merginguriel.data.sources import load_locale, source_identity
from merginguriel.errors import InputError
from merginguriel.locales import SPLITS, as_locale

# locale -> number of real tokenisations (reads of its data for cache misses) in this process.
TOKENIZE_CALLS: collections.Counter = collections.Counter()
# cache file -> TokenizedSplit; a process never loads or tokenises the same entry twice.
_MEMO: dict[Path, "TokenizedSplit"] = {}
_TOKENIZER_HASHES: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
_FORMAT = 2  # one split per file


class TokenizedSplit(torch.utils.data.Dataset):
    """One tokenised split: ``len()``, ``split[i]`` -> ``{"input_ids": LongTensor, "labels": int}``,
    ``split["input_ids"]`` (list of lists), ``split["labels"]`` (list of int), ``split["id"]`` (row ids).

    Token ids are held flat (``flat[offsets[i]:offsets[i+1]]`` is row ``i``) so a split costs a few bytes per token.
    """

    def __init__(self, flat: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor, ids: Sequence[str]):
        self.flat = flat
        self.offsets = offsets
        self.labels = labels
        self.ids = list(ids)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """Token count of every row."""
        return self.offsets[1:] - self.offsets[:-1]

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            if key == "input_ids":
                bounds = self.offsets.tolist()
                return [self.flat[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            if key == "labels":
                return self.labels.tolist()
            if key == "id":
                return list(self.ids)
            raise KeyError(f"{key!r}; columns are input_ids, labels, id")
        a, b = int(self.offsets[key]), int(self.offsets[key + 1])
        return {"input_ids": self.flat[a:b], "labels": int(self.labels[key])}

    def subset(self, indices: Sequence[int]) -> "TokenizedSplit":
        """The rows at ``indices``, in that order."""
        return TokenizedSplit.concat([self], [list(indices)])

    @staticmethod
    def concat(parts: Sequence["TokenizedSplit"], indices: Sequence[Sequence[int]] | None = None) -> "TokenizedSplit":
        """Rows of several splits one after another (optionally only the given rows of each)."""
        flats, lengths, labels, ids = [], [], [], []
        for k, part in enumerate(parts):
            rows = range(len(part)) if indices is None else indices[k]
            rows_t = torch.as_tensor(list(rows), dtype=torch.long)
            starts, ends = part.offsets[rows_t], part.offsets[rows_t + 1]
            flats.extend(part.flat[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True))
            lengths.append(ends - starts)
            labels.append(part.labels[rows_t])
            ids.extend(part.ids[i] for i in rows_t.tolist())
        flat = torch.cat(flats) if flats else torch.zeros(0, dtype=torch.int32)
        lens = torch.cat(lengths) if lengths else torch.zeros(0, dtype=torch.long)
        offsets = torch.zeros(len(lens) + 1, dtype=torch.long)
        torch.cumsum(lens, 0, out=offsets[1:])
        return TokenizedSplit(flat, offsets, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long), ids)


def tokenizer_hash(tokenizer: Any) -> str:
    """SHA-256 of everything that decides how the tokenizer maps text to ids (memoised per tokenizer object)."""
    try:
        return _TOKENIZER_HASHES[tokenizer]
    except (KeyError, TypeError):
        pass
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # a Python tokenizer: its vocabulary and special tokens
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    special = {k: str(v) for k, v in getattr(tokenizer, "special_tokens_map", {}).items()}
    h.update(json.dumps(special, sort_keys=True).encode())
    digest = h.hexdigest()
    try:
        _TOKENIZER_HASHES[tokenizer] = digest
    except TypeError:  # not weak-referenceable: recompute next time
        pass
    return digest


def cache_file(data: DataConfig, tokenizer: Any, locale: str, split: str) -> Path:
    """Where ``locale``'s ``split`` tokenised under ``tokenizer`` and ``data`` is cached."""
    src = hashlib.sha256(source_identity(data, locale).encode()).hexdigest()[:16]
    from merginguriel.checkpoints import cache_dir

    folder = cache_dir(data.root, "tokenized") / f"{tokenizer_hash(tokenizer)[:16]}-{data.max_length}"
    return folder / f"{locale}-{split}-{src}.pt"


def encode(tokenizer: Any, rows: Sequence[dict], max_length: int) -> TokenizedSplit:
    """Tokenise rows (``utt``, ``label``, ``id``) into a split, in one batched call (a fast tokenizer encodes the whole
    batch in Rust)."""
    seqs = tokenizer([r["utt"] for r in rows], truncation=True, max_length=max_length, padding=False,
                     return_attention_mask=False)["input_ids"] if rows else []
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    offsets = torch.zeros(len(seqs) + 1, dtype=torch.long)
    torch.cumsum(lens, 0, out=offsets[1:])
    flat = torch.tensor([t for s in seqs for t in s], dtype=torch.int32)
    labels = torch.tensor([r["label"] for r in rows], dtype=torch.long)
    return TokenizedSplit(flat, offsets, labels, [r["id"] for r in rows])


def _save(path: Path, split: TokenizedSplit, meta: dict) -> None:
    payload = {"format": _FORMAT, "meta": meta,
               "split": {"flat": split.flat, "offsets": split.offsets, "labels": split.labels, "ids": split.ids}}
    from merginguriel.io import atomic_file

    with atomic_file(path) as tmp:  # concurrent writers produce identical files; the last rename wins
        torch.save(payload, tmp)


def _load(path: Path) -> TokenizedSplit | None:
    try:
        payload = torch.load(path, weights_only=True)
    except Exception:  # a corrupt or foreign file is simply rebuilt
        return None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        return None
    return TokenizedSplit(**payload["split"])


def tokenized_locale(
    data: DataConfig, tokenizer: Any, locale: str, splits: Sequence[str] = SPLITS
) -> dict[str, TokenizedSplit]:
    """``splits`` of ``locale`` (all three by default), each tokenised once and then served from memory or the disk
    cache; the ones missing from both are tokenised together, after one read of the locale's data."""
    locale = as_locale(locale)
    found: dict[str, TokenizedSplit] = {}
    missing = []
    paths = {split: cache_file(data, tokenizer, locale, split) for split in splits}
    for split, path in paths.items():
        rows = _MEMO.get(path)
        if rows is None and path.is_file():
            rows = _load(path)
        if rows is None:
            missing.append(split)
        else:
            _MEMO[path] = found[split] = rows
    if missing:
        raw = load_locale(data, locale)
        TOKENIZE_CALLS[locale] += 1
        meta = {"locale": str(locale), "max_length": data.max_length, "source": source_identity(data, locale),
                "tokenizer": tokenizer_hash(tokenizer)}
        for split in missing:
            rows = encode(tokenizer, raw[split], data.max_length)
            _save(paths[split], rows, {**meta, "split": split})
            _MEMO[paths[split]] = found[split] = rows
    return {split: found[split] for split in splits}


def tokenized_split(data: DataConfig, tokenizer: Any, locale: str, split: str) -> TokenizedSplit:
    """One split (``train``, ``validation`` or ``test``) of ``locale``, tokenised (see :func:`tokenized_locale`).

    A split without rows is refused here, where every reader (fit, test, nxn, statistics, AdaMerging, the merge
    judgement) gets its data, so nothing is ever computed, or written, for data that was not there."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    rows = tokenized_locale(data, tokenizer, locale, (split,))[split]
    if len(rows) == 0:
        raise empty_split_error(data, locale, split)
    return rows


def empty_split_error(data: DataConfig, locale: str, split: str) -> InputError:
    from merginguriel.data.sources import source_name
    from merginguriel.locales import RELEASE_PARTITION_TO_SPLIT

    partition = next((p for p, s in RELEASE_PARTITION_TO_SPLIT.items() if s == split), split)
    return InputError(
        f"{locale} has no {split} rows (partition {partition!r}) in {source_name(data, locale)}; add rows with "
        f'"partition": "{partition}" to that file, or leave {locale} out of this run'
    )


def clear_memo() -> None:
    """Forget what this process loaded (the disk cache stays): the next call behaves as in a fresh process."""
    _MEMO.clear()
