"""A merge job's minimal recipe: only the settings that differ from the defaults, so that a shared recipe says what
was chosen and nothing else (no AdaMerging or trainer keys for a TIES merge). Loaded back as a config
(``merginguriel merge -c recipe.yaml``), it gives the same job, hence the same job key and output."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from merginguriel.adamerging.options import AdaMergingOptions, TrainerOptions
from merginguriel.jobs.spec import ADAMERGING, MergeJob


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


def job_recipe(job: MergeJob) -> dict:
    """The job's settings that differ from ``MergeJob()``'s, nested as in a config file; the AdaMerging and trainer
    sections only for AdaMerging (they do not apply to other methods). Check the job first (``job.check()``) so that
    method parameters carry their canonical names."""
    given, default = job.to_dict(), MergeJob().to_dict()
    if job.merge.method == ADAMERGING:
        for name, cls in (("adamerging", AdaMergingOptions), ("trainer", TrainerOptions)):
            if given[name] is not None:
                default[name] = _plain(dataclasses.asdict(cls()))
    else:
        for name in ("adamerging", "trainer"):
            given.pop(name)
    return _diff(given, default)


def recipe_yaml(recipe: dict, header: str = "") -> str:
    import yaml

    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, allow_unicode=True)
