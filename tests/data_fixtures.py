"""MASSIVE-release-format files written inside the data tests (no network): jsonl folders and the tarball."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

from merginguriel.locales import INTENTS

PARTITION_SIZES = {"train": 40, "dev": 12, "test": 15}


def release_rows(locale: str, seed: int = 0, sizes: dict[str, int] = PARTITION_SIZES) -> list[dict]:
    """Rows in the release schema: string intents, partitions train/dev/test, utterances of tiny-tokenizer words w0..w199."""
    rng = random.Random(f"{locale}-{seed}")
    rows = []
    for partition, n in sizes.items():
        for _ in range(n):
            length = rng.randint(1, 14)
            rows.append({
                "id": str(len(rows)),
                "locale": locale,
                "partition": partition,
                "scenario": "x",
                "intent": rng.choice(INTENTS),
                "utt": " ".join(f"w{rng.randrange(200)}" for _ in range(length)),
                "annot_utt": "",
            })
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_release(folder: Path, locales: list[str], subdir: str = "1.1/data", seed: int = 0) -> dict[str, list[dict]]:
    """Write ``<folder>/<subdir>/<locale>.jsonl`` for each locale; return the rows written."""
    written = {}
    for loc in locales:
        rows = release_rows(loc, seed)
        write_jsonl(folder / subdir / f"{loc}.jsonl", rows)
        written[loc] = rows
    return written


def write_tarball(src: Path, dest: Path) -> Path:
    """Pack ``src/1.1`` as the official tarball does (members ``1.1/data/<locale>.jsonl``)."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src / "1.1", arcname="1.1")
    return dest
