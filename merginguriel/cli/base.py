"""`merginguriel base`."""

from __future__ import annotations

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED


def base(backbone: str = EMBEDDED, root: str = DEFAULT_ROOT, seed: int = 42) -> int:
    """Save (or find) the shared base of a backbone: its pretrained encoder plus a 60-intent head seeded once.

    Args:
        backbone: ``embedded`` (the offline tiny backbone), a hub id or a local folder.
        root: the checkpoints root.
        seed: the seed of the classification head (one per backbone: every fine-tune shares the base).
    """
    from merginguriel.io import read_manifest
    from merginguriel.models.base import ensure_base

    folder = ensure_base(backbone, root, seed)
    manifest = read_manifest(folder)
    print(f"shared base: {folder} (hash {manifest['hash'][:12]}, head seed {manifest['seed']})")
    return 0
