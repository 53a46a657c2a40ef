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


def weights_stat(folder: str | os.PathLike) -> dict[str, list[int]]:
    """Size and modification time (ns) of each weight file: recorded beside a hash so a later reader can tell whether
    the bytes are still the ones that were hashed, without reading them."""
    out = {}
    for f in weight_files(folder):
        st = f.stat()
        out[f.name] = [st.st_size, st.st_mtime_ns]
    return out


def checkpoint_ref(folder: str | os.PathLike) -> dict[str, str]:
    """``{"path", "hash"}`` of a checkpoint's weights as they are now on disk.

    The hash its manifest records is used only while the weight files are unchanged since it was taken (same names,
    sizes and modification times, see ``weights_stat``); a file edited after its manifest was written is hashed again,
    so a record never carries a stale hash.
    """
    from merginguriel.io.manifest import read_manifest

    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except FileNotFoundError:
        manifest = {}
    recorded, stat = manifest.get("hash"), manifest.get("weights_stat")
    if recorded and stat is not None and stat == weights_stat(folder):
        return {"path": str(folder), "hash": str(recorded)}
    return {"path": str(folder), "hash": checkpoint_hash(folder)}
