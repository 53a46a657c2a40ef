"""Per-locale statistics for Fisher and RegMean merging, computed once and reused.

A source model's statistics live in ``Layout.statistics(kind, locale, key)`` (``statistics.safetensors`` +
``manifest.json``), where ``<key>`` is a short hash of everything that decides the numbers: the model's weights
hash, the locales and split the examples come from, the number of examples, the label mode (Fisher), the seed, the
data source and the tokenisation length. A later merge with the same settings finds the folder and reads it; any
change in the settings gives a new key (nothing is overwritten). Folders are written atomically, so a crash never
leaves a half-written entry that would be reused.

:func:`ensure_statistics` is what a merge calls before the engine runs a method that ``needs`` statistics: it computes
the missing entries and returns the spec with ``statistics`` pointing at one folder per source.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from merginguriel.checkpoints import Layout
from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError

STATISTICS_FILE = "statistics.safetensors"
KINDS = ("fisher", "regmean")
# (kind, source key) -> number of real computations in this process (cache misses); tests use it.
COMPUTE_CALLS: collections.Counter = collections.Counter()


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings dict."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def statistics_folder(layout: Layout, kind: str, locale: str, settings: dict[str, Any]) -> Path:
    """Where the statistics of ``kind`` for the model of ``locale`` under ``settings`` are cached."""
    return layout.statistics(kind, locale, settings_key(settings))


def _example_rows(data: DataConfig, tokenizer, locales: list[str], split: str, examples: int, seed: int) -> list[list[int]]:
    """``examples`` utterances split evenly over ``locales`` (seeded subsets of each locale's ``split``)."""
    from merginguriel.adamerging.data import target_utterances

    rows: list[list[int]] = []
    share = [examples // len(locales) + (1 if i < examples % len(locales) else 0) for i in range(len(locales))]
    for loc, n in zip(locales, share):
        if n > 0:
            rows += target_utterances(data, tokenizer, loc, split, max_examples=n, seed=seed)
    return rows


def _data_locales(params: Any, target: str | None, source_locale: str | None, source_name: str) -> list[str]:
    if params.data in ("target", "both") and target is None:
        raise InputError(
            f"statistics from the target's data (merge.params.data={params.data}) need --target; "
            "pass the target locale or use merge.params.data=sources"
        )
    if params.data in ("sources", "both") and source_locale is None:
        raise InputError(
            f"source {source_name} has no locale, so its own data cannot be read (merge.params.data={params.data}); "
            "give its locale or use merge.params.data=target"
        )
    return {"target": [target], "sources": [source_locale], "both": [target, source_locale]}[params.data]


def _compute(kind: str, model_path: Path, rows: list[list[int]], params: Any, seed: int, device: torch.device) -> dict:
    from transformers import AutoModelForSequenceClassification

    from merginguriel.io import model_files_checked

    with model_files_checked(model_path):
        model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=torch.float32)
    if kind == "fisher":
        from merginguriel.statistics.fisher import fisher_diagonal

        return fisher_diagonal(model, rows, label=params.label, seed=seed, device=device)
    from merginguriel.statistics.regmean import gram_matrices
    from transformers import AutoTokenizer

    with model_files_checked(model_path):
        pad = AutoTokenizer.from_pretrained(model_path).pad_token_id
    return gram_matrices(model, rows, pad_id=pad, batch_size=params.batch_size, device=device)


def source_statistics(
    kind: str,
    layout: Layout,
    source: Any,
    params: Any,
    data: DataConfig,
    target: str | None,
    seed: int,
    device: torch.device,
) -> Path:
    """The statistics folder of one source: found in the cache, or computed, written atomically and returned."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from merginguriel.io import atomic_dir, checkpoint_ref, write_manifest

    if params.split not in ("train", "validation"):
        raise InputError(
            f"{kind} statistics use unlabelled train or validation utterances, not {params.split!r} "
            "(the test split stays unseen); pass merge.params.split=validation or train"
        )
    if params.examples < 1:
        raise InputError(f"{kind}: examples must be at least 1, got {params.examples}")
    ref = checkpoint_ref(source.path)
    name = source.locale or Path(source.path).name
    locales = _data_locales(params, target, source.locale, str(source.path))
    settings = {
        "kind": kind,
        "model_hash": ref["hash"],
        "data_locales": locales,
        "split": params.split,
        "examples": params.examples,
        "seed": seed,
        "data": {"source": data.source, "data_path": data.data_path, "max_length": data.max_length},
    }
    if kind == "fisher":
        settings["label"] = params.label
    folder = statistics_folder(layout, kind, name, settings)
    if (folder / "manifest.json").is_file() and (folder / STATISTICS_FILE).is_file():
        return folder
    t0 = time.perf_counter()
    from merginguriel.io import model_files_checked

    with model_files_checked(source.path, "source"):
        tokenizer = AutoTokenizer.from_pretrained(source.path)
    rows = _example_rows(data, tokenizer, locales, params.split, params.examples, seed)
    COMPUTE_CALLS[(kind, name)] += 1
    from merginguriel.memory import PeakMemory

    with PeakMemory(device) as probe:
        tensors = _compute(kind, Path(source.path), rows, params, seed, device)
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / STATISTICS_FILE))
        write_manifest(
            tmp,
            f"statistics-{kind}",
            locale=source.locale,
            model=ref,
            settings=settings,
            examples_used=len(rows),
            timings={"compute_s": round(time.perf_counter() - t0, 3)},
            device=str(device),
            memory=probe.record(),
        )
    return folder


def ensure_statistics(spec: Any, data: DataConfig, layout: Layout) -> Any:
    """For a method that ``needs`` statistics, make sure every source has them (computing the missing ones, cached in
    ``layout``) and return a copy of ``spec`` whose ``statistics`` lists one folder per source; other specs are
    returned unchanged."""
    from merginguriel.merging.registry import get_method
    from merginguriel.merging.validate import resolve_device

    method = get_method(spec.method)
    if not method.needs:
        return spec
    params = method.make_params(spec.params)
    device = resolve_device(spec.device)
    folders: dict[str, list[Path]] = dict(spec.statistics or {})
    for kind in method.needs:
        if kind not in KINDS:
            raise InputError(f"method {method.name} needs {kind} statistics, which merginguriel cannot compute")
        if kind in folders:  # given explicitly by the user
            continue
        folders[kind] = [
            source_statistics(kind, layout, s, params, data, spec.target, spec.seed, device) for s in spec.sources
        ]
    return dataclasses.replace(spec, statistics=folders)
