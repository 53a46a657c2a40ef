"""The registry of merge methods: small functions over tensor blocks, each with a params dataclass.

Writing a method
----------------
A method is a function ``fn(block: Block, params: P) -> torch.Tensor`` registered with :func:`register`::

    @dataclass
    class FisherParams:
        \"\"\"Fisher merging (methods.md).

        Args:
            eps: floor added to every Fisher value.
        \"\"\"
        eps: float = 1e-6

        def __post_init__(self):                 # validate; raise InputError naming problem and fix
            if self.eps < 0: raise InputError("fisher: eps must be >= 0; pass --merge.params.eps 1e-6")

    @register("fisher", FisherParams, inputs="models", needs=("fisher",))
    def fisher(block: Block, p: FisherParams) -> torch.Tensor:
        num = sum(c * (f + p.eps) * t for c, f, t in zip(block.weights, block.stats["fisher"], block.sources))
        den = sum(c * (f + p.eps) for c, f in zip(block.weights, block.stats["fisher"]))
        return num / den

Put the module in ``merginguriel/merging/methods/``: every module there is imported when the registry is first used,
so registering is all it takes to appear in ``merginguriel merge --list`` and to be accepted by ``merge()``.

What the engine hands a method (:class:`Block`)
-----------------------------------------------
The engine streams every tensor of the base (large ones in row blocks along dim 0) and calls ``fn`` once per block:

- ``block.name``: the tensor's name (e.g. ``roberta.encoder.layer.0.attention.self.query.weight``); ``block.shape`` the
  FULL tensor's shape; ``block.rows = (start, stop)`` the rows of dim 0 this block covers (``(0, shape[0])`` for a whole
  tensor, ``(0, 1)`` for a 0-d one); ``block.whole`` is True when the block is the whole tensor.
- ``block.base``: the base's values for the block (float32, on the merge device); ``None`` for a method registered
  with ``uses_base=False`` (e.g. linear, slerp), which then never reads the base's weights.
- ``block.sources``: K tensors shaped like ``block.base``: the fine-tuned values θ_i (``inputs="models"``) or the task
  vectors τ_i = θ_i − θ_b (``inputs="task_vectors"``; DARE, when the method is a ``dare_*`` variant, is already applied).
  The engine owns these tensors; a method may modify them in place.
- ``block.stacked``: in the merge pass, the same K source tensors as ONE ``[K, *block shape]`` tensor whose rows
  ``block.sources`` are views of (weighted sums as one matrix-vector product: ``torch.tensordot(w, stacked, 1)``);
  ``None`` in pre-passes.
- ``block.weights``: the K source weights as a float32 tensor on the device, normalised to sum 1
  (``block.raw_weights``: as given). Every source takes part with its weight; never drop one.
- ``block.stats[kind]``: for each ``kind`` in the method's ``needs``, one entry per source: the statistics tensor of the
  same name read from that source's statistics folder, float32 on the device; row-sliced like ``block.base`` when its
  shape equals the model tensor's shape, otherwise whole (e.g. a RegMean Gram matrix ``[in, in]`` beside a weight
  ``[out, in]``); ``None`` where that source's statistics have no tensor of this name (the method decides what then).
- ``block.sums``: the per-TENSOR sums the method asked for with ``tensor_sums`` (below), summed over ALL blocks of the
  tensor, so statistics such as norms are exact even when the tensor is split.
- ``block.thresholds``: a ``[K, R]`` tensor: for each source, the exact R magnitude thresholds the method asked for with
  ``ranks`` (below): the r-th largest |τ_i| over the tensor (scope ``tensor``) or over every merged tensor of the model
  (scope ``global``).
- ``block.seed``: the merge seed; ``block.source_keys``: a key per source derived from its weights (the checkpoint
  hash validation records), so seeding follows the model, not its folder's name or place.
- The return value: the merged values θ for the block (any float dtype, shape of ``block.base``); the engine casts it to
  the output dtype and writes it.

Statistics files (``needs``)
----------------------------
``needs=("fisher",)`` makes the engine read, for every source, the safetensors file(s) of the folders given in
``MergeSpec.statistics["fisher"]`` (one per source, in source order). `merginguriel merge` fills them with
:func:`merginguriel.statistics.cache.ensure_statistics`, which computes each source's statistics once and caches them
in ``Layout.statistics("fisher", L)/<settings-key>/`` (the key hashes examples, data and seed); without them the engine
falls back to ``Layout.statistics("fisher", L)`` itself.
Tensor names are the model's. The engine checks before merging that each folder exists, holds readable safetensors and
has no NaN/inf in the tensors it reads; statistics are streamed like weights (one file open at a time).

Hooks for methods that need more than one block at a time
---------------------------------------------------------
- ``tensor_sums(block, params) -> dict[str, Tensor]``: partial sums over a block (e.g. squared norms, dot products); the
  engine adds them over the tensor's blocks in a pre-pass (only for tensors split into blocks) and passes the totals
  in ``block.sums``. With ``sums_for(params, name, shape) -> bool`` only the tensors it accepts get sums (and only
  they are read in the pre-pass); with ``sums_after_thresholds=True`` the sums are taken with ``block.thresholds``
  already set (e.g. the L1 mass a magnitude mask removes), one extra pre-pass over the split tensors.
- ``ranks(params, numel) -> list[int]`` with ``rank_scope(params) -> "tensor" | "global"``: the ranks r (1 = largest) of
  |τ_i| whose values the method needs as thresholds; ``numel`` is the element count of the tensor (scope ``tensor``)
  or of every merged tensor together (scope ``global``). The engine computes them exactly by a streamed radix select.
- ``propagates_nonfinite=True`` (registration flag): the method's output is a sum of every input entry times a
  finite factor (linear, task arithmetic), so a NaN/inf in any source shows up in the output; the engine then checks
  only the output block (one pass instead of K) and, if it is not finite, finds the culprit source.
- ``check(params, k) -> None``: validation that needs the number of sources K (raise InputError).
- ``effective_weights(params, weights) -> list[float]``: the weights the method really uses (e.g. ``average``: 1/K);
  the manifest records these.

Parameter aliases (other tools' names)
--------------------------------------
A params dataclass may declare ``ALIASES = {"lambda": Alias("lam"), "density": Alias("p", lambda d: 1 - d, ...)}``
(a plain class attribute; inherited through the dataclass's bases). ``make_params`` accepts an alias in place of its
parameter (converted), refuses it together with a disagreeing value of the parameter itself, and ignores an alias
whose name is a real parameter of the class (e.g. ``dare_ties``'s own ``density``). ``merge --list`` shows them.
The manifest records the canonical names only.

What ``merge --list`` shows
---------------------------
The first paragraph of the method function's docstring is its summary; every further paragraph (conventions that
differ from the papers or from mergekit, variants) is printed below it, then the parameters with their help.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import pkgutil
import re
import textwrap
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from merginguriel.errors import InputError


@dataclass(frozen=True)
class Alias:
    """Another tool's name for a parameter: ``to`` is the parameter, ``convert`` maps the alias's value to it."""

    to: str
    convert: Callable[[Any], Any] | None = None
    help: str = ""

    def value(self, given: Any) -> Any:
        return self.convert(given) if self.convert is not None else given


def param_aliases(params: type) -> dict[str, Alias]:
    """The aliases a params dataclass accepts (from its bases up), minus those shadowed by a real parameter name."""
    out: dict[str, Alias] = {}
    for cls in reversed(params.__mro__):
        out.update(getattr(cls, "__dict__", {}).get("ALIASES", {}) or {})
    fields = {f.name for f in dataclasses.fields(params)}
    return {name: a for name, a in out.items() if name not in fields and a.to in fields}


@dataclass
class Block:
    """One block (a whole tensor or a range of its rows) of every checkpoint, as a method sees it (see module docstring)."""

    name: str
    shape: tuple[int, ...]
    rows: tuple[int, int]
    base: torch.Tensor | None
    sources: list[torch.Tensor]
    weights: torch.Tensor
    raw_weights: torch.Tensor
    seed: int
    source_keys: list[str]
    stats: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    thresholds: torch.Tensor | None = None
    stacked: torch.Tensor | None = None

    @property
    def whole(self) -> bool:
        first = self.shape[0] if self.shape else 1
        return self.rows == (0, first)


@dataclass(frozen=True)
class Method:
    """A registered merge method."""

    name: str
    fn: Callable[[Block, Any], torch.Tensor]
    params: type
    inputs: Literal["models", "task_vectors"] = "task_vectors"
    needs: tuple[str, ...] = ()
    dare: bool = False
    uses_base: bool = True
    propagates_nonfinite: bool = False
    tensor_sums: Callable[[Block, Any], dict[str, torch.Tensor]] | None = None
    ranks: Callable[[Any, int], list[int]] | None = None
    rank_scope: Callable[[Any], str] | None = None
    check: Callable[[Any, int], None] | None = None
    effective_weights: Callable[[Any, list[float]], list[float]] | None = None
    sums_for: Callable[[Any, str, tuple[int, ...]], bool] | None = None
    sums_after_thresholds: bool = False
    summary: str = ""
    notes: tuple[str, ...] = ()

    def make_params(self, given: dict[str, Any] | None) -> Any:
        """Build the params dataclass from a dict, refusing unknown names and wrong types with a clear message;
        other tools' names (``ALIASES``) are converted to the project's."""
        given = dict(given or {})
        known = {f.name: f for f in dataclasses.fields(self.params)}
        aliases = param_aliases(self.params)
        unknown = sorted(set(given) - set(known) - set(aliases))
        if unknown:
            also = f" (or {', '.join(aliases)})" if aliases else ""
            raise InputError(
                f"method {self.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; its parameters are "
                f"{', '.join(known) or '(none)'}{also} (see `merginguriel merge --list`)"
            )
        hints = typing.get_type_hints(self.params)
        for name in [n for n in given if n in aliases]:
            alias = aliases[name]
            raw = given.pop(name)
            value = alias.value(_coerce(self.name, name, raw, hints[alias.to])) if raw is not None else None
            if alias.to in given:
                mine = _coerce(self.name, alias.to, given[alias.to], hints[alias.to])
                same = mine == value or (
                    isinstance(mine, float) and isinstance(value, float) and math.isclose(mine, value, rel_tol=1e-12, abs_tol=1e-12)
                )
                if not same:
                    raise InputError(
                        f"method {self.name!r}: {name}={raw!r} means {alias.to}={value!r}, but {alias.to}={given[alias.to]!r} "
                        f"is given too; give only one of them"
                    )
                continue
            given[alias.to] = value
        for key, value in list(given.items()):
            given[key] = _coerce(self.name, key, value, hints[key])
        try:
            return self.params(**given)
        except InputError:
            raise
        except (TypeError, ValueError) as err:
            raise InputError(f"method {self.name!r}: bad parameters {given}: {err}") from err

    def describe(self) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, help) of every parameter, help taken from the params docstring's Args section."""
        docs = _arg_docs(self.params.__doc__ or "")
        hints = typing.get_type_hints(self.params)
        rows = []
        for f in dataclasses.fields(self.params):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f.name, _type_name(hints[f.name]), default, docs.get(f.name, "")))
        return rows


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(method: str, key: str, value: Any, tp: Any) -> Any:
    """Accept what YAML / JSON / the command line give (e.g. "0.3" or 1 for a float) and refuse the rest."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    if origin is Literal:
        if value not in args:
            raise InputError(f"method {method!r}: {key}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if args and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _coerce(method, key, value, inner[0])
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("true", "1", "yes"):
                    return True
                if low in ("false", "0", "no"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise InputError(f"method {method!r}: {key}={value!r} is not a valid {_type_name(tp)}") from None
    return value


def _arg_docs(doc: str) -> dict[str, str]:
    """Parse a Google-style ``Args:`` section into {name: help}."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    in_args, current = False, None
    for line in lines:
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):
            break
        m = re.match(r"^\s{2,8}(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.strip():
            out[current] += " " + line.strip()
    return out


METHODS: dict[str, Method] = {}
_LOADED = False


def register(
    name: str,
    params: type,
    *,
    inputs: Literal["models", "task_vectors"] = "task_vectors",
    needs: Sequence[str] = (),
    dare: bool = False,
    uses_base: bool = True,
    propagates_nonfinite: bool = False,
    tensor_sums: Callable[[Block, Any], dict[str, torch.Tensor]] | None = None,
    ranks: Callable[[Any, int], list[int]] | None = None,
    rank_scope: Callable[[Any], str] | None = None,
    check: Callable[[Any, int], None] | None = None,
    effective_weights: Callable[[Any, list[float]], list[float]] | None = None,
    sums_for: Callable[[Any, str, tuple[int, ...]], bool] | None = None,
    sums_after_thresholds: bool = False,
) -> Callable:
    """Decorator: register ``fn`` as merge method ``name`` with params dataclass ``params`` (see module docstring)."""
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"params of method {name!r} must be a dataclass")
    if inputs not in ("models", "task_vectors"):
        raise ValueError(f"inputs must be 'models' or 'task_vectors', not {inputs!r}")
    if inputs == "task_vectors" and not uses_base:
        raise ValueError("task vectors are taken against the base: a task-vector method uses the base")

    def deco(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name].fn is not fn:
            raise ValueError(f"merge method {name!r} is registered twice")
        paragraphs = [" ".join(p.split()) for p in (inspect.getdoc(fn) or "").split("\n\n") if p.strip()]
        METHODS[name] = Method(
            name=name, fn=fn, params=params, inputs=inputs, needs=tuple(needs), dare=dare, uses_base=uses_base,
            propagates_nonfinite=propagates_nonfinite,
            tensor_sums=tensor_sums, ranks=ranks, rank_scope=rank_scope, check=check,
            effective_weights=effective_weights, sums_for=sums_for, sums_after_thresholds=sums_after_thresholds,
            summary=paragraphs[0] if paragraphs else "", notes=tuple(paragraphs[1:]),
        )
        return fn

    return deco


def load_methods() -> dict[str, Method]:
    """Import every module of ``merginguriel.merging.methods`` (registering its methods) and return the registry."""
    global _LOADED
    if not _LOADED:
        from merginguriel.merging import methods as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
        _LOADED = True
    return METHODS


def get_method(name: str) -> Method:
    """The registered method ``name``; an InputError listing the known ones otherwise."""
    methods = load_methods()
    if name not in methods:
        raise InputError(
            f"unknown merge method {name!r}; known methods: {', '.join(sorted(methods))} "
            "(`merginguriel merge --list` shows their parameters)"
        )
    return methods[name]


def format_methods() -> str:
    """The text of ``merginguriel merge --list``: every method, its summary and its parameters with defaults and help."""
    lines = []
    for name in sorted(load_methods()):
        m = METHODS[name]
        extra = f" [needs statistics: {', '.join(m.needs)}]" if m.needs else ""
        lines.append(f"{name}: {m.summary}{extra}")
        for note in m.notes:
            lines.extend(textwrap.wrap(note, width=118, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False))
        for pname, ptype, default, help_ in m.describe():
            lines.append(f"    {pname} ({ptype}, default {default!r}): {help_}")
        for alias, a in param_aliases(m.params).items():
            lines.append(f"    {alias}: accepted for {a.to}" + (f" ({a.help})" if a.help else ""))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
