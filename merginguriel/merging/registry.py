"""The registry of merge methods: one way to register every method, and one object that describes it.

A method is a name, a typed parameters dataclass, what it needs besides the base, the sources and their weights, and
the function that merges:

    @dataclass(frozen=True)
    class FisherParams(StatisticsData):
        \"\"\"Fisher merging.

        Args:
            eps: floor of every Fisher value.
        \"\"\"
        eps: float = 1e-6

    @register("fisher", FisherParams, reads=lambda p: Reads(inputs="models", statistics=("fisher",)),
              needs=Needs(statistics=(Statistic("fisher", compute=fisher_statistics),), rows=statistics_rows))
    def fisher(block: Block, p: FisherParams) -> torch.Tensor:
        ...

Put the module in ``merginguriel/merging/methods/``: every module there is imported when the registry is first used,
so registering is all it takes to appear in ``merginguriel merge --list`` and to run as a merge job. A merge job never
looks at a method's name: it reads ``Method.needs`` (statistics of every source; unlabelled target utterances and a
Lightning Trainer; or nothing) and hands the checked inputs to the method.

Parameters
----------
A params dataclass is frozen and parsed once (:meth:`Method.make_params`: names and types from YAML, JSON or the
command line, other tools' names through ``ALIASES``); its ``__post_init__`` refuses values out of range with an
InputError naming the fix. Subclassing :class:`Params` gives two more checks with defaults:
``check_sources(sources)`` (what depends on the sources: their number, where their weights came from) and
``effective_weights(weights)`` (the weights the method really uses, e.g. ``average``: 1/K; the manifest records them).
A params dataclass may declare ``ALIASES = {"lambda": Alias("lam"), "density": Alias("p", lambda d: 1 - d, ...)}``
(inherited through its bases): :meth:`Method.make_params` accepts an alias in place of its parameter (converted),
refuses it beside a disagreeing value of the parameter itself, and ignores an alias whose name is a real parameter of
the class (``dare_ties``'s own ``density``). The manifest records the canonical names only.

What a streamed method reads (:class:`Reads`)
---------------------------------------------
``reads(params)`` tells the engine what to hand the merge function for these parameters:

- ``inputs``: the fine-tuned values θ_i (``models``) or the task vectors τ_i = θ_i − θ_b (``task_vectors``);
- ``base``: whether the base's values are read (``linear`` and ``slerp`` never read them);
- ``transform``: applied to each source's task vector as it is read, before any threshold or sum sees it (DARE's
  seeded random drop, merging/dare_mask.py);
- ``thresholds``: the exact r-th largest |τ_i| per source for the ranks r a function of the element count gives,
  over each tensor (scope ``tensor``) or over every merged tensor of the model (scope ``global``); the engine computes
  them by a streamed select, so they are exact whatever the block size;
- ``sums``: per-tensor sums of blocks (norms, Gram matrices), added over a split tensor's blocks in a pre-pass, for
  the tensors ``applies`` accepts; ``after_thresholds`` when the sums read the thresholds;
- ``statistics``: the kinds of per-source statistics tensors streamed beside the weights;
- ``carries_nonfinite``: the output is a sum of every input entry times a finite factor, so a NaN/inf in a source
  shows in the output; the engine then checks the output block only (one pass instead of K).

What the engine hands a merge function (:class:`Block`)
-------------------------------------------------------
The engine streams every tensor of the base (large ones in row blocks along dim 0) and calls the function once per
block with the kernel parameters (``Method.to_kernel(params)``; the params themselves unless the method is a preset):

- ``block.name``, ``block.shape`` (of the FULL tensor), ``block.rows = (start, stop)`` (``(0, 1)`` for a 0-d tensor),
  ``block.whole`` (the block is the whole tensor);
- ``block.base``: the base's values (float32, on the merge device; None when ``reads.base`` is False);
- ``block.sources``: K tensors shaped like the block (models or task vectors, transformed); the engine owns them and
  a method may modify them in place; ``block.stacked``: in the merge pass the same K tensors as one ``[K, *block]``
  tensor whose rows ``block.sources`` are views of (None in pre-passes);
- ``block.weights``: the K effective weights normalised to sum 1 (float32); ``block.raw_weights``: as given. Every
  source takes part with its weight;
- ``block.stats[kind]``: per source, the statistics tensor of the block's name (row-sliced like the block when shaped
  like the weight, whole otherwise, e.g. a RegMean Gram matrix), None where a source has none;
- ``block.sums``: the per-tensor sums over ALL of the tensor's blocks; ``block.thresholds``: a ``[K, R]`` tensor;
- ``block.seed`` and ``block.source_keys`` (one key per source: its weights' hash, so seeding follows the model).

The function returns the merged values of the block (any float dtype); the engine casts them and writes them.

Methods that are not streamed
-----------------------------
A method registered with ``streamed=False`` (AdaMerging) is a function ``run(plan, options, context) -> Path`` over
the checked merge plan (merginguriel.merging.validate.Plan): it writes the output folder itself, atomically, through
:func:`merginguriel.merging.manifest.write_merged_manifest`.

Presets
-------
``preset_of`` names the method whose merge function a preset shares, and ``to_kernel`` maps the preset's parameters
to that method's: the task-vector family (merging/methods/task_vectors.py) has today's task-vector methods as presets.

What ``merge --list`` shows
---------------------------
The first paragraph of the merge function's docstring is its summary; every further paragraph (conventions that
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
from typing import Any, Literal, Optional

import torch

from merginguriel.errors import InputError, did_you_mean


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


WeightsFrom = Literal["given", "equal", "similarity"]


@dataclass(frozen=True)
class SourceSet:
    """What a method's parameters may be checked against before any model is read: how many sources there are and
    where their weights come from (``given`` by the user, ``equal``, or a selection's ``similarity`` scores)."""

    count: int
    weights_from: WeightsFrom = "given"


@dataclass(frozen=True)
class Params:
    """Base of the params dataclasses: the checks and the weights a method's parameters imply (see the module doc).
    A dataclass without fields, so that every params class is a dataclass all the way up (parsers read it so)."""

    def check_sources(self, sources: SourceSet) -> None:
        """Refuse (InputError) parameters that do not fit the sources."""

    def effective_weights(self, weights: list[float]) -> list[float]:
        """The weights the method really uses, given the sources' weights."""
        return weights


def set_default(params: Any, name: str, value: Any) -> None:
    """Fill a field of a frozen params dataclass in its ``__post_init__`` (a default that depends on another field)."""
    object.__setattr__(params, name, value)


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
class Where:
    """Where a block of a source's task vector lies, for a ``Reads.transform``: the tensor, its full shape, the rows,
    the merge seed and the source's key (its weights' hash)."""

    name: str
    shape: tuple[int, ...]
    rows: tuple[int, int]
    seed: int
    key: str


@dataclass(frozen=True)
class Thresholds:
    """Exact magnitude thresholds: ``ranks(numel)`` gives the ranks (1 = largest |τ|) over ``numel`` entries of a
    tensor (scope ``tensor``) or of every merged tensor together (scope ``global``)."""

    scope: Literal["tensor", "global"]
    ranks: Callable[[int], list[int]]


def _every_tensor(name: str, shape: tuple[int, ...]) -> bool:
    return True


@dataclass(frozen=True)
class Sums:
    """Per-tensor sums: ``sums(block)`` gives partial sums of a block, added over the blocks of a split tensor."""

    sums: Callable[[Block], dict[str, torch.Tensor]]
    applies: Callable[[str, tuple[int, ...]], bool] = _every_tensor
    after_thresholds: bool = False


@dataclass(frozen=True)
class Reads:
    """What the engine streams to a method's merge function for one set of parameters (see the module docstring)."""

    inputs: Literal["models", "task_vectors"] = "task_vectors"
    base: bool = True
    transform: Optional[Callable[[torch.Tensor, Where], None]] = None
    thresholds: Optional[Thresholds] = None
    sums: Optional[Sums] = None
    statistics: tuple[str, ...] = ()
    carries_nonfinite: bool = False

    def __post_init__(self) -> None:
        if self.inputs not in ("models", "task_vectors"):
            raise ValueError(f"inputs must be 'models' or 'task_vectors', not {self.inputs!r}")
        if self.inputs == "task_vectors" and not self.base:
            raise ValueError("task vectors are taken against the base: a task-vector method reads the base")


@dataclass(frozen=True)
class Statistic:
    """Per-source statistics a method needs: ``compute(model, rows, params, seed, device, tokenizer)`` returns
    ``{tensor name: tensor}`` for one source model over its example token rows; ``settings(params)`` adds what else
    decides the numbers to the cache key (the data, examples and seed are always in it)."""

    kind: str
    compute: Callable[..., dict[str, torch.Tensor]]
    settings: Callable[[Any], dict] = lambda params: {}


@dataclass(frozen=True)
class Needs:
    """What a merge job gathers for a method before it runs: per-source ``statistics``; the target's unlabelled
    utterances (``target_data``) and a Lightning Trainer (``trainer``, from the job's ``trainer`` options); nothing.
    ``rows(params, target, source_locales)`` lists the ``(locale, split)`` whose rows the method reads, so the job's
    check refuses a missing split before any work."""

    statistics: tuple[Statistic, ...] = ()
    target_data: bool = False
    trainer: bool = False
    rows: Optional[Callable[[Any, Optional[str], list[Optional[str]]], list[tuple[str, str]]]] = None

    @property
    def data(self) -> bool:
        """Whether the method reads data (a target needs to be known, the data source must be readable)."""
        return bool(self.statistics) or self.target_data


def _no_reads(params: Any) -> Reads:
    return Reads()


def _same(params: Any) -> Any:
    return params


@dataclass(frozen=True)
class Method:
    """A registered merge method (see the module docstring)."""

    name: str
    params: type
    fn: Callable
    streamed: bool = True
    reads: Callable[[Any], Reads] = _no_reads
    needs: Needs = Needs()
    to_kernel: Callable[[Any], Any] = _same
    preset_of: Optional[str] = None
    section: Optional[str] = None
    summary: str = ""
    notes: tuple[str, ...] = ()

    def make_params(self, given: Any) -> Any:
        """The typed parameters from a mapping (YAML / JSON / the command line: names checked, values coerced, other
        tools' names converted), or ``given`` itself when it already is this method's params dataclass (another
        dataclass, e.g. the options class the method's params extend, is read as the mapping of its fields)."""
        if isinstance(given, self.params):
            return given
        if dataclasses.is_dataclass(given) and not isinstance(given, type):
            given = dataclasses.asdict(given)
        if given is not None and not isinstance(given, dict):
            raise InputError(f"method {self.name}'s parameters (merge.params) must be a mapping of name: value, not "
                             f"{given!r}; write e.g. merge.params: {{density: 0.2}} (a sweep grid: merge.params: "
                             "[{density: 0.2}], or merge.params.density: [0.2])")
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

    def canonical(self, given: dict[str, Any], params: Any) -> dict[str, Any]:
        """The parameters a job gave, under their canonical names and with the values as the method reads them (``"0.2"``
        from a command line is 0.2, mergekit's ``lambda`` is ``lam``, DARE's ``density`` is 1 - p): equal jobs give
        equal mappings, so they have equal keys."""
        aliases = param_aliases(self.params)
        names = dict.fromkeys(aliases[k].to if k in aliases else k for k in given)
        return {name: getattr(params, name) for name in names}

    def describe(self) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, help) of every parameter, help taken from the params docstring's Args section."""
        docs = _arg_docs(self.params.__doc__ or "")
        hints = typing.get_type_hints(self.params)
        rows = []
        for f in dataclasses.fields(self.params):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f.name, _type_name(hints[f.name]), default, docs.get(f.name, "")))
        return rows


def params_dict(params: Any) -> dict[str, Any]:
    """A params dataclass as the manifest records it."""
    return dataclasses.asdict(params)


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
    reads: Callable[[Any], Reads] = _no_reads,
    needs: Needs = Needs(),
    streamed: bool = True,
    to_kernel: Callable[[Any], Any] = _same,
    preset_of: Optional[str] = None,
    section: Optional[str] = None,
    doc: Optional[str] = None,
) -> Callable:
    """Decorator: register ``fn`` as merge method ``name`` with the frozen params dataclass ``params`` (module doc);
    ``doc`` replaces the function's docstring in ``merge --list`` (presets share their family's function)."""
    if not (dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen):
        raise TypeError(f"params of method {name!r} must be a frozen dataclass (parsed once, never changed)")

    def deco(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name].fn is not fn:
            raise ValueError(f"merge method {name!r} is registered twice")
        text = inspect.cleandoc(doc) if doc is not None else inspect.getdoc(fn) or ""
        paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
        METHODS[name] = Method(
            name=name, params=params, fn=fn, streamed=streamed, reads=reads, needs=needs, to_kernel=to_kernel,
            preset_of=preset_of, section=section, summary=paragraphs[0] if paragraphs else "", notes=tuple(paragraphs[1:]),
        )
        return fn

    return deco


def load_methods() -> dict[str, Method]:
    """Import every module of ``merginguriel.merging.methods`` (registering its methods) and return the registry."""
    global _LOADED
    if not _LOADED:
        import merginguriel.merging.methods as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
        _LOADED = True
    return METHODS


def get_method(name: str) -> Method:
    """The registered method ``name``; an InputError listing the known ones otherwise."""
    methods = load_methods()
    if name not in methods:
        raise InputError(
            f"unknown merge method {name!r}.{did_you_mean(name, methods)} Known methods ({len(methods)}): "
            f"{', '.join(sorted(methods))} (`merginguriel merge --list` shows their parameters)"
        )
    return methods[name]


def method_sections() -> dict[str, Method]:
    """Methods whose parameters may also be given as a job section of their own (``adamerging: {steps: 3}``)."""
    return {m.section: m for m in load_methods().values() if m.section}


def _needs_text(needs: Needs) -> str:
    wants = []
    if needs.statistics:
        wants.append(f"statistics of every source: {', '.join(s.kind for s in needs.statistics)}")
    if needs.target_data:
        wants.append("the target's unlabelled utterances")
    if needs.trainer:
        wants.append("a Lightning Trainer (--trainer.*)")
    return f" [needs {'; '.join(wants)}]" if wants else ""


def format_methods(names: Sequence[str] | None = None) -> str:
    """The text of ``merginguriel merge --list``: every method, its summary and its parameters with defaults and help;
    presets under the method whose merge function they share."""
    methods = load_methods()
    order = sorted(n for n in (names or methods) if not methods[n].preset_of)
    presets = {n: sorted(p for p in (names or methods) if methods[p].preset_of == n) for n in order}
    lines = []
    for name in order:
        lines += _method_text(methods[name])
        for preset in presets[name]:
            lines += _method_text(methods[preset], f"  (preset of {name})")
    return "\n".join(lines).rstrip() + "\n"


def _method_text(m: Method, tag: str = "") -> list[str]:
    lines = [f"{m.name}: {m.summary}{tag}{_needs_text(m.needs)}"]
    for note in m.notes:
        lines.extend(textwrap.wrap(note, width=118, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False))
    for pname, ptype, default, help_ in m.describe():
        lines.append(f"    {pname} ({ptype}, default {default!r}): {help_}")
    for alias, a in param_aliases(m.params).items():
        lines.append(f"    {alias}: accepted for {a.to}" + (f" ({a.help})" if a.help else ""))
    if m.section:
        lines.append(f"    (its parameters may also be given as the job section `{m.section}`: --{m.section}.<name>)")
    lines.append("")
    return lines
