"""Parsing a command's options from its typed function, the LightningCLI way: the function's signature and docstring
are the options; every command takes ``-c/--config file.yaml``, dotted overrides (``--merge.params.density 0.2``) and
``--print_config``.

A parameter annotated ``Annotated[SomeDataclass, FLAT]`` hands the dataclass itself to the parser, litgpt style: its
fields are the command's top-level options (``merge`` takes a MergeJob: ``--target``, ``--selection.sources``, ...),
and the function receives the dataclass built from them (``SomeDataclass.from_dict`` when it has one). A dataclass may
also list extra sections (``sections()``: name, type, help), options given under their own name that ``from_dict``
folds in (a merge method's parameters: ``--adamerging.steps 3``). Parameters typed as callables are for library
callers and are not options.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Optional

_NUMBER = re.compile(r"^-?\d+(\.\d*)?([eE]-?\d+)?$")


class Flat:
    """The marker of a dataclass parameter whose fields are the command's top-level options (see the module doc)."""


FLAT = Flat()


def _flat_class(tp: Any) -> Optional[type]:
    if typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        if any(isinstance(a, Flat) for a in args[1:]):
            return args[0]
    return None


def _is_callable(tp: Any) -> bool:
    if _is_union(tp):
        return any(_is_callable(a) for a in typing.get_args(tp))
    return typing.get_origin(tp) is collections.abc.Callable or tp is collections.abc.Callable


def _sections(cls: type) -> list[tuple[str, Any, str]]:
    return list(getattr(cls, "sections", lambda: [])())


def _hints(func: Callable) -> dict[str, Any]:
    """Every option's type, a flat dataclass's fields (and sections) at the top level; callables left out."""
    hints = typing.get_type_hints(func, include_extras=True)
    hints.pop("return", None)
    out: dict[str, Any] = {}
    for name, tp in hints.items():
        cls = _flat_class(tp)
        if cls is not None:
            out.update(typing.get_type_hints(cls))
            out.update({section: Optional[stype] for section, stype, _ in _sections(cls)})
        elif not _is_callable(tp):
            out[name] = tp
    return out


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


def _flags(func: Callable) -> tuple[set[str], set[str]]:
    """The boolean and the list options of ``func``, read from its type hints."""
    options = _options(_hints(func))
    return {o for o, tp in options.items() if tp is bool}, {o for o, tp in options.items() if _is_list(tp)}


def normalise_argv(argv: list[str], func: Callable) -> list[str]:
    """Command-line sugar: ``--dry-run`` is ``--dry_run``; a bare boolean flag (``--list``) means true; a list option
    takes space-separated values (``--selection.sources de-DE fr-FR``) as well as ``[de-DE,fr-FR]``."""
    bools, lists = _flags(func)
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
            out += [tok, json.dumps([json.loads(v) if _NUMBER.match(v) else v for v in vals])]  # 3 stays an int
            i = j
            continue
        out.append(tok)
        i += 1
    return out


def _skipped(func: Callable) -> set[str]:
    """The parameters the parser does not add from the signature: flat dataclasses (added field by field) and callables."""
    hints = typing.get_type_hints(func, include_extras=True)
    return {name for name, tp in hints.items() if name != "return" and (_flat_class(tp) is not None or _is_callable(tp))}


def build_parser(func: Callable, prog: str):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=(func.__doc__ or "").split("\n\n")[0], exit_on_error=True)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    hints = typing.get_type_hints(func, include_extras=True)
    for tp in hints.values():
        cls = _flat_class(tp)
        if cls is not None:
            parser.add_class_arguments(cls, as_group=False)
            for section, stype, help_ in _sections(cls):
                parser.add_argument(f"--{section}", type=Optional[stype], default=None, help=help_)
    parser.add_function_arguments(func, as_group=False, skip=_skipped(func))
    return parser


def parse_function_args(func: Callable, argv: list[str], prog: str) -> dict[str, Any]:
    """``func``'s keyword arguments from ``argv``; dataclass-typed parameters come back instantiated."""
    parser = build_parser(func, prog)
    cfg = parser.instantiate(parser.parse_args(normalise_argv(list(argv), func)))
    hints = typing.get_type_hints(func, include_extras=True)
    kwargs = {}
    for name in inspect.signature(func).parameters:
        cls = _flat_class(hints.get(name))
        if cls is not None:
            values = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg}
            values.update({s: cfg[s] for s, _, _ in _sections(cls) if cfg.get(s) is not None})
            kwargs[name] = cls.from_dict(values) if hasattr(cls, "from_dict") else cls(**values)
        elif name in cfg:
            kwargs[name] = cfg[name]
    return kwargs
