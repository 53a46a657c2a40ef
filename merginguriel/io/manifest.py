"""manifest.json: the record beside every model and evaluation of what made it."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

from merginguriel.io.atomic import write_json_atomic

MANIFEST_NAME = "manifest.json"
_PACKAGES = ("merginguriel", "torch", "lightning", "transformers", "datasets", "safetensors", "torchmetrics", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers, plus Python and the platform."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def write_manifest(folder: str | os.PathLike, kind: str, **fields: Any) -> Path:
    """Write ``folder/manifest.json`` with ``kind``, a UTC timestamp, package versions and the given fields."""
    data = {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "versions": package_versions(),
    }
    return write_json_atomic(Path(folder) / MANIFEST_NAME, data)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Read ``folder/manifest.json``; a clear error when it is missing."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {folder} is not a merginguriel output (or it was interrupted before finishing)"
        )
    from merginguriel.io.jsonfile import read_json

    return read_json(path, f"{folder} is damaged: remove it and make it again (or restore its manifest.json)")


def reusable(folder: str | os.PathLike, inputs: dict, overwrite: bool, what: str) -> bool:
    """Whether ``folder`` already holds the result of exactly these ``inputs`` (its manifest's ``inputs``), so a rerun
    reuses it. A folder made from other inputs is refused unless ``overwrite`` (then it is recomputed); so is one
    that is not a finished output."""
    from merginguriel.errors import InputError

    folder = Path(folder)
    if not folder.exists():
        return False
    try:
        same = read_manifest(folder).get("inputs") == json.loads(json.dumps(inputs, default=str))
    except FileNotFoundError:
        same = False
    if overwrite:
        return False
    if same:
        return True
    raise InputError(f"{folder} holds {what} computed from other inputs; pass --overwrite true or choose another --output")
