"""`merginguriel push`."""

from __future__ import annotations

from typing import Optional


def push(
    folder: str,
    repo_id: str,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
) -> str:
    """Upload a model folder (fine-tuned, merged or base) with its model card to the Hugging Face hub.

    Needs a token with write access: `hf auth login`, or HF_TOKEN in the environment.

    Args:
        folder: the model folder (weights, config, tokenizer, manifest.json, README.md).
        repo_id: the hub repository, namespace/name (created if missing).
        private: create the repository as private.
        revision: the branch to push to (default: main).
        commit_message: the commit message (default: names the model folder).
    """
    from merginguriel.models.push import push_folder

    return push_folder(folder, repo_id, private=private, revision=revision, commit_message=commit_message)
