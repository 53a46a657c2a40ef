"""Models named by Hugging Face hub id: resolving an id into the standard HF cache, and telling an id from a locale or a
folder.

A source given as ``namespace/name`` is fetched with ``huggingface_hub.snapshot_download`` (weights as safetensors,
config and tokenizer files only: a merge reads nothing else) into the cache every HF library shares (``HF_HUB_CACHE``),
so a second use, or an offline run (``HF_HUB_OFFLINE=1``), finds it there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from merginguriel.errors import InputError

# What a merge or an evaluation reads from a model repository; READMEs, other frameworks' weights and logs stay behind.
MODEL_FILES = [
    "*.safetensors", "model.safetensors.index.json", "config.json", "tokenizer*", "special_tokens_map.json",
    "added_tokens.json", "sentencepiece.bpe.model", "*.model", "vocab.*", "merges.txt",
]


def is_hub_id(name: str, namespaced: bool = True) -> bool:
    """Whether ``name`` is a valid hub model id that is not a local path (``namespaced``: ``namespace/name`` only,
    so a mistyped locale such as ``de-DEE`` is not taken for a model)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(name).exists() or (namespaced and name.count("/") != 1):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_id_of(path: str | os.PathLike) -> Optional[str]:
    """The hub id of a snapshot folder in the HF cache (``.../models--org--name/snapshots/<rev>``), else None."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/")
    return None


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def unavailable(repo_id: str, err: BaseException) -> InputError:
    """The error for a hub id that could not be resolved: why, and what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, IncompleteSnapshotError, RepositoryNotFoundError, RevisionNotFoundError

    from merginguriel.io.diskfull import error_chain

    # transformers wraps the hub library's error in its own OSError
    err = next((e for e in error_chain(err) if isinstance(e, (IncompleteSnapshotError, RepositoryNotFoundError, RevisionNotFoundError))), err)
    if isinstance(err, IncompleteSnapshotError):
        why = (f"is only partly in the Hugging Face cache ({constants.HF_HUB_CACHE}): finish the download with network "
               f"access (`hf download {repo_id}`)")
    elif isinstance(err, GatedRepoError):
        why = "is gated: accept its conditions on the hub and log in (`hf auth login`, or set HF_TOKEN)"
    elif isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)):
        why = "was not found on the hub (check the id; a private model needs `hf auth login` or HF_TOKEN)"
    elif offline():
        why = (f"is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloading "
               f"it: download it once with network access (`hf download {repo_id}`, or unset HF_HUB_OFFLINE), or point "
               "HF_HUB_CACHE at a cache that holds it")
    else:
        why = (f"could not be downloaded and is not in the Hugging Face cache ({constants.HF_HUB_CACHE}): check the "
               f"network, or download it where there is one (`hf download {repo_id}`) and copy the cache")
    detail = (str(err).strip().splitlines() or [""])[0][:200]
    return InputError(f"hub model {repo_id!r} {why} [{type(err).__name__}: {detail}]")


def resolve_hub_model(repo_id: str, revision: Optional[str] = None) -> Path:
    """The local snapshot folder of hub model ``repo_id`` (downloaded into the HF cache when missing and online)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES))
    except OSError as err:  # the hub library's not-found, gated, offline and connection errors are all OSErrors
        raise unavailable(repo_id, err) from err
    if not any(folder.glob("*.safetensors")):
        raise InputError(
            f"hub model {repo_id!r} has no safetensors weights ({folder}); merginguriel reads safetensors only: use a "
            "repository that has them (the hub's safetensors conversion bot adds them), or convert and pass a folder"
        )
    return folder
