"""The shared base: the pretrained encoder plus a 60-intent head initialised with a fixed seed, saved once per backbone.

Every fine-tune starts from this folder and records its path and hash, so every merge takes task vectors against the
true common starting point (never a source model, never a differently-initialised head).
"""

from __future__ import annotations

import os
from pathlib import Path


from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, Layout, embedded_home, is_finished
from merginguriel.io import read_manifest

DEFAULT_BASE_SEED = 42


def resolve_backbone(backbone: str, root: str | os.PathLike = DEFAULT_ROOT) -> tuple[str, Layout]:
    """Map a backbone name to what `from_pretrained` takes and to its checkpoint layout.

    ``embedded`` is the tiny XLM-R-architecture backbone built on the spot (cached under ``<root>/embedded``).
    """
    if backbone == EMBEDDED:
        from merginguriel.embedded.build import ensure_embedded_backbone

        return str(ensure_embedded_backbone(embedded_home(root))), Layout.for_backbone(backbone, root)
    return backbone, Layout.for_backbone(backbone, root)


def ensure_base(backbone: str = EMBEDDED, root: str = DEFAULT_ROOT, seed: int = DEFAULT_BASE_SEED) -> Path:
    """Save (or find) the shared base of a backbone: its pretrained encoder plus a 60-intent head seeded once.

    A finished base is never rebuilt; every fine-tune of the backbone starts from it.

    Args:
        backbone: ``embedded`` (the offline tiny backbone), a hub id or a local folder.
        root: the checkpoints root.
        seed: the seed of the classification head (one per backbone: every fine-tune shares the base).
    """
    from merginguriel.errors import InputError
    from merginguriel.io import checkpoint_ref

    source, layout = resolve_backbone(backbone, root)
    folder = layout.base
    # a backbone that is a folder (the embedded one, a local model) is identified by its weights, so a base made from
    # an earlier build of it is never taken for this one
    source_hash = checkpoint_ref(source)["hash"] if Path(source).is_dir() else None
    if is_finished(folder):
        manifest = read_manifest(folder)
        recorded = manifest.get("seed")
        if recorded is not None and int(recorded) != int(seed):
            raise InputError(
                f"{folder} holds a shared base made with head seed {recorded}, not {seed}; every fine-tune of a backbone "
                "must share one base: keep the seed, or use another --root"
            )
        made_from = manifest.get("source_hash")
        if source_hash is not None and made_from is not None and made_from != source_hash:
            raise InputError(
                f"{folder} holds a shared base made from another build of {backbone} ({source}); its fine-tunes and merges "
                f"come from that build too: delete {layout.home} (e.g. `make clean`) to start again, or use another --root"
            )
        return folder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from merginguriel.locales import ID2LABEL, LABEL2ID, NUM_INTENTS
    from merginguriel.io import model_files_checked
    from merginguriel.models.export import export_hf

    import torch

    # The seed fixes the freshly initialised classification head (the encoder comes from the checkpoint).
    torch.manual_seed(seed)
    try:
        with model_files_checked(source, "backbone"):
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=NUM_INTENTS, id2label=dict(ID2LABEL), label2id=dict(LABEL2ID)
            )
            tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:  # a hub id that is not cached while offline, not on the hub, or not reachable
        if Path(source).is_dir():
            raise
        from merginguriel.models.hub import unavailable

        raise unavailable(source, err) from err
    export_hf(model, tokenizer, folder, kind="base", backbone=backbone, source=source, source_hash=source_hash, seed=seed,
              overwrite=False)
    return folder
