"""Uploading a finished model folder, with its model card, to the Hugging Face hub (`merginguriel push`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from merginguriel.errors import InputError
from merginguriel.models.hub import is_hub_id, offline

# Never uploaded: hidden files (temporaries, locks) and Lightning's training folders.
PUSH_IGNORE = [".*", "**/.*", "*.lightning/**"]


def push_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, revision: Optional[str] = None,
                commit_message: Optional[str] = None) -> str:
    """Upload a finished model folder, with its model card, to the hub repository ``repo_id`` (created if missing);
    returns the repository's URL. Needs a token (``hf auth login`` or ``HF_TOKEN``) and the network.

    A card merginguriel wrote (unedited) is rewritten to name ``repo_id`` in its usage example; an edited card is
    uploaded as it is.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    from merginguriel.checkpoints import is_finished
    from merginguriel.io import read_manifest
    from merginguriel.models.card import CARD_NAME, render_card, write_card

    folder = Path(folder)
    if not is_finished(folder):
        raise InputError(f"{folder} is not a finished model folder (manifest.json and safetensors weights); pass a "
                         "fine-tuned, merged or base model folder")
    if not is_hub_id(repo_id):
        raise InputError(f"repository id {repo_id!r} is not of the form namespace/name (e.g. your-name/sw-KE-ties)")
    if get_token() is None:
        raise InputError("no Hugging Face token: log in with `hf auth login`, or set HF_TOKEN to a token with write "
                         "access (https://huggingface.co/settings/tokens)")
    if offline():
        raise InputError("HF_HUB_OFFLINE=1 forbids network access, and pushing needs it; unset HF_HUB_OFFLINE")
    card = folder / CARD_NAME
    manifest = read_manifest(folder)
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if not card.is_file() or card.read_text(encoding="utf-8") == render_card(folder, manifest):
            write_card(folder, manifest, repo_id=repo_id)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                          commit_message=commit_message or f"merginguriel: {manifest.get('kind')} model {folder.name}",
                          ignore_patterns=PUSH_IGNORE)
    except HfHubHTTPError as err:
        raise InputError(f"pushing to {repo_id} failed: {err}; check that your token may write to {repo_id}") from err
    except Exception as err:
        # the hub client's transport errors (no network, DNS, timeouts) come from its HTTP library
        if not (isinstance(err, OSError) or type(err).__module__.split(".")[0].startswith(("httpx", "httpcore"))):
            raise
        raise InputError(f"pushing to {repo_id} failed, the hub could not be reached ({type(err).__name__}: {err}); "
                         "check the network") from err
    return str(url)
