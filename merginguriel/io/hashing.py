"""Content hashes of files and checkpoints, used to record exactly which inputs produced an output."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 8 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors weight files of a Hugging Face folder, sorted (one file, or the shards of a sharded save)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"no .safetensors weights in {folder}; a merginguriel checkpoint is a Hugging Face folder saved with safetensors"
        )
    return files


def checkpoint_hash(folder: str | os.PathLike) -> str:
    """Hash of a checkpoint's weights: SHA-256 over the names and hashes of its safetensors files."""
    h = hashlib.sha256()
    for f in weight_files(folder):
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()
