"""Where every artifact lives, in one place: the checkpoint layout under ``checkpoints/`` (or a root the user gives).

```
<root>/<backbone>/base/                          the shared base every fine-tune starts from
<root>/<backbone>/finetuned/<locale>/            one fine-tune per locale (HF folder + manifest.json)
<root>/<backbone>/runs/<locale>/                 a fit's Lightning working files: logs, and its .ckpt files until the
                                                 export is verified (then removed, unless --keep_checkpoints true)
<root>/<backbone>/merged/<target>/<run>/         merged models (<run>.lightning/ beside an AdaMerging run)
<root>/<backbone>/nxn/<split>/                   the NxN transfer matrix (evaluation_matrix.csv, cells, summary, heatmap)
<root>/<backbone>/nxn/<split>/shards/<locale>/   one source model's row of a study's sharded NxN, until merged in
<root>/<backbone>/statistics/<kind>/<locale>/<key>/  cached Fisher / RegMean statistics, one folder per settings key
<root>/<backbone>/similarity/<kind>/             similarity matrices (similarity.csv + heatmap)
<root>/<backbone>/compatibility/<kind>/          source compatibility matrices
<root>/embedded/                                 the embedded default (synthetic data + tiny backbone)
<root>/experiments/<name>/                       a sweep's results database, kept manifests, report
<root>/experiments/<name>/jobs/<stage>/          a study's submitit job files and logs per stage (fit, nxn, sweep)
<root>/experiments/<name>/study.yaml             a study's settings as it last started (the config that resumes it)
<root>/cache/<kind>/                             caches (tokenised data, URIEL matrices)
```

Every path that code writes or reads comes from here; nothing rebuilds a layout from a path it was given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


DEFAULT_ROOT = "checkpoints"  # the one spelling of the default root
EMBEDDED = "embedded"  # the backbone name of the embedded default (the tiny backbone built offline)
EMBEDDED_SLUG = "embedded-tiny"

# File names inside artifact folders (the one spelling of each).
NXN_MATRIX = "evaluation_matrix.csv"
NXN_CELLS = "cells.jsonl"
NXN_SUMMARY = "summary.json"
NXN_HEATMAP = "heatmap.png"
SIMILARITY_MATRIX = "similarity.csv"
COMPATIBILITY_MATRIX = "matrix.csv"
SWEEP_DB = "results.sqlite"


def backbone_slug(backbone: str) -> str:
    """A folder name for a backbone: ``embedded-tiny`` for the embedded default, a hub id with '/' replaced by '--',
    or a local folder's name."""
    if backbone == EMBEDDED:
        return EMBEDDED_SLUG
    p = Path(backbone)
    if p.is_dir():
        return p.name if p.name != "base" else p.parent.name
    return backbone.strip("/").replace("/", "--")


def embedded_home(root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """Where the embedded default (synthetic data and tiny backbone) is built."""
    return Path(root) / "embedded"


def cache_dir(root: str | os.PathLike, kind: str) -> Path:
    """A cache folder under the root (``tokenized``, ``similarity``)."""
    return Path(root) / "cache" / kind


def experiment_dir(root: str | os.PathLike, name: str) -> Path:
    """A sweep's folder: its results database, the manifests of deleted merges, its report."""
    return Path(root) / "experiments" / name


def jobs_dir(root: str | os.PathLike, name: str, stage: str) -> Path:
    """Where a study's submitit jobs of one stage keep their files and logs."""
    return experiment_dir(root, name) / "jobs" / stage


def study_config(root: str | os.PathLike, name: str) -> Path:
    """A study's settings as it last started: the config that resumes it (``merginguriel study --config``)."""
    return experiment_dir(root, name) / "study.yaml"


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

    def merged(self, target: str, run: str) -> Path:
        return self.home / "merged" / target / run

    def runs(self, locale: str) -> Path:
        """Lightning's working files of ``locale``'s fit (logs, resume checkpoints): outside ``finetuned/``, which holds
        only exported models; a fixed place, so that a rerun finds them."""
        return self.home / "runs" / locale

    def fit_run(self, locale: str, output: str | os.PathLike) -> Path:
        """The working folder of a fit that exports ``output``: :meth:`runs` for the standard export, else beside
        the folder the user named (so that fits into different folders never share a resume point)."""
        return self.runs(locale) if Path(output) == self.finetuned(locale) else self.lightning_logs(output)

    @staticmethod
    def lightning_logs(output: str | os.PathLike) -> Path:
        """Lightning logs and resume checkpoints of the run that writes ``output`` (an AdaMerging merge, a fit into a
        folder of the user's), beside it: a fixed place, so that a rerun finds them."""
        out = Path(output)
        return out.with_name(out.name + ".lightning")

    def nxn(self, split: str) -> Path:
        return self.home / "nxn" / split

    def nxn_shard(self, split: str, locale: str) -> Path:
        """One source model's cells of a sharded NxN (a study's job per model), merged into ``nxn(split)`` after."""
        return self.nxn(split) / "shards" / locale

    def nxn_matrix(self, split: str) -> Path:
        return self.nxn(split) / NXN_MATRIX

    def statistics(self, kind: str, locale: str, key: str) -> Path:
        """Cached ``kind`` statistics of ``locale``'s model under the settings whose hash is ``key``."""
        return self.home / "statistics" / kind / locale / key

    def similarity(self, kind: str) -> Path:
        return self.home / "similarity" / kind

    def compatibility(self, kind: str) -> Path:
        return self.home / "compatibility" / kind

    def finetuned_locales(self) -> list[str]:
        """Locales with a finished fine-tune (a folder holding a manifest), sorted."""
        folder = self.home / "finetuned"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_finished(p))


def is_finished(folder: str | os.PathLike) -> bool:
    """A model folder is finished when its weights and its manifest are both there (the manifest is always the last
    thing an atomic write adds; weights without a manifest, or a manifest left without weights, are not finished)."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        return False
    return any(folder.glob("*.safetensors"))
