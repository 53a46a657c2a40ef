"""Per-source statistics for data-dependent merges, computed once and reused.

A source model's statistics live in ``Layout.statistics(kind, locale, key)`` (``statistics.safetensors`` +
``manifest.json``), where ``<key>`` is a short hash of everything that decides the numbers: the model's weights
hash, the locales and split the examples come from, the number of examples, the seed, the data source and the
tokenisation length, and what the statistic adds (Fisher: its label mode). A later merge with the same settings finds
the folder and reads it; any change in the settings gives a new key (nothing is overwritten). Folders are written
atomically, so a crash never leaves a half-written entry that would be reused.

:func:`statistics_folders` is what a merge calls for each ``Statistic`` a method needs (``Needs.statistics``): it
computes the missing entries with the statistic's own function and returns one folder per source.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Protocol

import torch

from merginguriel.checkpoints import Layout
from merginguriel.data.config import DataConfig
from merginguriel.statistics.examples import StatisticsData, example_rows

STATISTICS_FILE = "statistics.safetensors"
# (kind, source key) -> number of real computations in this process (cache misses); tests use it.
COMPUTE_CALLS: collections.Counter = collections.Counter()


class SourceModel(Protocol):
    """A checked source: its folder, locale (None for an outside checkpoint) and weights hash."""

    path: Path
    locale: Optional[str]
    hash: str


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings dict."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def statistics_folder(layout: Layout, kind: str, locale: str, settings: dict[str, Any]) -> Path:
    """Where the statistics of ``kind`` for the model of ``locale`` under ``settings`` are cached."""
    return layout.statistics(kind, locale, settings_key(settings))


def source_statistics(statistic: Any, params: StatisticsData, source: SourceModel, data: DataConfig, layout: Layout,
                      target: Optional[str], seed: int, device: torch.device) -> Path:
    """The statistics folder of one source: found in the cache, or computed, written atomically and returned.
    ``statistic`` is the method's ``merginguriel.merging.registry.Statistic``."""
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from merginguriel.io import atomic_dir, model_files_checked, write_manifest
    from merginguriel.memory import PeakMemory

    kind = statistic.kind
    name = source.locale or Path(source.path).name
    locales = params.locales(target, source.locale, str(source.path))
    settings = {
        "kind": kind,
        "model_hash": source.hash,
        "data_locales": locales,
        "split": params.split,
        "examples": params.examples,
        "seed": seed,
        "data": {"source": data.source, "data_path": data.data_path, "max_length": data.max_length},
        **statistic.settings(params),
    }
    folder = statistics_folder(layout, kind, name, settings)
    if (folder / "manifest.json").is_file() and (folder / STATISTICS_FILE).is_file():
        return folder
    t0 = time.perf_counter()
    with model_files_checked(source.path, "source"):
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        model = AutoModelForSequenceClassification.from_pretrained(source.path, dtype=torch.float32)
    rows = example_rows(data, tokenizer, locales, params.split, params.examples, seed)
    COMPUTE_CALLS[(kind, name)] += 1
    with PeakMemory(device) as probe:
        tensors = statistic.compute(model, rows, params, seed, device, tokenizer)
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / STATISTICS_FILE))
        write_manifest(
            tmp,
            f"statistics-{kind}",
            locale=source.locale,
            model={"path": str(source.path), "hash": source.hash},
            settings=settings,
            examples_used=len(rows),
            timings={"compute_s": round(time.perf_counter() - t0, 3)},
            device=str(device),
            memory=probe.record(),
        )
    return folder


def statistics_folders(statistic: Any, params: StatisticsData, sources: Sequence[SourceModel], data: DataConfig,
                       layout: Layout, target: Optional[str], seed: int, device: torch.device) -> list[Path]:
    """One folder of ``statistic`` per source (computed where missing, cached in ``layout``)."""
    return [source_statistics(statistic, params, s, data, layout, target, seed, device) for s in sources]
