"""Parsing a command's options from its typed function, the LightningCLI way: the function's signature and docstring
are the options; every command takes ``-c/--config file.yaml``, dotted overrides (``--merge.params.density 0.2``) and
``--print_config``."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

_NUMBER = re.compile(r"^-?\d+(\.\d*)?([eE]-?\d+)?$")


def _bool_options(func: Callable) -> set[str]:
    return {f"--{name}" for name, p in inspect.signature(func).parameters.items() if p.annotation in (bool, "bool")}


def normalise_argv(argv: list[str], func: Callable, list_options: Iterable[str] = ()) -> list[str]:
    """Command-line sugar: ``--dry-run`` is ``--dry_run``; a bare boolean flag (``--list``) means true; a list option
    takes space-separated values (``--selection.sources de-DE fr-FR``) as well as ``[de-DE,fr-FR]``."""
    bools, lists = _bool_options(func), set(list_options)
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--") and "=" not in tok:
            tok = "--" + tok[2:].replace("-", "_")
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if tok in bools and (nxt is None or nxt.startswith("--")):
            out += [tok, "true"]
            i += 1
            continue
        if tok in lists and nxt is not None and not nxt.startswith(("[", "--")):
            vals, j = [], i + 1
            while j < len(argv) and (not argv[j].startswith("-") or _NUMBER.match(argv[j])):
                vals.append(argv[j])
                j += 1
            out += [tok, json.dumps([float(v) if _NUMBER.match(v) else v for v in vals])]
            i = j
            continue
        out.append(tok)
        i += 1
    return out


def build_parser(func: Callable, prog: str, skip: Iterable[str] = ()):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=(func.__doc__ or "").split("\n\n")[0], exit_on_error=True)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_function_arguments(func, as_group=False, skip=set(skip))
    return parser


def parse_function_args(func: Callable, argv: list[str], prog: str, skip: Iterable[str] = (),
                        list_options: Iterable[str] = ()) -> dict[str, Any]:
    """``func``'s keyword arguments from ``argv``; dataclass-typed parameters come back instantiated."""
    skip = set(skip)
    parser = build_parser(func, prog, skip)
    cfg = parser.instantiate(parser.parse_args(normalise_argv(list(argv), func, list_options)))
    return {name: cfg[name] for name in inspect.signature(func).parameters if name not in skip and name in cfg}
