"""The embedded default: synthetic MASSIVE data and a tiny planted XLM-R-architecture backbone, built offline on the spot.

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
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

from merginguriel.checkpoints import DEFAULT_ROOT, embedded_home
from merginguriel.embedded.settings import PLANT_VERSION, BackboneSettings
from merginguriel.embedded.synthetic import GENERATOR_VERSION, SyntheticMassive, SyntheticSizes, sizes_dict, write_release
from merginguriel.embedded.typology import TABLE_PATH
from merginguriel.errors import InputError
from merginguriel.io import atomic_dir, checkpoint_hash, file_sha256, read_manifest, write_manifest
from merginguriel.locales import LOCALES, NUM_INTENTS

DATA_DIR = "data"
BACKBONE_DIR = "backbone"
LOCK_NAME = ".lock"
DATA_KIND = "embedded-data"
BACKBONE_KIND = "embedded-backbone"


def _locked(folder: Path):
    """An exclusive lock on ``<folder>/.lock``, removed on release (merginguriel.io.lock)."""
    from merginguriel.io.lock import file_lock

    return file_lock(folder / LOCK_NAME)


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


def _check_version(folder: Path, key: str, current: str, what: str) -> None:
    """A folder built by another version of the world's code would silently mean another world: refuse it."""
    recorded = read_manifest(folder).get(key)
    if recorded != current:
        raise InputError(
            f"{folder} holds the embedded {what} of another version of merginguriel's synthetic world ({key} "
            f"{recorded!r}, this code makes {current!r}); delete {folder.parent} to rebuild it, or use another --root"
        )


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
    _check_version(out, "generator_version", GENERATOR_VERSION, "data")
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
    _check_version(out, "plant_version", PLANT_VERSION, "backbone")
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
    data_manifest = read_manifest(data_dir)
    # The lexicon is the data's: the same seed gives the same word forms (rows do not matter to the backbone).
    world = SyntheticMassive(SyntheticSizes(seed=int(data_manifest["seed"]), train_per_intent=1, dev_per_intent=1, test_per_intent=1))
    with torch_threads(1):  # the same numbers on every machine
        from merginguriel.embedded.plant import build_backbone  # torch: only when a backbone is really built

        model, tokenizer, stats = build_backbone(world, settings)
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            BACKBONE_KIND,
            produced_by="merginguriel.embedded.plant (word-level unigram tokenizer + planted XLMRobertaForMaskedLM)",
            hash=checkpoint_hash(tmp),
            seed=settings.seed,
            plant_version=PLANT_VERSION,
            settings=asdict(settings),
            data={"path": str(data_dir), "seed": data_manifest.get("seed"), "sizes": data_manifest.get("sizes"),
                  "created": data_manifest.get("created")},
            vocab_size=len(tokenizer),
            planting=stats,
            build_seconds=round(time.perf_counter() - start, 2),
        )


def build_embedded(
    root: str = DEFAULT_ROOT,
    seed: Optional[int] = None,
    train_per_intent: Optional[int] = None,
    dev_per_intent: Optional[int] = None,
    test_per_intent: Optional[int] = None,
    hidden_size: Optional[int] = None,
    num_layers: Optional[int] = None,
    num_heads: Optional[int] = None,
    data_only: bool = False,
) -> dict[str, Path]:
    """Build (or find) the embedded default under ``<root>/embedded``: synthetic MASSIVE data and the tiny backbone.

    Options left unset keep what is already built (or the defaults when nothing is); set ones must match a finished build.

    Args:
        root: the checkpoints root.
        seed: seed of the synthetic languages, the rows, the meaning space and the planted weights.
        train_per_intent: training utterances per intent and locale (default 20).
        dev_per_intent: validation utterances per intent and locale (default 10).
        test_per_intent: test utterances per intent and locale (default 10).
        hidden_size: encoder width (default 128).
        num_layers: transformer layers (default 2).
        num_heads: attention heads (default 4).
        data_only: build only the data, not the backbone.
    """
    data_fields = {"seed": seed, "train_per_intent": train_per_intent, "dev_per_intent": dev_per_intent, "test_per_intent": test_per_intent}
    model_fields = {"seed": seed, "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads}
    folder = embedded_home(root)
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
