"""A checked merge written as a mergekit 0.1.5 YAML (``merginguriel merge ... --save_mergekit out.yml``): the inverse of
merginguriel.merging.mergekit's translation, for the methods both tools have (``mergekit-yaml out.yml folder/`` then
gives the same tensors; benchmarks/compare_mergekit.py checks it with the real mergekit).

What each merge function becomes (ŵ = the weights normalised to sum 1, K = the number of sources):

- linear and its presets (similarity, average): ``linear`` with the weights the merge used and ``normalize``;
- slerp of two sources at t: ``slerp``, ``base_model`` the first source (mergekit's t = 0);
- the task-vector family (task_arithmetic, ties, dare_*, breadcrumbs*, task_vectors), by its parts: sparsify
  none / dare / magnitude / breadcrumbs with consensus none -> ``task_arithmetic`` / ``dare_linear`` / (none) /
  ``breadcrumbs``, with consensus ties -> ``ties`` (density 1) / ``dare_ties`` / ``ties`` / ``breadcrumbs_ties``;
  ``base_model`` the base. The weights are ŵ (1/K unweighted); combine mean is λ (consensus ties: normalize true),
  combine sum λ·K (consensus ties: normalize false), combine linear λ when its weights sum to 1.

Anything else is refused with the reason, before a file is written: other methods (mergekit has no Fisher, RegMean,
AdaMerging, NeuroMerging or directional consensus), TIES trimming over the whole model (mergekit trims per tensor),
the ceil rounding of density (mergekit keeps int(density·n)), DARE after a trim, SLERP of more than two models, a
``dot_threshold`` other than mergekit's, excluded tensors.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from merginguriel.errors import InputError

MERGEKIT_DOT_THRESHOLD = 0.9995  # mergekit 0.1.5's slerp constant


def _functions() -> dict:
    from merginguriel.merging.methods.linear import linear
    from merginguriel.merging.methods.slerp import slerp
    from merginguriel.merging.methods.task_vectors import task_vectors

    return {linear: "linear", slerp: "slerp", task_vectors: "task_vectors"}


def exportable_methods() -> list[str]:
    """The registered methods whose merge function mergekit has (parameters may still refuse a particular job)."""
    from merginguriel.merging.registry import load_methods

    functions = _functions()
    return sorted(name for name, m in load_methods().items() if m.fn in functions)


def check_exportable(method: Any) -> None:
    """Refuse, naming it, a method mergekit lacks."""
    if method.fn not in _functions():
        raise InputError(f"--save_mergekit: mergekit has no {method.name!r} merge; the methods both tools have: "
                         f"{', '.join(exportable_methods())} (drop --save_mergekit, or choose one of them)")


def _ref(path) -> str:
    from merginguriel.models.hub import hub_id_of

    return hub_id_of(path) or str(path)


def export_config(plan: Any) -> tuple[dict, list[str]]:
    """The mergekit config of a checked merge (merginguriel.merging.validate.Plan) and the notes on what differs;
    an InputError naming what mergekit cannot express."""
    check_exportable(plan.method)
    if plan.exclude:
        raise InputError(f"--save_mergekit: mergekit cannot keep the base's values for excluded tensors "
                         f"(merge.exclude {list(plan.exclude)}); drop merge.exclude or --save_mergekit")
    kind = _functions()[plan.method.fn]
    sources = [_ref(s.path) for s in plan.sources]
    weights = [float(w) for w in plan.weights]
    notes: list[str] = []
    config: dict[str, Any] = {"dtype": "float32"}
    if plan.dtype in ("float16", "bfloat16"):
        config["out_dtype"] = plan.dtype
    if kind == "linear":
        config.update(merge_method="linear", parameters={"normalize": bool(plan.params.normalise)},
                      models=[{"model": s, "parameters": {"weight": w}} for s, w in zip(sources, weights)])
        return config, notes
    if kind == "slerp":
        if len(sources) != 2 or not math.isclose(plan.params.dot_threshold, MERGEKIT_DOT_THRESHOLD):
            raise InputError(f"--save_mergekit: mergekit's slerp interpolates exactly two models with dot_threshold "
                             f"{MERGEKIT_DOT_THRESHOLD}; got {len(sources)} sources, dot_threshold "
                             f"{plan.params.dot_threshold}")
        t = weights[1] / (weights[0] + weights[1])
        config.update(merge_method="slerp", base_model=sources[0], parameters={"t": t},
                      models=[{"model": sources[0]}, {"model": sources[1]}])
        return config, notes
    method, top, coefficients = _task_vectors(plan.kernel, weights, plan.method.name)
    if method.startswith("dare") and top["density"] < 1:
        notes.append("DARE drops entries at random: mergekit's mask (torch's global generator) and merginguriel's "
                     "(seeded per source and tensor) differ, so the tensors agree in distribution, not entry by entry")
    config.update(merge_method=method, base_model=_ref(plan.base.path), parameters=top,
                  models=[{"model": s, "parameters": {"weight": c}} for s, c in zip(sources, coefficients)])
    return config, notes


def _task_vectors(q: Any, weights: list[float], name: str) -> tuple[str, dict, list[float]]:
    """(mergekit method, top-level parameters, per-model weights) of the task-vector family's parts ``q``."""
    k, total = len(weights), sum(weights)
    coefficients = [w / total for w in weights] if q.weighted else [1.0 / k] * k

    def refuse(why: str) -> InputError:
        return InputError(f"--save_mergekit: {name} has no mergekit equivalent: {why}")

    trim, dare = q.trim, q.sparsify.startswith("dare")
    trims = trim == "breadcrumbs" or (trim == "magnitude" and q.density < 1)
    if trim == "magnitude" and q.density < 1 and q.scope != "tensor":
        raise refuse("scope global trims over the whole model, mergekit per tensor; set scope: tensor")
    if trims and q.rule != "floor":
        raise refuse(f"rounding {q.rounding} keeps ⌈density·n⌉ entries where mergekit keeps int(density·n); set "
                     "rounding: floor")
    if dare and trims:
        raise refuse(f"sparsify {q.sparsify} drops at random and then trims; mergekit does one or the other")
    top: dict[str, Any] = {}
    if dare:
        top.update(density=round(1.0 - q.p, 12), rescale=bool(q.rescale))
    elif trims:
        top["density"] = float(q.density)
    if trim == "breadcrumbs":
        top["gamma"] = float(q.gamma)
    if q.consensus == "ties":
        method = {"breadcrumbs": "breadcrumbs_ties"}.get(trim, "dare_ties" if dare else "ties")
        top.setdefault("density", 1.0)
        top["normalize"] = q.combine == "mean"
        top["lambda"] = q.lam if q.combine == "mean" else q.lam * k
        return method, top, coefficients
    if trim == "magnitude" and trims:
        raise refuse("magnitude trimming without the sign consensus (mergekit trims only in ties); set consensus: ties")
    if q.combine == "linear" and q.weighted and not q.normalise and not math.isclose(total, 1.0):
        raise refuse(f"combine linear with weights summing to {total:g} adds {total:g}·θ_b; set normalise: true")
    method = "breadcrumbs" if trim == "breadcrumbs" else "dare_linear" if dare else "task_arithmetic"
    top["normalize"] = False
    top["lambda"] = q.lam * (k if q.combine == "sum" else 1)
    return method, top, coefficients


def config_yaml(config: dict, notes: Optional[list[str]] = None) -> str:
    import yaml

    head = "# mergekit 0.1.5 config written by merginguriel (`mergekit-yaml this.yml out/` gives the same merge)\n"
    head += "".join(f"# note: {n}\n" for n in notes or [])
    return head + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
