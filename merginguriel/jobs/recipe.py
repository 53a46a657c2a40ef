"""A merge job's minimal recipe: only the settings that differ from the defaults, so that a shared recipe says what
was chosen and nothing else (no Trainer keys for a method that does not train). Loaded back as a config
(``merginguriel merge -c recipe.yaml``), it gives the same job, hence the same job key and output."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from merginguriel.jobs.spec import CheckedJob, MergeJob
from merginguriel.training import TrainerOptions


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _diff(given: dict, default: dict) -> dict:
    out = {}
    for key, value in given.items():
        base = default.get(key) if isinstance(default, dict) else None
        if isinstance(value, dict) and isinstance(base, dict) and key != "params":  # params: the method's, whole
            sub = _diff(value, base)
            if sub:
                out[key] = sub
        elif value != base:
            out[key] = value
    return out


def job_recipe(checked: CheckedJob) -> dict:
    """The checked job's settings that differ from ``MergeJob()``'s, nested as in a config file, the method's
    parameters under their canonical names; the ``trainer`` section only for a method that trains."""
    given, default = checked.to_dict(), MergeJob().to_dict()
    if checked.method.needs.trainer:
        if given["trainer"] is not None:
            default["trainer"] = _plain(dataclasses.asdict(TrainerOptions()))
    else:
        given.pop("trainer")
    return _diff(given, default)


def recipe_yaml(recipe: dict, header: str = "") -> str:
    import yaml

    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, allow_unicode=True)
