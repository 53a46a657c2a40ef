"""Reading JSON and YAML files that come from outside this run (model configs, tokenizer files, manifests, configs): a
malformed file is an InputError that names it, with the line and column, and says what to do."""

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


_KINDS = {list: "a list", int: "a number", float: "a number", bool: "a boolean", str: "a single text value"}


def read_yaml_mapping(path: str | os.PathLike, what: str, example: str) -> dict:
    """A YAML file that must hold a mapping (a config): InputError naming ``what`` and the file when it is not UTF-8,
    not YAML, empty or another kind of value; ``example`` shows what a valid one holds."""
    import yaml

    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{what} {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                         "save it as UTF-8 YAML") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{what} {path}{at}: invalid YAML ({getattr(err, 'problem', None) or err}); fix the file") from None
    if not isinstance(loaded, dict):
        kind = "empty" if loaded is None else f"{_KINDS.get(type(loaded), 'a single value')}, not a mapping"
        raise InputError(f"{what} {path} is {kind}; it holds key: value lines ({example})")
    return loaded


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
