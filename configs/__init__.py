"""The configs that ship with merginguriel (fit recipes, the quick start, studies, ablation sweeps), found by name or
by path: ``--config quickstart`` is ``configs/quickstart.yaml``, ``--config ablations/dare`` its ablation; a path that
exists is used as it is. This folder sits at the top of a checkout and is installed as the package
``merginguriel.configs`` (pyproject maps it), so an installed merginguriel finds the same files by name."""

from __future__ import annotations

import os
from pathlib import Path

from merginguriel.errors import InputError, did_you_mean

HERE = Path(__file__).parent


def shipped() -> list[str]:
    """The names of every shipped config (``fit-embedded``, ``ablations/dare``, ...)."""
    return sorted(str(p.relative_to(HERE).with_suffix("")) for p in HERE.rglob("*.yaml"))


def config_path(name: str | os.PathLike) -> Path:
    """A config file by path, or a shipped config by name (with or without ``.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(f"config {path} is a directory; give a YAML file (or a shipped config's name)")
    stem = str(name)[:-5] if str(name).endswith(".yaml") else str(name)
    stem = stem.removeprefix("configs/")
    shipped_file = HERE / f"{stem}.yaml"
    if shipped_file.is_file():
        return shipped_file
    raise InputError(f"config {str(name)!r} is neither a file nor a shipped config.{did_you_mean(stem, shipped())} "
                     f"Shipped: {', '.join(shipped())}")
