"""`merginguriel merge`: pick sources (explicitly or by similarity), merge them with a registered method, optionally evaluate.

```
merginguriel merge --list
merginguriel merge --target sw-KE --sources [de-DE,fr-FR] --weights [0.6,0.4] --method ties --method_params.density 0.2
merginguriel merge --target sw-KE --similarity uriel --num_sources 5 --method linear --evaluate true
merginguriel merge --config merge.yaml --method_params.lam 0.5 --print_config
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional

from merginguriel.errors import InputError

_LIST_ARGS = ("--sources", "--weights", "--exclude", "--candidates")
_NUMBER = re.compile(r"^-?\d+(\.\d*)?([eE]-?\d+)?$")


def merge_command(
    target: Optional[str] = None,
    sources: Optional[list[str]] = None,
    weights: Optional[list[float]] = None,
    similarity: Optional[str] = None,
    num_sources: int = 5,
    include_target: Optional[bool] = None,
    weighting: Literal["scores", "sinkhorn", "similarity_x_compatibility"] = "scores",
    candidates: Optional[list[str]] = None,
    nxn_csv: Optional[str] = None,
    method: str = "linear",
    params: Optional[dict[str, Any]] = None,
    method_params: Optional[dict[str, Any]] = None,
    exclude: Optional[list[str]] = None,
    backbone: str = "embedded",
    root: str = "checkpoints",
    base: Optional[str] = None,
    run: Optional[str] = None,
    output: Optional[str] = None,
    overwrite: bool = False,
    device: str = "auto",
    dtype: Literal["float32", "float16", "bfloat16", "base"] = "float32",
    seed: int = 42,
    memory_mb: float = 256.0,
    evaluate: bool = False,
    eval_split: Literal["train", "validation", "test"] = "validation",
    progress: bool = True,
    list: bool = False,
) -> None:
    """Merge fine-tuned models into one (`merginguriel merge --list` shows every method and its parameters).

    Args:
        target: the target locale (the output goes to merged/<target>/<run>; required for --similarity and --evaluate).
        sources: explicit sources: locales (their fine-tuned models under --root) or checkpoint folders.
        weights: one weight per explicit source (default: equal weights).
        similarity: instead of --sources, select sources by similarity: uriel, uriel_<distance> or real.
        num_sources: K, the number of sources selected by --similarity.
        include_target: IncTar (true: the target's own model is among the sources) or ExcTar (false); unset with
            explicit sources means unchecked, with --similarity it means ExcTar.
        weighting: how --similarity turns scores into weights: scores (renormalised), sinkhorn, or
            similarity_x_compatibility (scores x mean task-vector cosine with the other chosen sources, renormalised).
        candidates: locales --similarity may choose from (default: every locale with a fine-tuned model).
        nxn_csv: the NxN matrix CSV for --similarity real.
        method: the merge method (`--list`), or adamerging (options under --adamerging.* and --trainer.*).
        params: the method's parameters as a JSON/YAML mapping, e.g. '{"density": 0.2}'.
        method_params: the same, one by one: --method_params.density 0.2 (wins over --params).
        exclude: tensor-name patterns (globs, or re:<regex>) that keep the base's values, e.g. '*embeddings*'.
        backbone: the backbone whose checkpoints are merged (embedded, a hub id or a folder).
        root: the checkpoints root.
        base: the shared base folder (default: <root>/<backbone>/base).
        run: the run name under merged/<target>/ (default: the method plus a short hash of the resolved config).
        output: write here instead of merged/<target>/<run>.
        overwrite: replace an existing output.
        device: auto (cuda when present, else cpu), cpu, cuda, cuda:N.
        dtype: output dtype (base: keep each tensor's dtype).
        seed: seed of random methods (DARE), recorded in the manifest.
        memory_mb: working-memory budget of the streaming merge (blocks of all sources held at once).
        evaluate: evaluate the merged model on the target's --eval_split right away; metrics go into the manifest.
        eval_split: the split --evaluate uses.
        progress: show a progress bar over tensors.
        list: print the methods with their parameters and defaults, and exit.
    """


def _bracket_lists(argv: list[str]) -> list[str]:
    """Accept `--sources a b c` as well as `--sources [a,b,c]`, and a bare `--list`."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--list" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out += ["--list", "true"]
            i += 1
            continue
        if tok in _LIST_ARGS and i + 1 < len(argv) and not argv[i + 1].startswith("["):
            vals = []
            j = i + 1
            while j < len(argv) and (not argv[j].startswith("-") or _NUMBER.match(argv[j])):
                vals.append(argv[j])
                j += 1
            if vals:
                out += [tok, json.dumps(vals if tok != "--weights" else [float(v) for v in vals])]
                i = j
                continue
        out.append(tok)
        i += 1
    return out


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from merginguriel.adamerging.options import AdaMergingOptions, TrainerOptions
    from merginguriel.data.config import DataConfig

    parser = ArgumentParser(prog="merginguriel merge", description=merge_command.__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_function_arguments(merge_command)
    parser.add_class_arguments(AdaMergingOptions, "adamerging")
    parser.add_class_arguments(TrainerOptions, "trainer")
    parser.add_class_arguments(DataConfig, "data")
    return parser


def _explicit_source(token: str, layout) -> tuple[Path, Optional[str]]:
    from merginguriel.io import read_manifest
    from merginguriel.locales import LOCALES

    if token in LOCALES:
        path = layout.finetuned(token)
        if not path.is_dir():
            raise InputError(
                f"source {token}: no fine-tuned model at {path}; fine-tune it first (merginguriel fit) or check --root/--backbone"
            )
        return path, token
    path = Path(token)
    if not path.is_dir():
        raise InputError(f"source {token!r} is neither a MASSIVE locale nor a checkpoint folder; check the name or path")
    try:
        locale = read_manifest(path).get("locale")
    except FileNotFoundError:
        locale = None
    return path, locale


def resolve(cfg) -> tuple[Any, dict]:
    """Turn parsed options into a MergeSpec (selection included) and the resolved config the run name hashes."""
    from merginguriel.locales import check_locale
    from merginguriel.merging.spec import MergeSpec, Source

    from merginguriel.checkpoints import Layout

    layout = Layout.for_backbone(cfg.backbone, cfg.root)
    base = Path(cfg.base) if cfg.base else layout.base
    if cfg.target is not None:
        check_locale(cfg.target)
    if cfg.sources and cfg.similarity:
        raise InputError("give either --sources (explicit) or --similarity (selection), not both")
    params = {**(cfg.params or {}), **(cfg.method_params or {})}
    selection = None
    include_target = cfg.include_target
    if cfg.similarity:
        if not cfg.target:
            raise InputError("--similarity selects sources for a target: pass --target LOCALE")
        if cfg.weights:
            raise InputError("--weights are for explicit --sources; --similarity derives the weights")
        try:
            from merginguriel.similarity import select_for_target
        except ImportError as err:
            raise InputError(f"similarity-driven selection is unavailable ({err}); pass --sources and --weights") from None
        include_target = bool(include_target)
        candidates = cfg.candidates or layout.finetuned_locales()
        if not candidates:
            raise InputError(f"no fine-tuned models under {layout.home / 'finetuned'} to select from; run merginguriel fit first")
        if include_target and cfg.target not in candidates:
            raise InputError(
                f"IncTar needs the target {cfg.target}'s own fine-tuned model, but {layout.finetuned(cfg.target)} has none; "
                f"fine-tune it (merginguriel fit) or use --include_target false (ExcTar)"
            )
        compat = cfg.weighting == "similarity_x_compatibility"  # scores x task-vector compatibility (merginguriel.compatibility)
        sel = select_for_target(
            cfg.target, cfg.similarity, cfg.num_sources, include_target, "scores" if compat else cfg.weighting, candidates,
            nxn_csv=cfg.nxn_csv, root=cfg.root,
        )
        if compat:
            from merginguriel.compatibility.weighting import apply_compatibility, compatibility_for

            sel = apply_compatibility(sel, compatibility_for(
                list(sel.sources), layout.base, {s: layout.finetuned(s) for s in sel.sources}))
        selection = sel.to_dict() if hasattr(sel, "to_dict") else dataclasses.asdict(sel)
        sources = []
        for loc, w in zip(sel.sources, sel.weights):
            path = layout.finetuned(loc)
            if not path.is_dir():
                raise InputError(f"selected source {loc} has no fine-tuned model at {path}; fine-tune it or restrict --candidates")
            sources.append(Source(path, loc, float(w)))
        origin = "similarity"
    elif cfg.sources:
        if cfg.weights is not None and len(cfg.weights) != len(cfg.sources):
            raise InputError(f"{len(cfg.weights)} weights for {len(cfg.sources)} sources; give one weight per source")
        weights = cfg.weights if cfg.weights is not None else [1.0] * len(cfg.sources)
        sources = []
        for tok, w in zip(cfg.sources, weights):
            path, loc = _explicit_source(tok, layout)
            sources.append(Source(path, loc, float(w)))
        origin = "manual" if cfg.weights is not None else "average"
    else:
        raise InputError("no sources: pass --sources [loc1,loc2,...] (and --weights) or --similarity KIND --num_sources K")

    if cfg.method in ("linear", "dare_linear"):
        chosen = params.get("weighting")
        if chosen is None:
            params["weighting"] = origin
        elif chosen == "manual" and origin != "manual":
            raise InputError("linear weighting=manual needs --weights (one per source)")
        elif chosen == "similarity" and origin != "similarity":
            raise InputError("linear weighting=similarity needs --similarity (the weights come from the selection)")

    resolved = {
        "base": str(base), "sources": [[str(s.path), s.locale, s.weight] for s in sources], "method": cfg.method,
        "params": params, "exclude": cfg.exclude or [], "dtype": cfg.dtype, "seed": cfg.seed, "target": cfg.target,
        "include_target": include_target, "selection": selection,
    }
    if cfg.method == "adamerging":
        resolved["adamerging"] = dataclasses.asdict(cfg.adamerging) if dataclasses.is_dataclass(cfg.adamerging) else dict(vars(cfg.adamerging))
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:10]
    run = cfg.run or f"{cfg.method}-{digest}"
    if cfg.output:
        out = Path(cfg.output)
    else:
        out = layout.merged(cfg.target or "untargeted", run)
    spec = MergeSpec(
        base=base, sources=sources, method=cfg.method, params=params, output=out, exclude=cfg.exclude or [],
        device=cfg.device, dtype=cfg.dtype, seed=cfg.seed, target=cfg.target, selection=selection,
        overwrite=cfg.overwrite, include_target=include_target, memory_mb=cfg.memory_mb, progress=cfg.progress,
    )
    return spec, resolved


def _group(cfg, name: str, cls):
    value = getattr(cfg, name)
    if isinstance(value, cls):
        return value
    return cls(**{k: v for k, v in vars(value).items()})


def main(argv: list[str]) -> int:
    """Entry point of `merginguriel merge` (argv without the subcommand)."""
    from merginguriel.adamerging.options import AdaMergingOptions, TrainerOptions
    from merginguriel.data.config import DataConfig

    parser = build_parser()
    cfg = parser.parse_args(_bracket_lists(list(argv)))
    if cfg.list:
        from merginguriel.merging.registry import format_methods

        print(format_methods(), end="")
        print("adamerging: learns merge coefficients on the target's unlabelled utterances (options: --adamerging.*, --trainer.*)")
        return 0
    data = _group(cfg, "data", DataConfig)
    if cfg.evaluate and not cfg.target:
        raise InputError("--evaluate true evaluates on the target locale: pass --target LOCALE")
    spec, _ = resolve(cfg)
    if spec.method == "adamerging":
        from merginguriel.adamerging.run import run_adamerging

        out = run_adamerging(spec, _group(cfg, "adamerging", AdaMergingOptions), _group(cfg, "trainer", TrainerOptions), data)
    else:
        from merginguriel.merging.engine import merge
        from merginguriel.merging.registry import get_method

        if get_method(spec.method).needs:
            from merginguriel.statistics.cache import ensure_statistics

            spec = ensure_statistics(spec, data)
        out = merge(spec)
    print(f"merged model: {out}")
    if cfg.evaluate:
        evaluate_into_manifest(out, spec.target, cfg.eval_split, data, spec.device)
    return 0


def evaluate_into_manifest(folder: Path, target: str, split: str, data, device: str) -> dict:
    """Evaluate ``folder`` on ``target``'s ``split``, add the metrics to its manifest and print the accuracy."""
    from merginguriel.evaluation.evaluate import evaluate_checkpoint
    from merginguriel.io import read_manifest, write_json_atomic

    metrics = evaluate_checkpoint(folder, [target], split=split, data=data, device=device)
    manifest = read_manifest(folder)
    manifest["evaluation"] = {"split": split, "metrics": metrics}
    write_json_atomic(Path(folder) / "manifest.json", manifest)
    m = metrics[target]
    print(f"{target} {split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n={m['n']})")
    return metrics


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
