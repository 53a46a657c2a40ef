"""Everything checked before a merge reads a single weight: paths, headers, shared base, architecture, labels,
vocabulary, duplicates, IncTar/ExcTar, weights, method parameters, exclude patterns, statistics folders.

Each failure is an InputError that names the problem and the fix; nothing is written before all of them pass.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from merginguriel.errors import InputError
from merginguriel.io import checkpoint_ref, file_sha256, read_manifest
from merginguriel.merging.checkpoint import Checkpoint
from merginguriel.merging.registry import Method, get_method
from merginguriel.merging.spec import MergeSpec
from merginguriel.models.export import check_intent_labels

_ARCH_KEYS = (
    "model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act", "position_embedding_type",
)
_VOCAB_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "spm.model")
OUT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Plan:
    """A validated merge, ready for the engine."""

    spec: MergeSpec
    method: Method
    params: Any
    base: Checkpoint
    base_hash: str
    sources: list[Checkpoint]
    records: list[dict]  # manifest entries of the sources
    weights: list[float]  # effective, as given (not normalised)
    source_keys: list[str]
    merged: list[str]  # tensor names the method merges (float tensors not excluded), in base order
    excluded: list[str]  # tensor names that keep the base's values
    statistics: dict[str, list[Checkpoint]] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")


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


def _manifest_or_none(folder: Path) -> dict | None:
    try:
        return read_manifest(folder)
    except FileNotFoundError:
        return None


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


@dataclass
class Inputs:
    """The checked inputs of any merge, whatever its method: base, sources, their records, weights, tensors."""

    base: Checkpoint
    base_hash: str
    sources: list[Checkpoint]
    records: list[dict]
    weights: list[float]
    source_keys: list[str]
    merged: list[str]
    excluded: list[str]
    device: torch.device


def check_inputs(spec: MergeSpec, weights: list[float] | None = None) -> Inputs:
    """Every method-independent check of a merge (the engine's methods and AdaMerging alike): sources, weights,
    output, duplicates, IncTar/ExcTar, shared base, architecture, labels, vocabulary, exclude patterns, device.
    ``weights`` are the weights the method will use (default: the sources' weights)."""
    if not spec.sources:
        raise InputError("no sources to merge; give at least one source checkpoint (selection.sources or selection.similarity)")
    if spec.dtype not in (*OUT_DTYPES, "base"):
        raise InputError(f"unknown output dtype {spec.dtype!r}; use one of {', '.join([*OUT_DTYPES, 'base'])}")
    device = resolve_device(spec.device)
    given = [float(s.weight) for s in spec.sources]
    for s, w in zip(spec.sources, given):
        if not math.isfinite(w) or w < 0:
            raise InputError(f"source {s.path} has weight {w}; weights must be finite and >= 0: fix selection.weights")
    weights = given if weights is None else [float(w) for w in weights]
    if sum(weights) <= 0:
        raise InputError(f"the source weights {weights} sum to zero; give at least one positive weight")

    if spec.output.exists() and not spec.overwrite:
        raise InputError(f"output {spec.output} already exists; choose another --run or --output, or pass --overwrite true")
    for s in spec.sources:
        if spec.output.resolve() == s.path.resolve() or spec.output.resolve() == spec.base.resolve():
            raise InputError(f"output {spec.output} is one of the inputs; write the merge to a new folder")

    resolved = [s.path.resolve() for s in spec.sources]
    seen: dict[Any, Path] = {}
    for s, r in zip(spec.sources, resolved):
        if r in seen:
            raise InputError(f"source {s.path} is given twice; list each source once (weights add no repeats)")
        seen[r] = s.path
    locales = [s.locale for s in spec.sources if s.locale]
    dup = sorted({loc for loc in locales if locales.count(loc) > 1})
    if dup:
        raise InputError(f"locale(s) {dup} appear among the sources more than once; keep one model per locale")

    if spec.include_target is not None:
        if not spec.target:
            raise InputError("include_target is set but no target locale is given; pass --target")
        has_target = spec.target in locales
        if spec.include_target and not has_target:
            raise InputError(
                f"IncTar asks for the target {spec.target}'s own model among the sources, but none of them is {spec.target}; "
                f"fine-tune {spec.target} first (merginguriel fit) and add it, or use --selection.include_target false (ExcTar)"
            )
        if not spec.include_target and has_target:
            raise InputError(
                f"ExcTar leaves the target's own model out, but {spec.target} is among the sources; "
                "remove it, or use --selection.include_target true (IncTar)"
            )

    base = Checkpoint(spec.base, "base")
    base_cfg = base.config()
    check_intent_labels(SimpleNamespace(id2label=base_cfg.get("id2label")), spec.base)
    base_hash = checkpoint_ref(spec.base)["hash"]

    sources, records, keys = [], [], []
    for i, (s, w) in enumerate(zip(spec.sources, weights)):
        ck = Checkpoint(s.path, f"source {s.locale or i}")
        cfg = ck.config()
        check_intent_labels(SimpleNamespace(id2label=cfg.get("id2label")), s.path)
        _check_same_tensors(base, ck)
        manifest = _manifest_or_none(s.path)
        recorded = (manifest or {}).get("base")
        if isinstance(recorded, dict) and recorded.get("hash"):
            if recorded["hash"] != base_hash:
                raise InputError(
                    f"source {s.path} was fine-tuned from base {recorded.get('path')} (hash {recorded['hash'][:12]}), "
                    f"not from {spec.base} (hash {base_hash[:12]}); task vectors must be taken against the base a source "
                    "was fine-tuned from: pass that base, or drop the source"
                )
            origin = "finetuned"
        else:
            _check_outside(base, ck)
            origin = "outside"
        source_hash = checkpoint_ref(s.path)["hash"]  # the bytes as they are now, not a stale recorded hash
        sources.append(ck)
        records.append(
            {"locale": s.locale, "path": str(s.path), "hash": source_hash, "weight": w, "origin": origin}
        )
        keys.append(s.locale or s.path.name)
    hashes = [r["hash"] for r in records]
    for h in set(hashes):
        if hashes.count(h) > 1:
            twins = [r["path"] for r in records if r["hash"] == h]
            raise InputError(f"sources {twins} hold identical weights; list each model once")

    names = list(base.tensors)
    excluded = exclude_matches(spec.exclude, names)
    merged = [n for n in names if n not in excluded and base.tensors[n].is_float]
    if not merged:
        raise InputError("the exclude patterns leave no tensor to merge; narrow them")
    return Inputs(base, base_hash, sources, records, weights, keys, merged, sorted(excluded), device)


def prepare(spec: MergeSpec) -> Plan:
    """Validate ``spec`` completely and return the plan; raise InputError on the first problem found."""
    method = get_method(spec.method)
    params = method.make_params(spec.params)
    if not spec.sources:
        raise InputError("no sources to merge; give at least one source checkpoint (selection.sources or selection.similarity)")
    if method.check:
        method.check(params, len(spec.sources))
    if spec.memory_mb <= 0 or spec.shard_mb <= 0:
        raise InputError(f"memory_mb and shard_mb must be positive (got {spec.memory_mb}, {spec.shard_mb})")
    weights = [float(s.weight) for s in spec.sources]
    if method.effective_weights and all(math.isfinite(w) and w >= 0 for w in weights):
        weights = [float(w) for w in method.effective_weights(params, weights)]
    inputs = check_inputs(spec, weights)

    statistics: dict[str, list[Checkpoint]] = {}
    for kind in method.needs:
        folders = (spec.statistics or {}).get(kind)
        if folders is None:
            raise InputError(
                f"method {method.name} needs {kind} statistics of every source; `merginguriel merge` computes and caches "
                f"them (library: pass MergeSpec.statistics={{'{kind}': [one folder per source]}})"
            )
        if len(folders) != len(spec.sources):
            raise InputError(f"statistics[{kind!r}] lists {len(folders)} folders for {len(spec.sources)} sources; give one per source")
        statistics[kind] = []
        for key, folder in zip(inputs.source_keys, folders):
            if not Path(folder).is_dir():
                raise InputError(f"{kind} statistics of source {key}: {folder} does not exist; recompute them (merginguriel merge does)")
            statistics[kind].append(Checkpoint(Path(folder), f"{kind} statistics of {key}"))

    return Plan(
        spec=spec, method=method, params=params, base=inputs.base, base_hash=inputs.base_hash, sources=inputs.sources,
        records=inputs.records, weights=inputs.weights, source_keys=inputs.source_keys, merged=inputs.merged,
        excluded=inputs.excluded, statistics=statistics, device=inputs.device,
    )
