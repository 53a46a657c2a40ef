"""Sweep configs: fixed settings + a grid over any merge-job keys, resolved into one merge job per point.

A sweep YAML::

    name: k_by_method
    fixed:                       # a merge job's settings shared by every point (merginguriel.jobs.MergeJob)
      backbone: embedded
      selection: {similarity: real}
    grid:                        # cartesian product; keys are dotted paths into the merge job
      target: [sw-KE, th-TH]
      selection.num_sources: [3, 5, 7]
      merge.method: [similarity, average, ties]
    zip:                         # optional groups whose lists vary together (one axis each)
      - merge.method: [ties, dare_ties]
        merge.params: [{density: 0.2}, {density: 0.2, p: 0.9}]

Each point is a checked merge job (:class:`~merginguriel.jobs.CheckedJob`: names, ranges, locales, method parameters)
before any database is written, and keyed by ``job.key()``, so the same point has the same key in every sweep and rerun.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Optional

from merginguriel.errors import InputError
from merginguriel.jobs.spec import CheckedJob, job_from_dict, set_dotted


def _merge_nested(config: dict, overrides: dict, prefix: str = "") -> None:
    """Apply a nested ``fixed`` mapping (dotted keys allowed at any level) onto ``config``."""
    for k, v in overrides.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            _merge_nested(config, v, path + ".")
        else:
            set_dotted(config, path, v)


def flat_grid(grid: dict, prefix: str = "") -> dict[str, Any]:
    """A grid with nested sections (``selection: {num_sources: [3, 5]}``, as a command-line override
    ``--sweep.grid.selection.num_sources`` makes) as dotted keys: a grid value is a list, so a mapping is a section."""
    out: dict[str, Any] = {}
    for key, values in grid.items():
        if isinstance(values, dict) and values:
            out.update(flat_grid(values, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = values
    return out


def _axes(grid: dict, zips: list[dict]) -> list[list[dict[str, Any]]]:
    """Each axis is a list of assignments {dotted key: value}; the points are the cartesian product of the axes."""
    axes = []
    for key, values in flat_grid(grid).items():
        if not isinstance(values, list) or not values:
            raise InputError(f"grid key {key!r} must map to a non-empty list of values, got {values!r}")
        axes.append([{key: v} for v in values])
    for i, group in enumerate(zips):
        if not isinstance(group, dict) or not group:
            raise InputError(f"zip group {i} must be a mapping of dotted keys to equal-length lists, got {group!r}")
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in group.items()}
        if -1 in lengths.values() or len(set(lengths.values())) != 1 or 0 in lengths.values():
            raise InputError(f"zip group {i}: every key needs a non-empty list and all lists the same length; got lengths {lengths}")
        n = next(iter(lengths.values()))
        axes.append([{k: group[k][j] for k in group} for j in range(n)])
    return axes


def expand(fixed: Optional[dict] = None, grid: Optional[dict] = None, zips: Optional[list[dict]] = None) -> list[CheckedJob]:
    """Every point of a sweep as a checked merge job, in grid order, duplicates (same key) removed."""
    base: dict = {}
    _merge_nested(base, fixed or {})
    jobs, seen = [], set()
    for combo in itertools.product(*_axes(grid or {}, zips or [])):
        config = copy.deepcopy(base)
        for assignment in combo:
            for dotted, value in assignment.items():
                set_dotted(config, dotted, value)
        try:
            job = job_from_dict(config)
        except TypeError as err:  # a section given a wrong shape
            raise InputError(f"sweep point {config}: {err}") from None
        try:
            checked = job.check()
        except InputError as err:
            raise InputError(f"sweep point ({_label(config)}): {err}") from None
        key = checked.key()
        if key not in seen:
            seen.add(key)
            jobs.append(checked)
    return jobs


def _label(config: dict) -> str:
    """A point's settings in one line, for an error met before the point could be checked."""
    merge = config.get("merge") or {}
    sel = config.get("selection") or {}
    return " ".join(str(v) for v in (config.get("target"), merge.get("method"), sel.get("similarity") or sel.get("sources"))
                    if v is not None)
