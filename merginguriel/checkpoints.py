"""Where outputs live, in one place: the checkpoint layout under ``checkpoints/`` (or a root the user gives).

```
<root>/<backbone>/base/                      the shared base every fine-tune starts from
<root>/<backbone>/finetuned/<locale>/        one fine-tune per locale (HF folder + manifest.json)
<root>/<backbone>/finetuned/<locale>.lightning/  Lightning .ckpt files for resuming that fit
<root>/<backbone>/merged/<target>/<run>/     merged models
<root>/<backbone>/nxn/<split>/               the NxN transfer matrix
<root>/<backbone>/statistics/<kind>/<locale>/  cached Fisher / RegMean statistics
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from merginguriel.errors import InputError
from merginguriel.io.manifest import read_manifest

DEFAULT_ROOT = Path("checkpoints")
EMBEDDED = "embedded"  # the backbone name of the embedded default (the tiny backbone built offline)
EMBEDDED_SLUG = "embedded-tiny"


def backbone_slug(backbone: str) -> str:
    """A folder name for a backbone: ``embedded-tiny`` for the embedded default, a hub id with '/' replaced by '--',
    or a local folder's name."""
    if backbone == EMBEDDED:
        return EMBEDDED_SLUG
    p = Path(backbone)
    if p.is_dir():
        return p.name if p.name != "base" else p.parent.name
    return backbone.strip("/").replace("/", "--")


@dataclass(frozen=True)
class Layout:
    """The checkpoint folders of one backbone under one root."""

    root: Path
    backbone: str  # slug, see backbone_slug

    @classmethod
    def for_backbone(cls, backbone: str, root: str | os.PathLike = DEFAULT_ROOT) -> "Layout":
        """The layout of a backbone (a name, hub id or folder), found without building or downloading anything."""
        return cls(Path(root), backbone_slug(backbone))

    @property
    def home(self) -> Path:
        return self.root / self.backbone

    @property
    def base(self) -> Path:
        return self.home / "base"

    def finetuned(self, locale: str) -> Path:
        return self.home / "finetuned" / locale

    def lightning_dir(self, locale: str) -> Path:
        return self.home / "finetuned" / f"{locale}.lightning"

    def merged(self, target: str, run: str) -> Path:
        return self.home / "merged" / target / run

    def nxn(self, split: str) -> Path:
        return self.home / "nxn" / split

    def statistics(self, kind: str, locale: str) -> Path:
        return self.home / "statistics" / kind / locale

    def finetuned_locales(self) -> list[str]:
        """Locales with a finished fine-tune (a folder holding a manifest), sorted."""
        folder = self.home / "finetuned"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "manifest.json").is_file())


def is_finished(folder: str | os.PathLike) -> bool:
    """A model folder is finished when its manifest was written (always the last step of an atomic write)."""
    return (Path(folder) / "manifest.json").is_file()


def base_reference(folder: str | os.PathLike) -> dict:
    """The ``{"path", "hash"}`` of the shared base a fine-tuned (or merged) checkpoint records."""
    manifest = read_manifest(folder)
    ref = manifest.get("base")
    if not isinstance(ref, dict) or "hash" not in ref:
        raise InputError(
            f"{folder}/manifest.json records no shared base; fine-tune it with `merginguriel fit` from the shared base, "
            "or pass it as an outside checkpoint so its architecture, tensor names, shapes and labels are checked instead"
        )
    return ref
