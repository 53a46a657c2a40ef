"""The one description of a merge job, in three parts as FusionBench keeps them apart:

* ``selection`` -- which models take part: the target, explicit sources or a similarity-driven choice (kind, K,
  IncTar/ExcTar, weighting, candidates, the NxN matrix REAL reads);
* ``merge`` -- how they are merged: the method and its parameters, excluded tensors, seed, dtype (plus the ``trainer``
  options of a method that trains);
* ``evaluate`` -- where the result is judged: the splits and the batch size.

`merginguriel merge`, every sweep point, `advise` and the quick start build a :class:`MergeJob` and hand it to
:func:`merginguriel.jobs.run.run_job`. A job's YAML is the same everywhere: a merge config, a sweep's ``fixed`` section
and a sweep's grid keys (``selection.num_sources``, ``merge.method``, ...) all address these fields.

:meth:`MergeJob.check` is the check of the job itself (names, ranges, locales, the method's typed parameters; what a
sweep verifies for every point before anything exists): it returns a new, frozen :class:`CheckedJob` and changes
nothing, so a job's key is the same before and after. Nothing here branches on a method's name: the job reads what the
method declares (merginguriel.merging.registry.Method.needs).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, Layout
from merginguriel.data.config import EVAL_BATCH_SIZE, DataConfig, DataSource
from merginguriel.errors import InputError, did_you_mean
from merginguriel.training import TrainerOptions

Split = Literal["validation", "test"]
Weighting = Literal["scores", "sinkhorn", "softmax", "similarity_x_compatibility"]


@dataclass
class SelectionConfig:
    """Which models take part.

    Args:
        sources: explicit sources: locales (their fine-tuned models under the root), checkpoint folders or hub model
            ids (``namespace/name``, fetched into the Hugging Face cache); leave ``similarity`` unset then.
        weights: one weight per explicit source (default: equal weights).
        similarity: select the sources by similarity instead: ``uriel`` (lang2vec feature cosine), ``uriel_<distance>``
            (genetic, syntactic, featural, phonological, inventory, geographic, script) or ``real`` (measured transfer).
        num_sources: K, how many sources the similarity selects.
        include_target: IncTar (true: the target's own model is one of the sources) or ExcTar (false). Unset: ExcTar
            for a similarity selection, not checked for explicit sources.
        weighting: how similarity scores become weights: ``scores`` (renormalised), ``sinkhorn`` (balanced),
            ``softmax`` (softmax of the scores over ``temperature``: sharper than ``scores``, which stays near uniform
            for URIEL) or ``similarity_x_compatibility`` (scores x task-vector compatibility).
        temperature: the softmax temperature (``weighting: softmax``); smaller is sharper.
        candidates: locales a similarity may choose from (default: every locale with a fine-tuned model).
        nxn: the NxN matrix REAL similarity reads (default: the backbone's validation matrix).
        allow_test_nxn: accept a test-split NxN matrix for selection (a choice made on test data: refused unless set,
            and recorded as a warning in the manifest).
        feature_set: the lang2vec feature set of ``uriel``.
        compatibility: a precomputed compatibility matrix CSV for ``similarity_x_compatibility`` (default: computed).
    """

    sources: Optional[list[str]] = None
    weights: Optional[list[float]] = None
    similarity: Optional[str] = None
    num_sources: int = 3
    include_target: Optional[bool] = None
    weighting: Weighting = "scores"
    temperature: float = 0.05
    candidates: Optional[list[str]] = None
    nxn: Optional[str] = None
    allow_test_nxn: bool = False
    feature_set: str = "syntax_knn"
    compatibility: Optional[str] = None


@dataclass
class MethodConfig:
    """How the models are merged.

    Args:
        method: a merge method (`merginguriel merge --list` shows every one with its parameters).
        params: the method's parameters, e.g. ``{density: 0.2}`` (``--merge.params.density 0.2``).
        exclude: tensor-name patterns (globs, or ``re:<regex>``) that keep the base's values, e.g. ``'*embeddings*'``.
        seed: seed of random methods (DARE) and of data-dependent statistics.
        dtype: output dtype (``base``: each tensor keeps the base's dtype).
        base: the base task vectors are taken against, a folder or a hub model id, as mergekit's ``base_model``
            (default: the backbone's shared base under the root). It must have the sources' architecture, labels
            and tensor shapes; sources fine-tuned from another base are then checked as outside checkpoints.
    """

    method: str = "similarity"
    params: dict[str, Any] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    seed: int = 42
    dtype: Literal["float32", "float16", "bfloat16", "base"] = "float32"
    base: Optional[str] = None


@dataclass
class EvaluateConfig:
    """Where the merged model is judged.

    Args:
        splits: the target's splits to evaluate on. Choices (sources, K, method, weights) are made on ``validation``;
            ``test`` gives the final number only.
        batch_size: evaluation batch size.
        features: record the merging-effect features of the selection (sweeps; see merginguriel.experiments.features).
    """

    splits: list[Split] = field(default_factory=lambda: ["validation", "test"])
    batch_size: int = EVAL_BATCH_SIZE
    features: bool = True


@dataclass
class MergeJob:
    """One merge job: which models, how merged, where judged (see the module docstring).

    Args:
        target: the target locale (the output goes to ``merged/<target>/<run>``; needed by a similarity selection,
            by evaluation and by methods that read data).
        backbone: the backbone whose fine-tunes are merged (``embedded``, a hub id or a folder).
        root: the checkpoints root.
        data: the MASSIVE data source (for evaluation and methods that read data).
        selection: which models take part.
        merge: how they are merged.
        trainer: Lightning Trainer options of a method that trains (AdaMerging).
        evaluate: where the result is judged.
        device: ``auto`` (the GPU when there is one), ``cpu``, ``cuda``, ``cuda:N``.
    """

    target: Optional[str] = None
    backbone: str = EMBEDDED
    root: str = DEFAULT_ROOT
    data: DataSource = field(default_factory=DataSource)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    merge: MethodConfig = field(default_factory=MethodConfig)
    trainer: Optional[TrainerOptions] = None
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    device: str = "auto"

    def __post_init__(self) -> None:
        # sections may come as mappings (YAML, a sweep's grid) or as dataclasses (the command line)
        for name, cls in (("data", DataSource), ("selection", SelectionConfig), ("merge", MethodConfig),
                          ("evaluate", EvaluateConfig), ("trainer", TrainerOptions)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _section(cls, name, value))
        self.root = str(self.root)

    @property
    def layout(self) -> Layout:
        return Layout.for_backbone(self.backbone, self.root)

    @staticmethod
    def sections() -> list[tuple[str, type, str]]:
        """The sections a job's mapping (a config, a sweep, the command line) accepts besides its fields: a method's
        parameters under the method's own name (``adamerging: {steps: 3}``, ``--adamerging.steps 3``), the same as
        ``merge.params`` of that method (see Method.section)."""
        from merginguriel.merging.registry import method_sections

        return [(name, m.params, f"merge.method {m.name}'s parameters, the same as --merge.params.* (merge --list)")
                for name, m in method_sections().items()]

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "MergeJob":
        return job_from_dict(config)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def key(self) -> str:
        """The job's identity: SHA-256 of its canonical JSON (a sweep row's key); the same as its checked job's."""
        method, _, canonical = _parse(self)
        return _sha(identity(self, method, canonical))

    def model_key(self) -> str:
        method, _, canonical = _parse(self)
        return _sha(identity(self, method, canonical, with_evaluation=False))

    def check(self) -> "CheckedJob":
        """Everything that can be checked without reading a model: names, ranges, combinations, locales and the
        method's parameters (parsed once, typed; a list of values makes one candidate per value, or per combination of
        several lists, each checked here). A new, frozen job; this one is left as it is."""
        from merginguriel.locales import check_locale, check_locales
        from merginguriel.merging.registry import SourceSet
        from merginguriel.similarity import check_similarity_kind

        sel = self.selection
        target = check_locale(self.target) if self.target is not None else None
        if sel.sources and sel.similarity:
            raise InputError("give either selection.sources (explicit) or selection.similarity (a selection), not both")
        if not sel.sources and not sel.similarity:
            raise InputError("no sources: set selection.sources [loc1, loc2, ...] or selection.similarity (uriel, real, ...)")
        checked_already = {target: target} if target else {}  # the target is checked once, wherever it appears again
        candidates = check_locales([checked_already.get(c, c) for c in sel.candidates]) if sel.candidates else None
        if sel.similarity:
            check_similarity_kind(sel.similarity, "selection.similarity")
            if not target:
                raise InputError("a similarity selection chooses sources for a target: set target (e.g. --target sw-KE)")
            if sel.weights:
                raise InputError("selection.weights are for explicit selection.sources; a similarity selection derives the weights")
            if isinstance(sel.num_sources, bool) or not isinstance(sel.num_sources, int) or sel.num_sources < 1:
                raise InputError(f"selection.num_sources must be a positive integer, got {sel.num_sources!r}")
            weights_from, count = "similarity", sel.num_sources
        else:
            if sel.weights is not None:
                if len(sel.weights) != len(sel.sources):
                    raise InputError(f"{len(sel.weights)} weights for {len(sel.sources)} sources; give one weight per source")
                bad = [w for w in sel.weights if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0]
                if bad:
                    raise InputError(f"selection.weights {sel.weights}: weights must be finite and >= 0 (got {bad}); fix them")
                if sum(sel.weights) <= 0:
                    raise InputError(f"selection.weights {sel.weights} sum to zero; give at least one positive weight")
            weights_from, count = ("given" if sel.weights is not None else "equal"), len(sel.sources)
        if sel.weighting == "softmax" and not sel.temperature > 0:
            raise InputError(f"selection.temperature must be positive for softmax weighting, got {sel.temperature}")
        for split in self.evaluate.splits:
            if split not in ("validation", "test"):
                raise InputError(f"evaluate.splits: unknown split {split!r}; use validation and/or test")
        if self.evaluate.batch_size < 1:
            raise InputError(f"evaluate.batch_size must be positive, got {self.evaluate.batch_size}")
        if self.merge.base is not None:
            _check_named_base(self.merge.base)
        method, options, canonical = _parse(self)
        for option in options:
            option.params.check_sources(SourceSet(count, weights_from))
        if len(options) > 1 and not target:
            raise InputError(f"merge.params lists {', '.join(options[0].values)}: each value is tried on the target's "
                             "validation split and the best kept; set target (e.g. --target sw-KE)")
        if method.needs.target_data and not target:
            raise InputError(f"method {method.name} adapts on the target's unlabelled utterances: set target")
        layout = self.layout
        finished = [checked_already.get(c, c) for c in layout.finetuned_locales()]
        pool = tuple(candidates if candidates is not None else check_locales(finished))
        if sel.similarity and pool:
            usable = [c for c in pool if c != target] + ([target] if sel.include_target else [])
            if sel.num_sources > len(usable):
                raise InputError(
                    f"selection.num_sources={sel.num_sources} but {target} has only {len(usable)} candidate source(s) "
                    f"({', '.join(usable) or 'none'}); lower K or fine-tune more locales"
                )
        return CheckedJob(job=copy.deepcopy(self), method=method, params=options[0].params, target=target,
                          candidates=pool, weights_from=weights_from, options=options, canonical=canonical)


@dataclass(frozen=True)
class Option:
    """One candidate setting of a job's method parameters: the values its parameter lists take (canonical names;
    empty for a job without lists) and the typed parameters."""

    values: dict
    params: Any


@dataclass(frozen=True)
class CheckedJob:
    """A merge job after its check: the job as given (a private copy), the method with its typed parameters, the
    checked target, the locales a selection may choose from (``selection.candidates``, else every finished
    fine-tune), and where the weights come from. Frozen: selection, merge and judgement run on it and check nothing
    of the job again (merginguriel.jobs.run.plan_job checks the models and data they read, once).

    ``options`` holds one :class:`Option` per candidate setting of the method's parameters: one for a plain job, one
    per value (or per combination of values) when ``merge.params`` gives lists; the job then tries each on the
    target's validation split and keeps the best (merginguriel.jobs.choose). ``params`` is the first option's;
    ``canonical`` the parameters as the job's identity records them (lists as lists)."""

    job: MergeJob
    method: Any
    params: Any
    target: Optional[str]
    candidates: tuple[str, ...]
    weights_from: str
    options: tuple[Option, ...] = ()
    canonical: dict = field(default_factory=dict)

    @property
    def selection(self) -> SelectionConfig:
        return self.job.selection

    @property
    def merge(self) -> MethodConfig:
        return self.job.merge

    @property
    def evaluate(self) -> EvaluateConfig:
        return self.job.evaluate

    @property
    def layout(self) -> Layout:
        return self.job.layout

    @functools.cached_property
    def base(self) -> Path:
        """The base every task vector is taken against (the one place a job names it): ``merge.base`` when given (a
        hub id resolved into the Hugging Face cache), else the backbone's shared base under the root."""
        named = self.job.merge.base
        if named is None:
            return self.job.layout.base
        if Path(named).is_dir():
            return Path(named)
        from merginguriel.models.hub import resolve_hub_model

        return resolve_hub_model(named)

    @property
    def named_base(self) -> bool:
        """Whether the user named the base (``merge.base``) rather than taking the backbone's shared base."""
        return self.job.merge.base is not None

    @property
    def data(self) -> DataConfig:
        return self.job.data.at(self.job.root)

    @property
    def trainer(self) -> TrainerOptions:
        return self.job.trainer or TrainerOptions()

    def to_dict(self) -> dict:
        """The job's settings with the method's parameters under their canonical names (what a recipe, a sweep row
        and a manifest record)."""
        d = self.job.to_dict()
        d["merge"]["params"] = copy.deepcopy(self.canonical)
        return d

    def identity(self, with_evaluation: bool = True) -> dict:
        return identity(self.job, self.method, self.canonical, with_evaluation)

    def key(self) -> str:
        return _sha(self.identity())

    def model_key(self) -> str:
        """The merged model's identity (the job without its evaluation settings): jobs that differ only in where they
        are judged share one merged model."""
        return _sha(self.identity(with_evaluation=False))

    def run_name(self) -> str:
        """The default folder name of the merged model under ``merged/<target>/``."""
        return f"{self.job.merge.method}-{self.model_key()[:12]}"

    def describe(self) -> str:
        sel, m = self.job.selection, self.job.merge
        params = ",".join(f"{k}={v}" for k, v in sorted(self.canonical.items()))
        if sel.similarity:
            inc = "IncTar" if sel.include_target else "ExcTar"
            how = f"{sel.similarity} K={sel.num_sources} {inc} {sel.weighting}"
        else:
            how = f"sources {','.join(sel.sources or [])}"
        return f"{self.target or '-'} {m.method}{'(' + params + ')' if params else ''} {how}"


def _check_named_base(base: str) -> None:
    from merginguriel.models.hub import is_hub_id

    if not (Path(base).is_dir() or is_hub_id(base)):
        raise InputError(f"merge.base {base!r} is neither a model folder nor a hub model id (namespace/name); give the "
                         "base the sources' task vectors are taken against, or leave merge.base unset for the shared base")


def _parse(job: MergeJob) -> tuple[Any, tuple[Option, ...], dict]:
    """The job's method, its candidate settings (merge.params parsed: names checked, values coerced; a list of values
    gives one candidate per value, several lists their product) and the canonical mapping of its parameters."""
    from merginguriel.merging.registry import get_method

    method = get_method(job.merge.method)
    return (method, *parse_options(method, job.merge.params or {}))


def parse_options(method: Any, given: dict) -> tuple[tuple[Option, ...], dict]:
    """The candidate settings of ``given`` (see :func:`_parse`). An empty list, a bad value in a list and a value
    listed twice are refused, naming the parameter and the value."""
    if dataclasses.is_dataclass(given) and not isinstance(given, type):
        given = dataclasses.asdict(given)
    if not isinstance(given, dict):
        method.make_params(given)  # refuses what is not a mapping, naming it and the fix
    given = dict(given)
    lists = {}
    for name, value in given.items():
        if isinstance(value, (list, tuple)):
            if not value:
                raise InputError(f"merge.params.{name} is an empty list; give the values to try on validation "
                                 f"(e.g. {name}: [0.3, 0.5, 1.0]) or a single value")
            if len(value) == 1:
                given[name] = value[0]  # one value: the same job as the value itself
            else:
                lists[name] = list(value)
    if not lists:
        params = method.make_params(given)
        return (Option({}, params),), _plain(method.canonical(given, params))
    options, seen = [], {}
    for combo in itertools.product(*lists.values()):
        assignment = dict(zip(lists, combo))
        try:
            params = method.make_params({**given, **assignment})
        except InputError as err:
            where = ", ".join(f"{k}={v!r}" for k, v in assignment.items())
            raise InputError(f"merge.params list value(s) {where}: {err}") from None
        values = _plain(method.canonical(assignment, params))
        tag = json.dumps(values, sort_keys=True)
        if tag in seen:
            raise InputError(f"merge.params lists the same setting twice: {assignment} and {seen[tag]} are both "
                             f"{values}; give each value once")
        seen[tag] = assignment
        options.append(Option(values, params))
    canonical = _plain(method.canonical(given, options[0].params))
    for name in options[0].values:
        canonical[name] = list(dict.fromkeys(o.values[name] for o in options))
    return tuple(options), canonical


def identity(job: MergeJob, method: Any, canonical: dict, with_evaluation: bool = True) -> dict:
    """What decides the job's result: everything but the device and the settings that do not apply (the selection's
    options of other kinds, the Trainer's speed settings, and the Trainer unless the method trains), with the method's
    parameters under their canonical names and values, so equal jobs have equal keys whatever spelling they used."""
    d = job.to_dict()
    d["merge"]["params"] = copy.deepcopy(canonical)
    d.pop("device")
    if d["merge"].get("base") is None:  # the default base: keys stay those of jobs written before merge.base existed
        d["merge"].pop("base", None)
    sel = d["selection"]  # settings that do not apply to this job's selection do not change its result
    if sel["weighting"] != "softmax":
        sel.pop("temperature")
    if sel["similarity"] != "uriel":
        sel.pop("feature_set")
    if sel["weighting"] != "similarity_x_compatibility":
        sel.pop("compatibility")
    if method.needs.trainer:
        d["trainer"] = (job.trainer or TrainerOptions()).identity()
    else:
        d.pop("trainer")
    if not with_evaluation:
        d.pop("evaluate")
    return d


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _sha(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _section(cls, name: str, value: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        hints = "".join(did_you_mean(u, known) for u in unknown)
        raise InputError(f"unknown {name} option(s) {', '.join(unknown)}.{hints} Known: {', '.join(sorted(known))}")
    return cls(**copy.deepcopy(value))


JOB_FIELDS = tuple(f.name for f in dataclasses.fields(MergeJob))


def set_dotted(config: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections as needed (the job refuses unknown keys when it is built)."""
    parts = dotted.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"config key {'.'.join(parts[: i + 1])!r} is a value, not a section, so {dotted!r} cannot be set")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def fold_method_sections(config: dict[str, Any]) -> dict[str, Any]:
    """A job mapping with each method section (a method's parameters given under its own name, e.g. ``adamerging:
    {steps: 3}``, see Method.section) moved into ``merge.params``; an empty section of another method is dropped (a
    sweep's zip gives every point one), a non-empty one is refused (it would change nothing)."""
    from merginguriel.merging.registry import method_sections

    config = copy.deepcopy(config)
    merge = config.get("merge")
    merge = merge if isinstance(merge, dict) else dataclasses.asdict(merge) if merge is not None else {}
    method = merge.get("method", MethodConfig.method)
    for section, owner in method_sections().items():
        if section not in config:
            continue
        given = config.pop(section)
        if dataclasses.is_dataclass(given):
            given = {f.name: getattr(given, f.name) for f in dataclasses.fields(given)
                     if getattr(given, f.name) != f.default}
        given = dict(given or {})
        if not given:
            continue
        if method != owner.name:
            raise InputError(f"`{section}` options {given} are the parameters of method {owner.name}, but the method is "
                             f"{method}; drop them or set merge.method {owner.name}")
        both = sorted(set(given) & set(merge.get("params") or {}))
        if both:
            raise InputError(f"{', '.join(both)} given both in `{section}` and in merge.params; give each parameter once")
        merge["params"] = {**(merge.get("params") or {}), **given}
        config["merge"] = merge
    return config


def job_from_dict(config: dict[str, Any]) -> MergeJob:
    """A job from its YAML/JSON mapping (unknown keys are refused with the known ones listed)."""
    config = fold_method_sections(config)
    unknown = sorted(set(config) - set(JOB_FIELDS))
    if unknown:
        hints = "".join(did_you_mean(u, JOB_FIELDS) for u in unknown)
        raise InputError(f"unknown merge job key(s) {', '.join(unknown)}.{hints} Known: {', '.join(JOB_FIELDS)}")
    return MergeJob(**copy.deepcopy(config))
