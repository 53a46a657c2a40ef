"""The embedded default: synthetic MASSIVE data and a tiny pre-trained XLM-R-architecture backbone, built offline on the spot.

```
<root>/embedded/data/1.1/data/<locale>.jsonl   the official release layout (partitions train/dev/test, string intents)
<root>/embedded/data/manifest.json
<root>/embedded/backbone/                       a Hugging Face folder: XLMRobertaForMaskedLM + tokenizer + manifest.json
```
Each is built only when missing, atomically (a half-built folder never looks finished), under a file lock so that two
processes asking at once build it once. A finished folder is never rebuilt; asking for different settings than it was
built with is an error that says how to get them (another root, or delete the folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

from merginguriel.checkpoints import DEFAULT_ROOT
from merginguriel.embedded.pretrain import BackboneSettings, pretrain_mlm, train_tokenizer
from merginguriel.embedded.synthetic import GENERATOR_VERSION, SyntheticSizes, sizes_dict, write_release
from merginguriel.embedded.typology import TABLE_PATH
from merginguriel.errors import InputError
from merginguriel.io import atomic_dir, checkpoint_hash, file_sha256, read_manifest, write_manifest
from merginguriel.locales import LOCALES, NUM_INTENTS

DATA_DIR = "data"
BACKBONE_DIR = "backbone"
LOCK_NAME = ".lock"
DATA_KIND = "embedded-data"
BACKBONE_KIND = "embedded-backbone"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``<folder>/.lock`` (released when the process dies, so a crash never leaves it held)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_same(folder: Path, recorded: dict[str, Any], requested: dict[str, Any], what: str) -> None:
    diff = {k: (recorded.get(k), v) for k, v in requested.items() if recorded.get(k) != v}
    if diff:
        listed = ", ".join(f"{k}: built {a!r}, asked {b!r}" for k, (a, b) in diff.items())
        raise InputError(
            f"{folder} already holds the embedded {what} built with other settings ({listed}); "
            f"use another --root for these settings, or delete {folder} to rebuild it"
        )


def _finished(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def ensure_embedded_data(folder: Path, sizes: Optional[SyntheticSizes] = None) -> Path:
    """Return ``<folder>/data`` (release layout, all locales), generating it first if it is missing.

    ``sizes`` None means: whatever is already built, or the defaults when nothing is.
    """
    folder = Path(folder)
    out = folder / DATA_DIR
    if not _finished(out):
        with _locked(folder):
            if not _finished(out):  # another process may have built it while this one waited
                _build_data(out, sizes or SyntheticSizes())
    if sizes is not None:
        _check_same(out, read_manifest(out).get("sizes", {}), sizes_dict(sizes), "data")
    return out


def _build_data(out: Path, sizes: SyntheticSizes) -> None:
    start = time.perf_counter()
    with atomic_dir(out, overwrite=True) as tmp:
        write_release(tmp, LOCALES, sizes)
        files = sorted((tmp / "1.1" / "data").glob("*.jsonl"))
        write_manifest(
            tmp,
            DATA_KIND,
            produced_by="merginguriel.embedded.synthetic.write_release",
            generator_version=GENERATOR_VERSION,
            seed=sizes.seed,
            sizes=sizes_dict(sizes),
            locales=list(LOCALES),
            rows_per_locale=NUM_INTENTS * (sizes.train_per_intent + sizes.dev_per_intent + sizes.test_per_intent),
            typology_table_sha256=file_sha256(TABLE_PATH),
            files={f.name: file_sha256(f) for f in files},
            build_seconds=round(time.perf_counter() - start, 2),
        )


def read_train_text(data_dir: Path, locales: tuple[str, ...] | list[str] = LOCALES) -> list[str]:
    """The ``utt`` of every training row of the given locales of a release-layout folder."""
    texts = []
    for loc in locales:
        with open(Path(data_dir) / "1.1" / "data" / f"{loc}.jsonl", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if row["partition"] == "train":
                    texts.append(row["utt"])
    return texts


def ensure_embedded_backbone(
    folder: Path, settings: Optional[BackboneSettings] = None, sizes: Optional[SyntheticSizes] = None
) -> Path:
    """Return ``<folder>/backbone`` (an HF folder: XLMRobertaForMaskedLM + tokenizer), building data and model if missing.

    ``settings``/``sizes`` None means: whatever is already built, or the defaults when nothing is.
    """
    folder = Path(folder)
    out = folder / BACKBONE_DIR
    data_dir = ensure_embedded_data(folder, sizes)  # takes and releases the lock itself: never nested
    if not _finished(out):
        with _locked(folder):
            if not _finished(out):
                _build_backbone(out, data_dir, settings or BackboneSettings())
    if settings is not None:
        _check_same(out, read_manifest(out).get("settings", {}), asdict(settings), "backbone")
    return out


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (tiny models: one thread is faster than two on a busy 2-core host)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build_backbone(out: Path, data_dir: Path, settings: BackboneSettings) -> None:
    start = time.perf_counter()
    sentences = read_train_text(data_dir)
    tokenizer = train_tokenizer(sentences, settings)
    tokenizer_seconds = time.perf_counter() - start
    # One thread: the same numbers on every machine, and no slowdown from oversubscribed cores on a busy host.
    with torch_threads(1):
        model, stats = pretrain_mlm(sentences, tokenizer, settings, log_every=max(1, settings.pretrain_steps // 5))
    data_manifest = read_manifest(data_dir)
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            BACKBONE_KIND,
            produced_by="merginguriel.embedded.pretrain (SentencePiece unigram + XLMRobertaForMaskedLM MLM)",
            hash=checkpoint_hash(tmp),
            seed=settings.seed,
            settings=asdict(settings),
            data={"path": str(data_dir), "sizes": data_manifest.get("sizes"), "created": data_manifest.get("created")},
            vocab_size=len(tokenizer),
            tokenizer_seconds=round(tokenizer_seconds, 2),
            pretraining=stats,
            build_seconds=round(time.perf_counter() - start, 2),
        )


def build_embedded(
    root: str = DEFAULT_ROOT,
    seed: Optional[int] = None,
    train_per_intent: Optional[int] = None,
    dev_per_intent: Optional[int] = None,
    test_per_intent: Optional[int] = None,
    vocab_size: Optional[int] = None,
    hidden_size: Optional[int] = None,
    num_layers: Optional[int] = None,
    num_heads: Optional[int] = None,
    pretrain_steps: Optional[int] = None,
    data_only: bool = False,
) -> dict[str, Path]:
    """Build (or find) the embedded default under ``<root>/embedded``: synthetic MASSIVE data and the tiny backbone.

    Options left unset keep what is already built (or the defaults when nothing is); set ones must match a finished build.

    Args:
        root: the checkpoints root.
        seed: seed of the synthetic languages, the rows, the tokenizer and the pre-training.
        train_per_intent: training utterances per intent and locale (default 20).
        dev_per_intent: validation utterances per intent and locale (default 5).
        test_per_intent: test utterances per intent and locale (default 5).
        vocab_size: SentencePiece pieces (default 16000).
        hidden_size: encoder width (default 128).
        num_layers: transformer layers (default 2).
        num_heads: attention heads (default 4).
        pretrain_steps: masked-LM pre-training steps (default 300).
        data_only: build only the data, not the backbone.
    """
    data_fields = {"seed": seed, "train_per_intent": train_per_intent, "dev_per_intent": dev_per_intent, "test_per_intent": test_per_intent}
    model_fields = {"seed": seed, "vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers,
                    "num_heads": num_heads, "pretrain_steps": pretrain_steps}
    folder = Path(root) / "embedded"
    sizes = _explicit(SyntheticSizes, folder / DATA_DIR, "sizes", data_fields)
    settings = _explicit(BackboneSettings, folder / BACKBONE_DIR, "settings", model_fields)
    out = {"data": ensure_embedded_data(folder, sizes)}
    if not data_only:
        out["backbone"] = ensure_embedded_backbone(folder, settings, sizes)
    return out


def _explicit(cls, built: Path, key: str, fields: dict[str, Any]):
    """Settings to ask for: None when nothing was set; else the set fields over the built folder's settings (or defaults)."""
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return None
    base = cls()
    if _finished(built):
        recorded = read_manifest(built).get(key, {})
        base = replace(base, **{k: v for k, v in recorded.items() if k in base.__dataclass_fields__})
    return replace(base, **given)
