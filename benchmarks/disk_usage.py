"""Check: what a run leaves on disk under a checkpoints root, against the exported models it made.

Everything under the root falls in one of five groups: the exported models (shared bases, fine-tunes, merges), the
embedded data, the caches (``cache/``, ``<backbone>/statistics/``), the experiments (results databases, reports, kept
manifests, study job logs), and the rest: training's working files and anything else left behind (``runs/``, NxN
cells, similarity matrices, locks). The rest must stay at most ``--max`` (default 20%) of the exported models.

    .venv/bin/python benchmarks/disk_usage.py --root checkpoints      # after `make demo`
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

GROUPS = ("exported models", "embedded data", "caches", "experiments", "working files and other")


def group_of(root: Path, rel: Path) -> str:
    """The group of a file, from its path relative to the root."""
    from merginguriel.checkpoints import is_finished

    parts = rel.parts
    if parts[0] in ("embedded", "cache", "experiments"):
        return {"embedded": "embedded data", "cache": "caches", "experiments": "experiments"}[parts[0]]
    if len(parts) > 2 and parts[1] == "statistics":
        return "caches"
    # a file of a finished model folder: <backbone>/base, <backbone>/finetuned/<locale>, <backbone>/merged/<target>/<run>
    depth = {"base": 2, "finetuned": 3, "merged": 4}.get(parts[1] if len(parts) > 1 else "", 0)
    if depth and len(parts) > depth and is_finished(root.joinpath(*parts[:depth])):
        return "exported models"
    return "working files and other"


def usage(root: Path) -> tuple[Counter, Counter]:
    """Bytes per group, and the bytes of 'working files and other' per top folder (``<backbone>/runs``, ...)."""
    sizes, rest = Counter(), Counter()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(root)
            group = group_of(root, rel)
            sizes[group] += path.stat().st_size
            if group == GROUPS[-1]:
                rest["/".join(rel.parts[:2])] += path.stat().st_size
    return sizes, rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="checkpoints", help="the checkpoints root (default: checkpoints)")
    parser.add_argument("--max", type=float, default=0.2, help="the most 'working files and other' may be, as a share of "
                                                               "the exported models (default 0.2)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        parser.error(f"{root} is not a folder; run `make demo` first or pass --root")
    sizes, rest = usage(root)
    models = sizes["exported models"]
    print(f"| {root} | MB | share of the exported models |\n|---|---|---|")
    for group in GROUPS:
        share = f"{sizes[group] / models:.1%}" if models else ""
        print(f"| {group} | {sizes[group] / 1e6:.2f} | {share} |")
    for folder, n in rest.most_common(5):
        print(f"|   {folder} | {n / 1e6:.3f} | |")
    ratio = sizes[GROUPS[-1]] / models if models else float("inf")
    verdict = "within" if ratio <= args.max else "OVER"
    print(f"\nworking files and other: {ratio:.2%} of the exported models ({verdict} the {args.max:.0%} budget)")
    return 0 if ratio <= args.max else 1


if __name__ == "__main__":
    sys.exit(main())
