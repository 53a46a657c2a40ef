"""Everything checked before a merge reads a single weight, once: the base and each source (paths, headers, shared base,
architecture, labels, vocabulary), then the merge itself (duplicates, IncTar/ExcTar, weights, method parameters,
exclude patterns, statistics folders, device, dtype).

A merge job checks its base and its model pool once (:func:`check_base`, :func:`check_source`) and builds the plan from
those checked models (:func:`plan_merge`); a library merge (:func:`prepare`, a MergeSpec) does the same in one call.
Each failure is an InputError that names the problem and the fix; nothing is written before all of them pass.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import torch

from merginguriel.errors import InputError
from merginguriel.io import checkpoint_ref, file_sha256, read_manifest
from merginguriel.merging.checkpoint import Checkpoint
from merginguriel.merging.registry import Method, Reads, SourceSet, WeightsFrom, get_method, params_dict
from merginguriel.merging.spec import MergeSpec
from merginguriel.models.export import check_intent_labels

_ARCH_KEYS = (
    "model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act", "position_embedding_type",
)
_VOCAB_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "spm.model")
OUT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class CheckedModel:
    """A checkpoint that passed its checks: its folder, its indexed weights, the hash of its weights as they are now,
    its locale (None for an outside checkpoint without one) and how it relates to the base (``base``, ``finetuned``
    from it, or an ``outside`` checkpoint of the same architecture)."""

    path: Path
    checkpoint: Checkpoint
    hash: str
    locale: Optional[str] = None
    origin: str = "base"


@dataclass(frozen=True)
class Plan:
    """A checked merge, ready to run: the method with its typed parameters, the checked base and sources, the weights
    the method uses (as given, not normalised), the tensors it merges, and what the manifest records."""

    method: Method
    params: Any
    base: CheckedModel
    sources: tuple[CheckedModel, ...]
    weights: tuple[float, ...]
    merged: tuple[str, ...]  # tensor names the method merges (float tensors not excluded), in base order
    excluded: tuple[str, ...]  # tensor names that keep the base's values
    output: Path
    device: torch.device
    seed: int = 42
    dtype: str = "float32"
    exclude: tuple[str, ...] = ()
    target: Optional[str] = None
    include_target: Optional[bool] = None
    selection: Optional[dict] = None
    job: Optional[dict] = None
    statistics: dict[str, tuple[Checkpoint, ...]] = field(default_factory=dict)
    imported: Optional[dict] = None  # the mergekit config the job came from: copied into the output, recorded

    @property
    def kernel(self) -> Any:
        """The parameters the merge function reads (a preset's parts; the params themselves otherwise)."""
        return self.method.to_kernel(self.params)

    @property
    def reads(self) -> Reads:
        return self.method.reads(self.kernel)

    @property
    def records(self) -> list[dict]:
        """The manifest's entries of the sources."""
        return [{"locale": s.locale, "path": str(s.path), "hash": s.hash, "weight": w, "origin": s.origin}
                for s, w in zip(self.sources, self.weights)]

    @property
    def source_keys(self) -> list[str]:
        """Per source, the key its random streams (DARE's mask) are seeded by: the hash of its weights, so a renamed
        or moved folder gives the same mask and two folders of one name in different places get different ones."""
        return [s.hash for s in self.sources]

    def manifest_fields(self) -> dict:
        """What every merged folder's manifest records about the plan (merging.manifest.write_merged_manifest)."""
        total = sum(self.weights)
        return dict(
            method=self.method.name, params=params_dict(self.params),
            base={"path": str(self.base.path), "hash": self.base.hash}, sources=self.records,
            weights_normalised=[w / total for w in self.weights], seed=self.seed, target=self.target,
            include_target=self.include_target, selection=self.selection,
            exclude={"patterns": list(self.exclude), "tensors": list(self.excluded)},
            statistics={kind: [str(c.folder) for c in cks] for kind, cks in self.statistics.items()},
            dtype=self.dtype, job=self.job, imported=self.imported,
        )


def resolve_device(device: str) -> torch.device:
    """``auto`` is cuda when present, else cpu; an explicit cuda device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for but no CUDA GPU is available; use --device cpu (or auto)")
    return dev


def _check_same_tensors(base: Checkpoint, other: Checkpoint) -> None:
    missing = sorted(set(base.tensors) - set(other.tensors))
    extra = sorted(set(other.tensors) - set(base.tensors))
    if missing or extra:
        raise InputError(
            f"{other.role} {other.folder} does not have the base's tensors (missing: {missing[:3]}, unexpected: "
            f"{extra[:3]}); it is a different architecture: merge only models fine-tuned from the shared base {base.folder}"
        )
    for name, info in base.tensors.items():
        o = other.tensors[name]
        if o.shape != info.shape:
            what = "vocabulary size" if "word_embeddings" in name else "shape"
            raise InputError(
                f"{other.role} {other.folder}: tensor {name} has shape {list(o.shape)}, the base {list(info.shape)} "
                f"({what} mismatch); merge only models of the base's architecture and vocabulary"
            )
        if o.dtype != info.dtype:
            raise InputError(
                f"{other.role} {other.folder}: tensor {name} is {o.dtype}, the base's is {info.dtype}; "
                "re-export it in the base's dtype"
            )


def _check_outside(base: Checkpoint, other: Checkpoint) -> None:
    """An outside checkpoint (no recorded base): the same architecture config, vocabulary files and labels."""
    bc, oc = base.config(), other.config()
    for key in _ARCH_KEYS:
        if bc.get(key) != oc.get(key):
            raise InputError(
                f"{other.role} {other.folder}: config {key}={oc.get(key)!r} but the base has {bc.get(key)!r}; "
                "it is a different architecture: merge only models fine-tuned from the shared base"
            )
    for fname in _VOCAB_FILES:
        a, b = base.folder / fname, other.folder / fname
        if a.is_file() and b.is_file() and file_sha256(a) != file_sha256(b):
            raise InputError(
                f"{other.role} {other.folder}: its vocabulary ({fname}) differs from the base's; "
                "merge only models that share the base's tokenizer"
            )


def exclude_matches(patterns: list[str], names: list[str]) -> set[str]:
    """The tensor names that exclude ``patterns`` (globs over full names, or ``re:<regex>``) match; a pattern that
    matches nothing is an error (it is almost always a typo)."""
    out: set[str] = set()
    for pat in patterns:
        if pat.startswith("re:"):
            try:
                rx = re.compile(pat[3:])
            except re.error as err:
                raise InputError(f"exclude pattern {pat!r} is not a valid regular expression ({err}); fix it") from None
            hit = {n for n in names if rx.search(n)}
        else:
            hit = {n for n in names if fnmatch.fnmatchcase(n, pat)}
        if not hit:
            raise InputError(
                f"exclude pattern {pat!r} matches no tensor; patterns are globs over full tensor names (or 're:<regex>'), "
                f"e.g. '*embeddings*', '*.layer.0.*', 'classifier.*'; names look like {names[0]!r}"
            )
        out |= hit
    return out


def _manifest_or_none(folder: Path) -> dict | None:
    try:
        return read_manifest(folder)
    except FileNotFoundError:
        return None


def check_base(folder: str | Path) -> CheckedModel:
    """The shared base: safetensors weights, a config with MASSIVE's labels, and its hash."""
    folder = Path(folder)
    ck = Checkpoint(folder, "base")
    check_intent_labels(SimpleNamespace(id2label=ck.config().get("id2label")), folder)
    return CheckedModel(folder, ck, checkpoint_ref(folder)["hash"], None, "base")


def check_source(base: CheckedModel, folder: str | Path, locale: Optional[str] = None, role: Optional[str] = None,
                 named_base: bool = False) -> CheckedModel:
    """A source: MASSIVE's labels, the base's tensors (names, shapes, dtypes), fine-tuned from this base (its manifest
    records the base's hash) or, without such a record, an outside checkpoint of the base's architecture and vocabulary.
    ``named_base``: the user named the base (``merge.base``, mergekit's ``base_model``), so a source fine-tuned from
    another base is checked as an outside checkpoint against it instead of refused."""
    folder = Path(folder)
    ck = Checkpoint(folder, role or f"source {locale or folder.name}")
    check_intent_labels(SimpleNamespace(id2label=ck.config().get("id2label")), folder)
    _check_same_tensors(base.checkpoint, ck)
    recorded = (_manifest_or_none(folder) or {}).get("base")
    if isinstance(recorded, dict) and recorded.get("hash") and (recorded["hash"] == base.hash or not named_base):
        if recorded["hash"] != base.hash:
            raise InputError(
                f"source {folder} was fine-tuned from base {recorded.get('path')} (hash {recorded['hash'][:12]}), "
                f"not from {base.path} (hash {base.hash[:12]}); task vectors must be taken against the base a source "
                "was fine-tuned from: pass that base (or name the base to take them against: --merge.base FOLDER), or drop the source"
            )
        origin = "finetuned"
    else:
        _check_outside(base.checkpoint, ck)
        origin = "outside"
    # the bytes as they are now, not a stale recorded hash
    return CheckedModel(folder, ck, checkpoint_ref(folder)["hash"], locale, origin)


def check_request(method: Method, params: Any, sources: list[tuple[Path, Optional[str], float]], *, weights_from: WeightsFrom,
                  dtype: str, device: str, output: Path, base: Path, target: Optional[str],
                  include_target: Optional[bool]) -> tuple[list[float], torch.device]:
    """The checks of a merge that read no model: the sources against the method's parameters, weights, dtype, device,
    output, duplicates and IncTar/ExcTar; returns the weights the method uses and the device."""
    if not sources:
        raise InputError("no sources to merge; give at least one source checkpoint (selection.sources or selection.similarity)")
    if method.needs.target_data and not target:
        raise InputError(f"method {method.name} adapts on the target locale's unlabelled utterances, but no target was "
                         "given; set the target (--target LOCALE)")
    params.check_sources(SourceSet(len(sources), weights_from))
    if dtype not in (*OUT_DTYPES, "base"):
        raise InputError(f"unknown output dtype {dtype!r}; use one of {', '.join([*OUT_DTYPES, 'base'])}")
    dev = resolve_device(device)
    given = [float(w) for _, _, w in sources]
    for (path, _, _), w in zip(sources, given):
        if not math.isfinite(w) or w < 0:
            raise InputError(f"source {path} has weight {w}; weights must be finite and >= 0: fix selection.weights")
    weights = [float(w) for w in params.effective_weights(given)]
    if sum(weights) <= 0:
        raise InputError(f"the source weights {weights} sum to zero; give at least one positive weight")
    for path, _, _ in sources:
        if output.resolve() == Path(path).resolve() or output.resolve() == Path(base).resolve():
            raise InputError(f"output {output} is one of the inputs; write the merge to a new folder")
    seen: dict[Any, Path] = {}
    for path, _, _ in sources:
        r = Path(path).resolve()
        if r in seen:
            raise InputError(f"source {path} is given twice; list each source once (weights add no repeats)")
        seen[r] = path
    locales = [loc for _, loc, _ in sources if loc]
    dup = sorted({loc for loc in locales if locales.count(loc) > 1})
    if dup:
        raise InputError(f"locale(s) {dup} appear among the sources more than once; keep one model per locale")
    if include_target is not None:
        if not target:
            raise InputError("include_target is set but no target locale is given; pass --target")
        has_target = target in locales
        if include_target and not has_target:
            raise InputError(
                f"IncTar asks for the target {target}'s own model among the sources, but none of them is {target}; "
                f"fine-tune {target} first (merginguriel fit) and add it, or use --selection.include_target false (ExcTar)"
            )
        if not include_target and has_target:
            raise InputError(
                f"ExcTar leaves the target's own model out, but {target} is among the sources; "
                "remove it, or use --selection.include_target true (IncTar)"
            )
    return weights, dev


def plan_merge(method: Method, params: Any, base: CheckedModel, sources: list[CheckedModel], weights: list[float],
               device: torch.device, output: Path, *, exclude: list[str] | tuple[str, ...] = (), seed: int = 42,
               dtype: str = "float32", target: Optional[str] = None, include_target: Optional[bool] = None,
               selection: Optional[dict] = None, job: Optional[dict] = None,
               statistics: Optional[dict[str, list[Path]]] = None) -> Plan:
    """The plan of a merge from checked models and the weights :func:`check_request` returned: no two sources with the
    same weights, exclude patterns that match, statistics folders one per source."""
    hashes = [s.hash for s in sources]
    for h in set(hashes):
        if hashes.count(h) > 1:
            twins = [str(s.path) for s in sources if s.hash == h]
            raise InputError(f"sources {twins} hold identical weights; list each model once")
    names = list(base.checkpoint.tensors)
    excluded = exclude_matches(list(exclude), names)
    merged = [n for n in names if n not in excluded and base.checkpoint.tensors[n].is_float]
    if not merged:
        raise InputError("the exclude patterns leave no tensor to merge; narrow them")
    return Plan(
        method=method, params=params, base=base, sources=tuple(sources), weights=tuple(weights), merged=tuple(merged),
        excluded=tuple(sorted(excluded)), output=Path(output), device=device, seed=seed, dtype=dtype,
        exclude=tuple(exclude), target=target, include_target=include_target, selection=selection, job=job,
        statistics=statistics_checkpoints(sources, statistics or {}),
    )


def statistics_checkpoints(sources: list[CheckedModel], statistics: dict[str, list[Path]]) -> dict[str, tuple[Checkpoint, ...]]:
    """Per statistics kind, the folders (one per source, in source order) opened for streaming."""
    out: dict[str, tuple[Checkpoint, ...]] = {}
    for kind, folders in statistics.items():
        if len(folders) != len(sources):
            raise InputError(f"statistics[{kind!r}] lists {len(folders)} folders for {len(sources)} sources; give one per source")
        cks = []
        for s, folder in zip(sources, folders):
            key = s.locale or s.path.name
            if not Path(folder).is_dir():
                raise InputError(f"{kind} statistics of source {key}: {folder} does not exist; recompute them (merginguriel merge does)")
            cks.append(Checkpoint(Path(folder), f"{kind} statistics of {key}"))
        out[kind] = tuple(cks)
    return out


def prepare(spec: MergeSpec) -> Plan:
    """Check a library merge (``spec``) completely and return its plan; an InputError on the first problem found."""
    method = get_method(spec.method)
    params = method.make_params(spec.params)
    weights, device = check_request(
        method, params, [(s.path, s.locale, s.weight) for s in spec.sources], weights_from=spec.weights_from,
        dtype=spec.dtype, device=spec.device, output=spec.output, base=spec.base, target=spec.target,
        include_target=spec.include_target,
    )
    if spec.output.exists() and not spec.overwrite:
        raise InputError(f"output {spec.output} already exists; choose another --run or --output, or pass --overwrite true")
    base = check_base(spec.base)
    sources = [check_source(base, s.path, s.locale, f"source {s.locale or i}") for i, s in enumerate(spec.sources)]
    return plan_merge(method, params, base, sources, weights, device, spec.output, exclude=spec.exclude, seed=spec.seed,
                      dtype=spec.dtype, target=spec.target, include_target=spec.include_target, selection=spec.selection,
                      job=spec.job, statistics=spec.statistics)
