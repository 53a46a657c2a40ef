"""Subcommands over a typed function: the arguments come from its signature and docstring, the LightningCLI way."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any


def parse_function_args(func: Callable, argv: list[str], prog: str, skip: Iterable[str] = ()) -> dict[str, Any]:
    """``func``'s keyword arguments from ``argv``: ``--config file.yaml``, dotted overrides (``--data.root x``) and
    ``--print_config`` (prints the resolved config and exits); dataclass-typed parameters come back instantiated."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    skip = set(skip)
    parser = ArgumentParser(prog=prog, description=(func.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(func, as_group=False, skip=skip)
    cfg = parser.instantiate_classes(parser.parse_args(argv))
    return {name: cfg[name] for name in inspect.signature(func).parameters if name not in skip and name in cfg}
