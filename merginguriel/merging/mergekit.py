"""A mergekit YAML translated into merginguriel's methods (``merginguriel merge --mergekit mergekit.yml``), for the
methods both tools have; merginguriel.jobs.mergekit makes the translation a merge job.

mergekit 0.1.5's definitions, and what each becomes (S = the sum of the models' weights, K = the number of models
other than the base):

============================  ==============================================================================
mergekit                      merginguriel
============================  ==============================================================================
linear                        linear, the same weights, ``normalize`` -> ``normalise``
task_arithmetic               task_arithmetic (weights normalised to sum 1), λ·S (normalize false) or λ
ties                          ties, scope tensor, rounding floor, the models' density; normalize true ->
                              dis-mean with λ, false -> dis-sum with λ·S/K
dare_ties                     dare_ties, p = 1 − density, no TIES trim; the same λ/normalize mapping as ties
dare_linear                   dare_task_arithmetic, p = 1 − density, λ·S (normalize false) or λ
breadcrumbs                   breadcrumbs, rounding floor (mergekit's magnitude_outliers), density, gamma, λ·S or λ
breadcrumbs_ties              breadcrumbs_ties, rounding floor, density, gamma; the same λ/normalize mapping as ties
slerp                         slerp of [base_model, the other model] at t (mergekit's t = 0 is its base_model)
============================  ==============================================================================

The task-vector methods take every task vector against ``base_model``: merginguriel's shared base folder
(``<root>/<backbone>/base``: the job's backbone and root), a backbone name whose shared base is under the root, or any
other model folder, taken as the job's ``merge.base`` (checked against the sources: architecture, labels, shapes).
Keys that change nothing here are ignored and named in the notes (``int8_mask``: mergekit's storage of intermediate
masks as int8, which does not change the result). What cannot be carried over
is refused, naming the key: layer slices and modules, per-layer gradients or filtered parameters, different densities
per model, LoRA references, other tokenizers, TIES/breadcrumbs ``rescale``. What is carried over but cannot give the
same tensors is said in the notes: DARE's random masks (mergekit draws them from torch's global generator,
merginguriel from a seed per source and tensor) and its rescale (mergekit keeps each tensor's L1 norm, merginguriel
divides by the density: equal in expectation), and a half-precision compute dtype (merginguriel computes in float32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from merginguriel.errors import InputError

TASK_VECTOR_METHODS = ("task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties")
METHODS = ("linear", "slerp", *TASK_VECTOR_METHODS)
PARAMETERS = {
    "linear": {"weight", "normalize"},
    "slerp": {"t"},
    **{m: {"weight", "density", "normalize", "lambda", "rescale", "int8_mask"} for m in TASK_VECTOR_METHODS},
}
IGNORED = {"int8_mask": "mergekit's int8 storage of intermediate masks (memory only; the result is the same)"}
PARAMETERS["breadcrumbs"] = PARAMETERS["breadcrumbs"] | {"gamma"}
PARAMETERS["breadcrumbs_ties"] = PARAMETERS["breadcrumbs_ties"] | {"gamma"}
DEFAULTS = {  # mergekit's own defaults per method
    "linear": {"normalize": True},
    "task_arithmetic": {"normalize": False, "rescale": False, "lambda": 1.0, "density": 1.0},
    "ties": {"normalize": True, "rescale": False, "lambda": 1.0, "density": 1.0},
    "dare_ties": {"normalize": False, "rescale": True, "lambda": 1.0, "density": 1.0},
    "dare_linear": {"normalize": False, "rescale": True, "lambda": 1.0, "density": 1.0},
    "breadcrumbs": {"normalize": False, "rescale": False, "lambda": 1.0, "density": 1.0, "gamma": 0.01},
    "breadcrumbs_ties": {"normalize": True, "rescale": False, "lambda": 1.0, "density": 1.0, "gamma": 0.01},
    "slerp": {},
}
KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source", "slices",
        "modules", "tokenizer", "chat_template"}
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class Imported:
    """A translated mergekit config: the merge-job settings it gives (dotted keys: ``merge.method``,
    ``merge.params``, ``merge.dtype``, ``selection.sources``, ``selection.weights``, and ``backbone``/``root`` when
    ``base_model`` names a shared base) and what differs from mergekit."""

    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def read_mergekit(path: str | Path) -> dict:
    from merginguriel.io.jsonfile import read_yaml_mapping

    p = Path(path)
    if not p.is_file():
        raise InputError(f"mergekit config {p} not found; give the path of a mergekit YAML (--mergekit mergekit.yml)")
    return read_yaml_mapping(p, "mergekit config", "merge_method, models, ...")


def _scalar(name: str, value: Any, where: str) -> Any:
    if isinstance(value, (bool, int, float)):
        return value
    raise InputError(
        f"mergekit {where} parameter {name}={value!r}: only a single number per merge can be translated (merginguriel "
        "has no per-layer gradients or tensor filters); give one value"
    )


def _model_ref(entry: Any, i: int) -> tuple[str, dict]:
    if not isinstance(entry, dict) or "model" not in entry:
        raise InputError(f"mergekit models[{i}] must be a mapping with a `model:` key, got {entry!r}")
    unknown = sorted(set(entry) - {"model", "parameters"})
    if unknown:
        raise InputError(f"mergekit models[{i}]: unknown key(s) {', '.join(unknown)}; only model and parameters translate")
    ref = entry["model"]
    if not isinstance(ref, str):
        raise InputError(f"mergekit models[{i}].model must be a path or hub id, got {ref!r}")
    if "+" in ref:
        raise InputError(f"mergekit model {ref!r} applies a LoRA adapter (`+`), which merginguriel cannot; merge full models")
    return ref, dict(entry.get("parameters") or {})


def _anchor(base_model: Optional[str]) -> Optional[dict]:
    """backbone/root settings when ``base_model`` is a shared base folder (``<root>/<slug>/base``), else None."""
    if base_model is None:
        return None
    p = Path(base_model)
    if p.is_dir() and p.name == "base" and (p / "manifest.json").is_file():
        p = p.resolve()
        return {"backbone": str(p), "root": str(p.parent.parent)}
    return None


def translate(config: dict) -> Imported:
    """The merge-job settings of a mergekit config (already read), or an InputError naming what cannot translate."""
    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise InputError(f"unknown mergekit key(s) {', '.join(unknown)}; mergekit 0.1.5 configs have {', '.join(sorted(KEYS))}")
    for key in ("slices", "modules"):
        if config.get(key):
            raise InputError(f"mergekit `{key}` (layer ranges, frankenmerges) has no merginguriel equivalent; list whole "
                             "models under `models:`")
    for key in ("tokenizer", "chat_template"):
        if config.get(key) is not None:
            raise InputError(f"mergekit `{key}` cannot be translated: a merged model keeps the base's tokenizer; drop it")
    if config.get("tokenizer_source") not in (None, "base"):
        raise InputError(f"mergekit tokenizer_source {config['tokenizer_source']!r} cannot be translated: a merged model keeps "
                         "the base's tokenizer (tokenizer_source: base); drop it")
    method = config.get("merge_method")
    if method not in METHODS:
        raise InputError(f"mergekit merge_method {method!r} has no merginguriel equivalent; translatable: {', '.join(METHODS)}")
    models = config.get("models")
    if not isinstance(models, list) or not models:
        raise InputError("mergekit config has no `models:` list; list the models to merge")
    base_model = config.get("base_model")
    if base_model is not None and not isinstance(base_model, str):
        raise InputError(f"mergekit base_model must be a path or hub id, got {base_model!r}")
    top = dict(config.get("parameters") or {})
    refs = [_model_ref(m, i) for i, m in enumerate(models)]
    known = PARAMETERS[method]
    for name in [*top, *(n for _, p in refs for n in p)]:
        if name not in known:
            raise InputError(f"mergekit parameter {name!r} of {method} cannot be translated; translatable: {', '.join(sorted(known))}")

    def value(name: str, params: dict, where: str) -> Any:
        if name in params:
            return _scalar(name, params[name], where)
        if name in top:
            return _scalar(name, top[name], "top-level")
        if name in DEFAULTS[method]:
            return DEFAULTS[method][name]
        raise InputError(f"mergekit {method} needs `{name}` for {where} (per model or under parameters)")

    settings: dict[str, Any] = {}
    notes: list[str] = []
    ignored = sorted({n for n in [*top, *(n for _, p in refs for n in p)] if n in IGNORED})
    notes += [f"ignored {name}: {IGNORED[name]}" for name in ignored]
    settings["merge.dtype"], dtype_note = _dtype(config)
    notes += dtype_note
    anchor = _anchor(base_model)
    if method == "slerp":
        return _slerp(config, refs, base_model, anchor, settings, notes, value)
    if method in TASK_VECTOR_METHODS:
        if base_model is None:
            raise InputError(f"mergekit {method} needs base_model: the shared base every task vector is taken against")
        if anchor is None:
            if Path(base_model).exists():
                settings["merge.base"] = base_model
                notes.append(f"base_model {base_model} is not a merginguriel shared base: task vectors are taken against "
                             "it (merge.base), checked against the sources")
            else:
                settings["backbone"] = base_model
                notes.append(f"base_model {base_model}: task vectors are taken against its shared base under the root")
        refs = [(r, p) for r, p in refs if r != base_model]  # mergekit's base takes no part as a model
        if not refs:
            raise InputError(f"mergekit {method} lists no model besides base_model; add the models to merge")
    elif anchor is None and base_model is not None:
        notes.append(f"base_model {base_model} is not read by linear (the shared base comes from --backbone/--root)")
    if anchor:
        settings.update(anchor)
    weights = [float(value("weight", p, f"model {r}")) for r, p in refs]
    settings["selection.sources"] = [r for r, _ in refs]
    settings["selection.weights"] = weights
    if method == "linear":
        settings["merge.method"] = "linear"
        settings["merge.params"] = {"normalise": bool(value("normalize", top, "linear"))}
        return Imported(settings, notes, ignored)

    def shared(name: str) -> Any:
        values = {value(name, p, f"model {r}") for r, p in refs}
        if len(values) > 1:
            raise InputError(f"mergekit {method}: the models have different {name} values {sorted(values)}; merginguriel "
                             f"applies one {name} to every source: give one value")
        return values.pop()

    normalize = bool(value("normalize", {}, method))
    lam = float(value("lambda", {}, method))
    rescale = bool(value("rescale", {}, method))
    density = float(shared("density"))
    total, k = sum(weights), len(weights)
    summed = lam if normalize else lam * total  # merginguriel normalises the weights to sum 1
    if method in ("ties", "breadcrumbs", "breadcrumbs_ties", "task_arithmetic") and rescale and density < 1:
        raise InputError(f"mergekit {method} with rescale: true (the L1 norm kept after trimming) has no merginguriel "
                         "equivalent; drop rescale")
    if method == "task_arithmetic":
        params = {"lam": summed}
    elif method == "ties":
        params = {"density": density, "scope": "tensor", "rounding": "floor", **_consensus(normalize, lam, total, k)}
    elif method == "dare_ties":
        params = {"p": round(1.0 - density, 12), "rescale": rescale, **_consensus(normalize, lam, total, k)}
    elif method == "dare_linear":
        params = {"p": round(1.0 - density, 12), "rescale": rescale, "lam": summed}
    elif method == "breadcrumbs":
        params = {"density": density, "gamma": float(shared("gamma")), "rounding": "floor", "lam": summed}
    else:
        params = {"density": density, "gamma": float(shared("gamma")), "rounding": "floor", **_consensus(normalize, lam, total, k)}
    if method.startswith("dare") and density < 1:
        notes.append("DARE drops entries at random: mergekit's mask (torch's global generator) and merginguriel's (seeded "
                     "per source and tensor) differ, so the tensors agree in distribution, not entry by entry")
        if rescale:
            notes.append("DARE rescale: mergekit keeps each tensor's L1 norm, merginguriel divides the kept entries by "
                         f"the density {density} (the same in expectation)")
    settings["merge.method"] = {"dare_linear": "dare_task_arithmetic"}.get(method, method)
    settings["merge.params"] = params
    return Imported(settings, notes, ignored)


def _consensus(normalize: bool, lam: float, total: float, k: int) -> dict:
    """mergekit's sign consensus: normalize divides by the agreeing weights (dis-mean); without it the weighted sum
    of the agreeing entries (dis-sum, which here is K times the normalised weights: λ·S/K)."""
    if normalize:
        return {"merge": "dis-mean", "lam": lam}
    return {"merge": "dis-sum", "lam": lam * total / k}


def _dtype(config: dict) -> tuple[str, list[str]]:
    def name(v: Any) -> Optional[str]:
        if v is None:
            return None
        s = str(v).removeprefix("torch.")
        if s not in DTYPES:
            raise InputError(f"mergekit dtype {v!r} cannot be translated; use one of {', '.join(DTYPES)}")
        return s

    compute, out = name(config.get("dtype")), name(config.get("out_dtype"))
    notes = []
    if compute in ("float16", "bfloat16"):
        notes.append(f"mergekit computes in {compute}; merginguriel computes in float32 and writes {out or compute}, "
                     f"so the results differ by {compute} rounding")
    return out or compute or "base", notes


def _slerp(config, refs, base_model, anchor, settings, notes, value) -> Imported:
    others = [r for r, _ in refs if r != base_model]
    if base_model is None or len(others) != 1:
        raise InputError("mergekit slerp interpolates base_model and exactly one other model; give base_model and one more "
                         f"model (got base_model {base_model!r} and {len(others)} other model(s))")
    t = float(value("t", {}, "slerp"))
    if anchor:
        settings.update(anchor)
    notes.append("slerp: merginguriel's t = 0 is its first source, here mergekit's base_model")
    settings["selection.sources"] = [base_model, others[0]]
    settings["merge.method"] = "slerp"
    settings["merge.params"] = {"t": t}
    return Imported(settings, notes)
