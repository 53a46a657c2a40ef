"""The one description of a merge job, in three parts as FusionBench keeps them apart:

* ``selection`` -- which models take part: the target, explicit sources or a similarity-driven choice (kind, K,
  IncTar/ExcTar, weighting, candidates, the NxN matrix REAL reads);
* ``merge`` -- how they are merged: the method and its parameters, excluded tensors, seed, dtype (plus the
  ``adamerging``/``trainer`` options of the learned method);
* ``evaluate`` -- where the result is judged: the splits and the batch size.

`merginguriel merge`, every sweep point, `advise` and the quick start build a :class:`MergeJob` and hand it to
:func:`merginguriel.jobs.run.run_job`. A job's YAML is the same everywhere: a merge config, a sweep's ``fixed`` section
and a sweep's grid keys (``selection.num_sources``, ``merge.method``, ...) all address these fields.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from merginguriel.adamerging.options import AdaMergingOptions, TrainerOptions
from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, Layout
from merginguriel.data.config import EVAL_BATCH_SIZE, DataConfig, DataSource
from merginguriel.errors import InputError

Split = Literal["validation", "test"]
Weighting = Literal["scores", "sinkhorn", "softmax", "similarity_x_compatibility"]

# The studies' names for the linear merge (methods.md): `similarity` weights by the selection's similarity scores,
# `average` gives every source 1/K. They mean the same in `merge`, sweeps, `advise` and the report.
METHOD_ALIASES: dict[str, tuple[str, dict]] = {
    "similarity": ("linear", {"weighting": "similarity"}),
    "average": ("linear", {"weighting": "average"}),
}
ADAMERGING = "adamerging"  # learned coefficients: its own runner and validation (merginguriel.adamerging)


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
        method: a merge method (`merginguriel merge --list`): ``similarity``, ``average``, ``linear``,
            ``task_arithmetic``, ``ties``, ``dare_*``, ``breadcrumbs``, ``directional_consensus``, ``neuromerging``,
            ``slerp``, ``fisher``, ``regmean`` or ``adamerging``.
        params: the method's parameters, e.g. ``{density: 0.2}`` (``--merge.params.density 0.2``).
        exclude: tensor-name patterns (globs, or ``re:<regex>``) that keep the base's values, e.g. ``'*embeddings*'``.
        seed: seed of random methods (DARE) and of data-dependent statistics.
        dtype: output dtype (``base``: each tensor keeps the base's dtype).
    """

    method: str = "similarity"
    params: dict[str, Any] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    seed: int = 42
    dtype: Literal["float32", "float16", "bfloat16", "base"] = "float32"


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
            by evaluation and by data-dependent methods).
        backbone: the backbone whose fine-tunes are merged (``embedded``, a hub id or a folder).
        root: the checkpoints root.
        data: the MASSIVE data source (for evaluation and data-dependent methods).
        selection: which models take part.
        merge: how they are merged.
        adamerging: AdaMerging options (``merge.method: adamerging`` only).
        trainer: Lightning Trainer options of AdaMerging (``merge.method: adamerging`` only).
        evaluate: where the result is judged.
        device: ``auto`` (the GPU when there is one), ``cpu``, ``cuda``, ``cuda:N``.
    """

    target: Optional[str] = None
    backbone: str = EMBEDDED
    root: str = DEFAULT_ROOT
    data: DataSource = field(default_factory=DataSource)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    merge: MethodConfig = field(default_factory=MethodConfig)
    adamerging: Optional[AdaMergingOptions] = None
    trainer: Optional[TrainerOptions] = None
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    device: str = "auto"

    def __post_init__(self) -> None:
        # sections may come as mappings (YAML, a sweep's grid) or as dataclasses (the command line)
        for name, cls in (("data", DataSource), ("selection", SelectionConfig), ("merge", MethodConfig),
                          ("evaluate", EvaluateConfig), ("adamerging", AdaMergingOptions), ("trainer", TrainerOptions)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _section(cls, name, value))
        self.root = str(self.root)

    # -- derived ------------------------------------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        return Layout.for_backbone(self.backbone, self.root)

    def candidate_pool(self) -> list[str]:
        """The locales a selection chooses from: ``selection.candidates``, else every finished fine-tune."""
        from merginguriel.locales import check_locales

        sel = self.selection
        return check_locales(sel.candidates) if sel.candidates else self.layout.finetuned_locales()

    @property
    def data_config(self) -> DataConfig:
        return self.data.at(self.root)

    @property
    def adamerging_options(self) -> AdaMergingOptions:
        return self.adamerging or AdaMergingOptions()

    @property
    def trainer_options(self) -> TrainerOptions:
        return self.trainer or TrainerOptions()

    def engine_method(self) -> tuple[str, dict]:
        """The merge engine's method name and parameters (the ``similarity``/``average`` names resolved)."""
        method, params = self.merge.method, dict(self.merge.params or {})
        if method in METHOD_ALIASES:
            name, implied = METHOD_ALIASES[method]
            clash = {k: v for k, v in params.items() if k in implied and v != implied[k]}
            if clash:
                raise InputError(f"method {method} means linear with {implied}; drop merge.params {clash} or use method linear")
            return name, {**params, **implied}
        return method, params

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def identity(self, with_evaluation: bool = True) -> dict:
        """What decides the job's result: everything but the device and the settings that do not apply (the AdaMerging
        sections only for AdaMerging, so a change of AdaMerging's defaults never renames a TIES merge)."""
        d = self.to_dict()
        d.pop("device")
        sel = d["selection"]  # settings that do not apply to this job's selection do not change its result
        if sel["weighting"] != "softmax":
            sel.pop("temperature")
        if sel["similarity"] != "uriel":
            sel.pop("feature_set")
        if sel["weighting"] != "similarity_x_compatibility":
            sel.pop("compatibility")
        if self.merge.method == ADAMERGING:
            d["adamerging"] = dataclasses.asdict(self.adamerging_options)
            d["trainer"] = {k: v for k, v in dataclasses.asdict(self.trainer_options).items()
                            if k in ("precision", "deterministic")}
        else:
            d.pop("adamerging")
            d.pop("trainer")
        if not with_evaluation:
            d.pop("evaluate")
        return d

    def key(self) -> str:
        """The job's identity: SHA-256 of its canonical JSON (a sweep row's key)."""
        return _sha(self.identity())

    def model_key(self) -> str:
        """The merged model's identity (the job without its evaluation settings): jobs that differ only in where they
        are judged share one merged model."""
        return _sha(self.identity(with_evaluation=False))

    def run_name(self) -> str:
        """The default folder name of the merged model under ``merged/<target>/``."""
        return f"{self.merge.method}-{self.model_key()[:12]}"

    def describe(self) -> str:
        sel, m = self.selection, self.merge
        params = ",".join(f"{k}={v}" for k, v in sorted((m.params or {}).items()))
        if sel.similarity:
            inc = "IncTar" if sel.include_target else "ExcTar"
            how = f"{sel.similarity} K={sel.num_sources} {inc} {sel.weighting}"
        else:
            how = f"sources {','.join(sel.sources or [])}"
        return f"{self.target or '-'} {m.method}{'(' + params + ')' if params else ''} {how}"

    # -- checks -------------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Everything that can be checked without reading a model: names, ranges and combinations (sweeps run this
        for every point before anything is written)."""
        from merginguriel.locales import check_locale
        from merginguriel.similarity import SIMILARITY_KINDS

        sel, m = self.selection, self.merge
        if self.target is not None:
            check_locale(self.target)
        if sel.sources and sel.similarity:
            raise InputError("give either selection.sources (explicit) or selection.similarity (a selection), not both")
        if not sel.sources and not sel.similarity:
            raise InputError("no sources: set selection.sources [loc1, loc2, ...] or selection.similarity (uriel, real, ...)")
        if sel.similarity:
            if sel.similarity not in SIMILARITY_KINDS:
                raise InputError(f"unknown selection.similarity {sel.similarity!r}; choose one of {', '.join(SIMILARITY_KINDS)}")
            if not self.target:
                raise InputError("a similarity selection chooses sources for a target: set target (e.g. --target sw-KE)")
            if sel.weights:
                raise InputError("selection.weights are for explicit selection.sources; a similarity selection derives the weights")
            if isinstance(sel.num_sources, bool) or not isinstance(sel.num_sources, int) or sel.num_sources < 1:
                raise InputError(f"selection.num_sources must be a positive integer, got {sel.num_sources!r}")
            pool = self.candidate_pool()
            if pool:
                usable = [c for c in pool if c != self.target] + ([self.target] if sel.include_target else [])
                if sel.num_sources > len(usable):
                    raise InputError(
                        f"selection.num_sources={sel.num_sources} but {self.target} has only {len(usable)} candidate source(s) "
                        f"({', '.join(usable) or 'none'}); lower K or fine-tune more locales"
                    )
        else:
            if sel.weights is not None:
                import math

                if len(sel.weights) != len(sel.sources):
                    raise InputError(f"{len(sel.weights)} weights for {len(sel.sources)} sources; give one weight per source")
                bad = [w for w in sel.weights if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0]
                if bad:
                    raise InputError(f"selection.weights {sel.weights}: weights must be finite and >= 0 (got {bad}); fix them")
                if sum(sel.weights) <= 0:
                    raise InputError(f"selection.weights {sel.weights} sum to zero; give at least one positive weight")
            if m.method == "similarity":
                raise InputError(
                    "method similarity weights the sources by their similarity scores, so it needs selection.similarity; "
                    "with explicit sources use linear (your weights) or average"
                )
            if m.method == "linear" and (m.params or {}).get("weighting") == "similarity":
                raise InputError("linear weighting=similarity needs selection.similarity (the weights come from the selection)")
            if m.method == "linear" and (m.params or {}).get("weighting") == "manual" and sel.weights is None:
                raise InputError("linear weighting=manual needs selection.weights (one per source)")
        if sel.weighting == "softmax" and not sel.temperature > 0:
            raise InputError(f"selection.temperature must be positive for softmax weighting, got {sel.temperature}")
        for split in self.evaluate.splits:
            if split not in ("validation", "test"):
                raise InputError(f"evaluate.splits: unknown split {split!r}; use validation and/or test")
        if self.evaluate.batch_size < 1:
            raise InputError(f"evaluate.batch_size must be positive, got {self.evaluate.batch_size}")
        if m.method == ADAMERGING:
            if not self.target:
                raise InputError("AdaMerging adapts on the target's unlabelled utterances: set target")
            from merginguriel.adamerging.run import check_options

            check_options(self.adamerging_options)
        else:
            from merginguriel.merging.registry import get_method

            name, params = self.engine_method()
            method = get_method(name)
            parsed = method.make_params(params)
            # the names and values as the method reads them ("0.2" from a command line is 0.2; mergekit's `lambda` is
            # `lam`, DARE's `density` is 1 - p), so equal jobs have equal keys and share their merged model
            from merginguriel.merging.registry import param_aliases

            aliases = param_aliases(method.params)
            canonical = {k: (aliases[k].to if k in aliases else k) for k in (self.merge.params or {})}
            self.merge.params = {c: getattr(parsed, c, self.merge.params[k]) for k, c in canonical.items()}
            if method.check:
                k = len(sel.sources) if sel.sources else sel.num_sources
                method.check(parsed, k)
            if method.needs and not self.target and getattr(parsed, "data", None) in ("target", "both"):
                raise InputError(f"method {name} computes statistics on the target's data (merge.params.data={parsed.data}): set target")

    def needs_statistics(self) -> tuple[str, ...]:
        if self.merge.method == ADAMERGING:
            return ()
        from merginguriel.merging.registry import get_method

        return get_method(self.engine_method()[0]).needs


def _sha(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _section(cls, name: str, value: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise InputError(f"unknown {name} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
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


def job_from_dict(config: dict[str, Any]) -> MergeJob:
    """A job from its YAML/JSON mapping (unknown keys are refused with the known ones listed)."""
    unknown = sorted(set(config) - set(JOB_FIELDS))
    if unknown:
        raise InputError(f"unknown merge job key(s) {', '.join(unknown)}; known: {', '.join(JOB_FIELDS)}")
    return MergeJob(**copy.deepcopy(config))
