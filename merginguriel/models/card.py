"""The model card (``README.md``) beside every exported or merged model: Hugging Face metadata (YAML front matter) and
a readable account of how the model was made, both drawn from the folder's ``manifest.json``.

The front matter is what the hub indexes: ``base_model`` (the backbone, when it is a hub id; for a merge, the hub's
convention and mergekit's: the merged sources that have hub ids, with ``base_model_relation: merge``, the local-only
sources named in the body), ``library_name``,
``pipeline_tag``, ``license``, ``datasets``, ``language`` (ISO 639-1 codes of the model's locales), ``tags`` and, once
the model has been judged, ``model-index`` results. The body lists the sources with their weights, the method and its
parameters (or the fine-tuning recipe), and the metrics, with 95% intervals once a merge job has judged the model.

Every writer of a model folder calls :func:`write_card` inside its atomic write, after the manifest, so a finished
folder always has its card; a merge job writes it again once the judgement is in the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from merginguriel.io import atomic_write_text, read_manifest
from merginguriel.units import points

CARD_NAME = "README.md"
MASSIVE_ID = "AmazonScience/massive"
# Models trained on MASSIVE carry its licence (CC BY 4.0: share with attribution); models of the embedded default saw
# only generated data, so the project's own licence applies.
MASSIVE_LICENSE = "cc-by-4.0"
SYNTHETIC_LICENSE = "apache-2.0"
MASSIVE_CITATION = ("MASSIVE: FitzGerald et al., \"MASSIVE: A 1M-Example Multilingual Natural Language Understanding "
                    "Dataset with 51 Typologically-Diverse Languages\", ACL 2023 (CC BY 4.0).")


def _base_manifest(manifest: dict) -> dict:
    ref = manifest.get("base")
    if isinstance(ref, dict) and ref.get("path"):
        try:
            return read_manifest(ref["path"])
        except (FileNotFoundError, ValueError):
            return {}
    return {}


def backbone_of(manifest: dict) -> Optional[str]:
    """The backbone a model descends from: as its shared base recorded it, else as its fit or merge job named it."""
    if manifest.get("kind") == "base":
        return manifest.get("backbone")
    recorded = _base_manifest(manifest).get("backbone")
    if recorded:
        return recorded
    config = manifest.get("config") or ((manifest.get("job") or {}).get("config")) or {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    return model.get("backbone") or config.get("backbone")


def _data_source(manifest: dict) -> Optional[str]:
    config = manifest.get("config") or ((manifest.get("job") or {}).get("config")) or {}
    return (config.get("data") or {}).get("source")


def _locales(manifest: dict) -> list[str]:
    """The model's locales: what it was fine-tuned on, or the merge's target then its sources' locales."""
    from merginguriel.locales import ISO639_1

    if manifest.get("kind") == "merged":
        found = [manifest.get("target")] + [s.get("locale") for s in manifest.get("sources") or []]
    else:
        found = list(manifest.get("locales") or [manifest.get("locale")])
    return list(dict.fromkeys(loc for loc in found if loc in ISO639_1))


def _hub_sources(manifest: dict) -> tuple[list[str], list[str]]:
    """A merge's sources split into hub ids (its ``base_model`` list) and the names of local-only ones."""
    from merginguriel.models.hub import hub_id_of

    hub, local = [], []
    for record in manifest.get("sources") or []:
        ref = hub_id_of(record.get("path", ""))
        (hub if ref else local).append(ref or _source_name(record))
    return hub, local


def _source_name(record: dict) -> str:
    from merginguriel.models.hub import hub_id_of

    return record.get("locale") or hub_id_of(record.get("path", "")) or str(record.get("path"))


def _model_type(folder: Path) -> Optional[str]:
    import json

    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def card_data(folder: str | os.PathLike, manifest: dict):
    """The hub metadata of a model folder (``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import EvalResult, ModelCardData

    from merginguriel.checkpoints import EMBEDDED
    from merginguriel.locales import ISO639_1
    from merginguriel.models.hub import is_hub_id

    kind = manifest.get("kind")
    backbone = backbone_of(manifest)
    synthetic = backbone == EMBEDDED or _data_source(manifest) == EMBEDDED
    locales = _locales(manifest)
    tags = ["merginguriel", "intent-classification"]
    tags += ["synthetic-data"] if synthetic else ["massive"]
    model_type = _model_type(Path(folder))
    if model_type:
        tags.append(model_type)
    if kind == "merged":
        tags += ["merge", str(manifest.get("method"))]
    results = []
    if not synthetic:
        results = [
            EvalResult(task_type="text-classification", task_name="Intent classification", dataset_type=MASSIVE_ID,
                       dataset_name=f"MASSIVE ({loc})", dataset_config=loc, dataset_split=split, metric_type="accuracy",
                       metric_value=round(float(value), 4))
            for loc, split, value in _headline_metrics(manifest)
        ]
    relation = {}
    if kind == "merged":
        base_model = _hub_sources(manifest)[0] or None
        relation = {"base_model_relation": "merge"} if base_model else {}
    else:
        base_model = backbone if backbone and is_hub_id(backbone) else None
    return ModelCardData(
        model_name=model_name(manifest) if results else None,  # the model-index's name; nothing else reads it
        base_model=base_model,
        **relation,
        library_name="transformers",
        pipeline_tag="text-classification",
        license=SYNTHETIC_LICENSE if synthetic else MASSIVE_LICENSE,
        datasets=None if synthetic else [MASSIVE_ID],
        language=list(dict.fromkeys(ISO639_1[loc] for loc in locales)) or None,
        tags=tags,
        metrics=["accuracy"] if kind != "base" else None,
        eval_results=results or None,
    )


def _headline_metrics(manifest: dict) -> list[tuple[str, str, float]]:
    """(locale, split, accuracy) the model-index reports: a merge's judged splits, a fine-tune's best validation."""
    if manifest.get("kind") == "merged":
        target = manifest.get("target")
        return [(target, split, rec["accuracy"]) for split, rec in (manifest.get("evaluation") or {}).items()
                if target and "accuracy" in rec]
    best = (manifest.get("metrics") or {}).get("best_val_accuracy")
    locales = _locales(manifest)
    if manifest.get("kind") == "finetuned" and best is not None and len(locales) == 1:
        return [(locales[0], "validation", best)]
    return []


def model_name(manifest: dict) -> str:
    """The card's title (and the model-index name), from the manifest alone: a folder is renamed into place after its
    card is written."""
    kind = manifest.get("kind")
    if kind == "merged":
        sources = ", ".join(_source_name(s) for s in manifest.get("sources") or [])
        return f"{manifest.get('target') or 'untargeted'}: {manifest.get('method')} merge of {sources}"
    if kind == "finetuned":
        return f"{'+'.join(_locales(manifest)) or manifest.get('locale')} intent classifier"
    return f"{backbone_of(manifest)} shared base"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _params(params: dict) -> str:
    return ", ".join(f"`{k}={_fmt(v)}`" for k, v in params.items()) or "none"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _summary(manifest: dict, backbone: Optional[str]) -> list[str]:
    kind = manifest.get("kind")
    if kind == "merged":
        n = len(manifest.get("sources") or [])
        target = manifest.get("target")
        return [f"A MASSIVE intent classifier (60 intents){' for ' + target if target else ''}, made by merging {n} "
                f"fine-tuned models of `{backbone or 'one shared base'}` with `{manifest.get('method')}` (merginguriel "
                "cross-lingual model merging). No labelled target data went into it unless the target's own model is "
                "among the sources."]
    if kind == "finetuned":
        return [f"`{backbone}` fine-tuned on the MASSIVE intent task (60 intents) for "
                f"{', '.join(_locales(manifest)) or manifest.get('locale')}, from the shared base every merginguriel "
                "fine-tune of this backbone starts from (so task vectors of these models can be merged)."]
    return [f"The shared base of `{backbone}`: its pretrained encoder plus a 60-intent classification head initialised "
            f"with seed {manifest.get('seed')}. Every merginguriel fine-tune of this backbone starts from it; it is not "
            "trained for the task."]


def _merge_section(manifest: dict) -> list[str]:
    lines = ["## How it was made", ""]
    params = manifest.get("params") or {}
    lines.append(f"- Method: `{manifest.get('method')}`; parameters: {_params(params)}")
    target = manifest.get("target")
    if target:
        inc = manifest.get("include_target")
        mode = "" if inc is None else (" (IncTar: the target's own model is a source)" if inc else
                                       " (ExcTar: the target's own model is not a source)")
        lines.append(f"- Target: {target}{mode}")
    selection = manifest.get("selection") or {}
    if selection.get("origin") == "similarity":
        scores = ", ".join(f"{s} {float(v):.3f}" for s, v in zip(selection.get("sources") or [], selection.get("scores") or []))
        lines.append(f"- Sources chosen by `{selection.get('similarity')}` similarity: K = {selection.get('num_sources')}, "
                     f"weighting `{selection.get('weighting')}`; similarity to the target: {scores}")
    elif selection.get("origin"):
        how = {"manual": "as given", "average": "equal"}.get(selection["origin"], selection["origin"])
        lines.append(f"- Sources given explicitly; weights {how}")
    hub, local = _hub_sources(manifest)
    if local:
        lines.append(f"- Merged models not on the hub (so not in `base_model`): {', '.join(f'`{n}`' for n in local)}")
    if hub:
        lines.append(f"- Merged hub models (`base_model`): {', '.join(f'`{n}`' for n in hub)}")
    base = manifest.get("base") or {}
    lines.append(f"- Shared base (task vectors are taken against it): `{base.get('path')}` (sha256 {str(base.get('hash'))[:12]})")
    excluded = (manifest.get("exclude") or {}).get("tensors") or []
    if excluded:
        lines.append(f"- Tensors kept from the base: {len(excluded)}")
    lines.append(f"- Output dtype: {manifest.get('dtype')}; seed {manifest.get('seed')}")
    coefficients = manifest.get("coefficients")  # a method that learns them records them (AdaMerging)
    per_layer = params.get("granularity") not in (None, "task")
    learned = f"learned coefficient{' (mean over tensors)' if per_layer else ''} | "
    lines += ["", "| source | weight | " + (learned if coefficients else "") + "kind | sha256 |",
              "|---|---|" + ("---|" if coefficients else "") + "---|---|"]
    weights = manifest.get("weights_normalised") or []
    for i, rec in enumerate(manifest.get("sources") or []):
        name = _source_name(rec)
        w = weights[i] if i < len(weights) else rec.get("weight")
        coef = ""
        if coefficients:
            key = next((k for k in (rec.get("locale"), name, Path(str(rec.get("path"))).name) if k in coefficients), None)
            coef = f"{_fmt(coefficients[key])} | " if key is not None else "- | "
        origin = {"finetuned": "fine-tuned from the shared base", "outside": "outside checkpoint"}.get(rec.get("origin"), rec.get("origin"))
        lines.append(f"| {name} | {float(w):.4f} | {coef}{origin} | {str(rec.get('hash'))[:12]} |")
    return lines


def _training_section(manifest: dict) -> list[str]:
    config = manifest.get("config") or {}
    model, data, trainer = config.get("model") or {}, config.get("data") or {}, config.get("trainer") or {}
    metrics = manifest.get("metrics") or {}
    lines = ["## Training", "", f"- Locales: {', '.join(_locales(manifest)) or manifest.get('locale')}"]
    if model:
        lines.append(f"- Recipe: learning rate {_fmt(model.get('learning_rate'))}, weight decay "
                     f"{_fmt(model.get('weight_decay'))}, warm-up ratio {_fmt(model.get('warmup_ratio'))}, batch size "
                     f"{data.get('batch_size')}, max length {data.get('max_length')}, at most {trainer.get('max_epochs')} "
                     f"epochs with early stopping on validation accuracy")
    if data.get("source"):
        lines.append(f"- Data: MASSIVE-format, source `{data.get('source')}`")
    if metrics:
        lines.append(f"- Trained {metrics.get('epochs')} epochs ({metrics.get('global_steps')} steps); best validation "
                     f"accuracy {_fmt(metrics.get('best_val_accuracy'))} (the exported weights are that checkpoint's)")
    lines.append(f"- Seed {manifest.get('seed')}; shared base `{(manifest.get('base') or {}).get('path')}`")
    return lines


def _evaluation_section(manifest: dict) -> list[str]:
    from merginguriel.plots import wilson

    evaluation = manifest.get("evaluation") or {}
    rows = [(split, rec) for split, rec in evaluation.items() if "accuracy" in rec]
    if not rows:
        return []
    lines = ["## Evaluation", "",
             f"On {manifest.get('target')}'s splits. Accuracy with its Wilson 95% interval; the gain over the best source "
             "(the source with the best validation accuracy, the model one would use without merging) with a paired "
             "bootstrap 95% interval and McNemar's p; the merging effect is the accuracy over the sources' mean.", "",
             "| split | n | accuracy [95% CI] | macro-F1 | best source | gain [95% CI] | McNemar p | merging effect | own model |",
             "|---|---|---|---|---|---|---|---|---|"]
    for split, rec in rows:
        lo, hi = wilson(float(rec["accuracy"]), int(rec["n"]))
        glo, ghi = rec.get("gain_ci") or (float("nan"), float("nan"))
        own = f"{_pct(rec['self_accuracy'])}" if "self_accuracy" in rec else "-"
        lines.append(
            f"| {split} | {rec['n']} | {_pct(rec['accuracy'])} [{_pct(lo)}, {_pct(hi)}] | {_pct(rec.get('macro_f1', float('nan')))} | "
            f"{rec.get('best_source')} {_pct(rec.get('best_source_accuracy', float('nan')))} | "
            f"{points(rec.get('gain', float('nan')))} [{points(glo)}, {points(ghi)}] | {rec.get('gain_p', float('nan')):.2g} | "
            f"{points(rec.get('merging_effect', float('nan')))} | {own} |"
        )
    lines += ["", "Accuracies in %, gains and effects in points.", ""]
    return lines


def render_card(folder: str | os.PathLike, manifest: Optional[dict] = None, repo_id: Optional[str] = None) -> str:
    """The model card text of a model folder, from its manifest (``repo_id``: the hub repository it is pushed to)."""
    manifest = manifest if manifest is not None else read_manifest(folder)
    data = card_data(folder, manifest)
    backbone = backbone_of(manifest)
    kind = manifest.get("kind")
    warnings = list(manifest.get("warnings") or []) + list((manifest.get("selection") or {}).get("warnings") or [])
    body = [f"# {model_name(manifest)}", ""] + _summary(manifest, backbone) + [""]
    for w in warnings:
        body += [f"> **Warning:** {w}", ""]
    if kind == "merged":
        body += _merge_section(manifest) + [""] + _evaluation_section(manifest)
    elif kind == "finetuned":
        body += _training_section(manifest) + [""]
    body += ["## Usage", "", "```python", "from transformers import pipeline", "",
             f'classify = pipeline("text-classification", model="{repo_id or "path/to/this/folder"}")',
             'classify("wake me up at nine am on friday")', "```", ""]
    body += ["## Provenance", "",
             f"Made by merginguriel {(manifest.get('versions') or {}).get('merginguriel', '')} on {manifest.get('created')}. "
             "`manifest.json` beside the weights records everything that made them: inputs and their hashes, parameters, "
             "seeds, package versions and timings.", ""]
    if data.datasets:
        body += [MASSIVE_CITATION, ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body).rstrip() + "\n"


def write_card(folder: str | os.PathLike, manifest: Optional[dict] = None, repo_id: Optional[str] = None) -> Path:
    """Write ``folder/README.md`` from the folder's manifest (atomically)."""
    return atomic_write_text(Path(folder) / CARD_NAME, render_card(folder, manifest, repo_id))
