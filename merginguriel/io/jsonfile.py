"""Reading JSON files that come from outside this run (model configs, tokenizer files, manifests): a malformed file is
an InputError that names it, with the line and column, and says what to do."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from merginguriel.errors import InputError

# The JSON files of a Hugging Face model folder that transformers parses when it loads one.
MODEL_JSON = ("config.json", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
              "generation_config.json", "model.safetensors.index.json")


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The parsed content of ``path``; InputError naming the file (and line, column) when it is not valid UTF-8 JSON.
    ``fix`` says what would repair it."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}, line {err.lineno} column {err.colno}: invalid JSON ({err.msg}); {fix}") from None


def check_model_json(folder: str | os.PathLike, role: str = "model") -> None:
    """InputError naming the first malformed JSON file of a Hugging Face model folder (nothing when all parse)."""
    folder = Path(folder)
    for name in MODEL_JSON:
        if (folder / name).is_file():
            read_json(folder / name, f"the {role} folder {folder} is damaged: restore {name} or export the model again")


@contextlib.contextmanager
def model_files_checked(folder: str | os.PathLike, role: str = "model") -> Iterator[None]:
    """Around a transformers load of ``folder``: when it fails because one of the folder's JSON files is malformed,
    raise the InputError that names that file instead (costs nothing when the load succeeds)."""
    try:
        yield
    except InputError:
        raise
    except Exception:
        if Path(folder).is_dir():
            check_model_json(folder, role)
        raise
