"""Parsing a command's options from its typed function, the LightningCLI way: the function's signature and docstring
are the options; every command takes ``-c/--config file.yaml``, dotted overrides (``--merge.params.density 0.2``) and
``--print_config``."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from typing import Any

_NUMBER = re.compile(r"^-?\d+(\.\d*)?([eE]-?\d+)?$")


def _options(hints: dict[str, Any], prefix: str = "--") -> dict[str, Any]:
    """Every option's type, dataclass-typed parameters walked into (``--selection.sources``)."""
    out = {}
    for name, tp in hints.items():
        inner = [a for a in typing.get_args(tp) if a is not type(None)] if _is_union(tp) else [tp]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            out.update(_options(typing.get_type_hints(inner[0]), f"{prefix}{name}."))
        else:
            out[prefix + name] = tp
    return out


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_list(tp: Any) -> bool:
    if _is_union(tp):
        return any(_is_list(a) for a in typing.get_args(tp))
    return typing.get_origin(tp) in (list, tuple) or tp in (list, tuple)


def _is_str_list(tp: Any) -> bool:
    if _is_union(tp):
        return any(_is_str_list(a) for a in typing.get_args(tp))
    return typing.get_origin(tp) is list and typing.get_args(tp) == (str,)


def _flags(func: Callable) -> tuple[set[str], set[str], set[str]]:
    """The boolean, the list and the list-of-text options of ``func``, read from its type hints."""
    hints = typing.get_type_hints(func)
    hints.pop("return", None)
    options = _options(hints)
    return ({o for o, tp in options.items() if tp is bool}, {o for o, tp in options.items() if _is_list(tp)},
            {o for o, tp in options.items() if _is_str_list(tp)})


def normalise_argv(argv: list[str], func: Callable) -> list[str]:
    """Command-line sugar: ``--dry-run`` is ``--dry_run``; a bare boolean flag (``--list``) means true; a list option
    takes space-separated values (``--selection.sources de-DE fr-FR``) as well as ``[de-DE,fr-FR]``, and given again
    on the command line it collects (``--text a --text b``); ``-`` is a value (stdin), not an option."""
    bools, lists, texts = _flags(func)
    out, i = [], 0
    collected: dict[str, int] = {}  # list option -> where its values sit in ``out``
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
            while j < len(argv) and (argv[j] == "-" or not argv[j].startswith("-") or _NUMBER.match(argv[j])):
                vals.append(argv[j])
                j += 1
            # 3 stays an int, but not where the values are text
            vals = [json.loads(v) if _NUMBER.match(v) and tok not in texts else v for v in vals]
            if tok in collected:
                out[collected[tok]] = json.dumps(json.loads(out[collected[tok]]) + vals)
            else:
                collected[tok] = len(out) + 1
                out += [tok, json.dumps(vals)]
            i = j
            continue
        out.append(tok)
        i += 1
    return out


def build_parser(func: Callable, prog: str):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=(func.__doc__ or "").split("\n\n")[0], exit_on_error=True)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_function_arguments(func, as_group=False)
    return parser


def parse_function_args(func: Callable, argv: list[str], prog: str) -> dict[str, Any]:
    """``func``'s keyword arguments from ``argv``; dataclass-typed parameters come back instantiated."""
    parser = build_parser(func, prog)
    cfg = parser.instantiate(parser.parse_args(normalise_argv(list(argv), func)))
    return {name: cfg[name] for name in inspect.signature(func).parameters if name in cfg}
