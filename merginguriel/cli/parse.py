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

from merginguriel.errors import InputError, close_matches

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


def _is_str_list(tp: Any) -> bool:
    if _is_union(tp):
        return any(_is_str_list(a) for a in typing.get_args(tp))
    return typing.get_origin(tp) is list and typing.get_args(tp) == (str,)


def _flags(func: Callable) -> tuple[set[str], set[str], set[str]]:
    """The boolean, the list and the list-of-text options of ``func``, read from its type hints."""
    options = _options(_hints(func))
    return ({o for o, tp in options.items() if tp is bool}, {o for o, tp in options.items() if _is_list(tp)},
            {o for o, tp in options.items() if _is_str_list(tp)})


def normalise_argv(argv: list[str], func: Callable) -> list[str]:
    """Command-line sugar: ``--dry-run`` is ``--dry_run``; a bare boolean flag (``--list``) means true; a list option
    takes space-separated values (``--selection.sources de-DE fr-FR``) as well as ``[de-DE,fr-FR]``, and given again
    on the command line it collects (``--text a --text b``); ``-`` is a value (stdin), not an option."""
    bools, lists, texts = _flags(func)
    collected: dict[str, int] = {}  # list option -> where its values sit in ``out``
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


def _is_mapping(tp: Any) -> bool:
    if _is_union(tp):
        return any(_is_mapping(a) for a in typing.get_args(tp))
    return tp is dict or typing.get_origin(tp) is dict


def set_override(mapping: dict, path: str, value: Any, option: str) -> None:
    """Set a dotted ``path`` inside a mapping option, keeping everything else in it. A key that is the whole remaining
    path (a sweep grid's ``merge.method``) is replaced as it is; otherwise the first part names a section, entered
    (or created)."""
    node, rest = mapping, path
    while rest not in node and "." in rest:
        head, rest = rest.split(".", 1)
        if not isinstance(node.setdefault(head, {}), dict):
            raise InputError(f"--{option}.{path}: {head!r} holds a value, not a section; set --{option}.{path[:-len(rest) - 1]} itself")
        node = node[head]
    node[rest] = value


def _mapping_overrides(argv: list[str], func: Callable) -> tuple[list[str], list[tuple[str, str, Any]]]:
    """``--option.key.sub value`` for a mapping-typed option (a study's ``sweep``, ``submitit``): pulled out of argv as
    (option, dotted key, value read as YAML, so ``30`` is an int and ``[ties]`` a list)."""
    import yaml

    mappings = {name for name, tp in _hints(func).items() if _is_mapping(tp)}
    rest, pulled, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        option, _, path = tok[2:].partition(".") if tok.startswith("--") else ("", "", "")
        if option in mappings and path:
            path, eq, raw = path.partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise InputError(f"--{option}.{path} needs a value")
                raw, i = argv[i + 1], i + 1
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            pulled.append((option, path, value))
        else:
            rest.append(tok)
        i += 1
    return rest, pulled


def _parse(parser, argv: list[str], prog: str):
    """``parser.parse_args(argv)``, with an option it does not know refused by name, and the close ones suggested
    (``--merge.methd``: did you mean --merge.method?); any other parse error as jsonargparse reports it."""
    from argparse import ArgumentError

    parser.exit_on_error = False
    try:
        return parser.parse_args(argv)
    except ArgumentError as err:
        message = str(err)
        if message.startswith("unrecognized arguments:"):
            given = [t.split("=", 1)[0] for t in message.split(":", 1)[1].split() if t.startswith("-")]
            known = [o for o in parser._option_string_actions if o.startswith("--") and not o.endswith(("+", ".help"))]
            if given:
                named = [f"{g} (did you mean {close[0]}?)" if (close := close_matches(g, known, 1)) else g for g in given]
                raise InputError(f"unknown option(s) {', '.join(named)} (`{prog} --help` lists every option)") from None
        parser.exit_on_error = True
        parser.error(message)


def parse_function_args(func: Callable, argv: list[str], prog: str) -> dict[str, Any]:
    """``func``'s keyword arguments from ``argv``; dataclass-typed parameters come back instantiated. Dotted overrides
    into a mapping option apply over its value from the config file and the rest of the command line."""
    import copy

    parser = build_parser(func, prog)
    argv, pulled = _mapping_overrides(normalise_argv(list(argv), func), func)
    if pulled:
        first = _parse(parser, [a for a in argv if not a.startswith("--print_config")], prog)
        merged = {option: copy.deepcopy(first[option] or {}) for option, _, _ in pulled}
        for option, path, value in pulled:
            set_override(merged[option], path, value, option)
        argv = [*argv, *(x for option, value in merged.items() for x in (f"--{option}", json.dumps(value)))]
    cfg = parser.instantiate(_parse(parser, argv, prog))
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
