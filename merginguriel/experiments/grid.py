"""Sweep configs: fixed settings + a grid over any config keys, resolved into one full config per point.

A sweep YAML::

    name: k_by_method
    db: results.sqlite
    fixed:                       # nested point settings shared by every point
      backbone: embedded
      selection: {similarity: real}
    grid:                        # cartesian product; keys are dotted paths into the point config
      target: [sw-KE, th-TH]
      selection.num_sources: [3, 5, 7]
      merge.method: [similarity, average, ties]
    zip:                         # optional groups whose lists vary together (one axis each)
      - merge.method: [ties, dare_ties]
        merge.params: [{density: 0.2}, {density: 0.2, p: 0.9}]

Every point starts from ``DEFAULT_POINT``, takes ``fixed`` and then its grid values, and is keyed by the SHA-256 of its
resolved config (canonical JSON), so the same point has the same key in every sweep and rerun.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from typing import Any, Optional

from merginguriel.data.config import EVAL_BATCH_SIZE
from merginguriel.errors import InputError
from merginguriel.locales import check_locale

# The resolved config of one point: everything select -> merge -> test needs. Sections listed in OPEN_SECTIONS take any
# keys (method parameters, library options); every other key must exist here, so a typo fails before anything runs.
DEFAULT_POINT: dict[str, Any] = {
    "target": None,
    "backbone": "embedded",
    "root": "checkpoints",
    "data": {"source": "embedded", "data_path": None, "max_length": 128},
    "selection": {
        "similarity": "uriel",
        "num_sources": 3,
        "include_target": False,
        "weighting": "scores",
        "candidates": None,
        "nxn_csv": None,
        "compatibility_csv": None,
        "options": {},
    },
    "merge": {"method": "similarity", "params": {}, "exclude": [], "seed": 42, "dtype": "float32"},
    "adamerging": {},
    "trainer": {},
    "evaluate": {"split": "test", "batch_size": EVAL_BATCH_SIZE, "sources": False},
    "features": {"enabled": True, "compatibility": True},
    "device": "auto",
}
OPEN_SECTIONS = ("selection.options", "merge.params", "adamerging", "trainer")


def point_key(config: dict) -> str:
    """The point's identity: SHA-256 of its canonical JSON (sorted keys), hex."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _is_open(path: str) -> bool:
    return any(path == s or path.startswith(s + ".") for s in OPEN_SECTIONS)


def set_dotted(config: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict; unknown keys outside the open sections are an InputError."""
    parts = dotted.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[: i + 1])
        if part not in node:
            if not _is_open(prefix):
                raise InputError(_unknown_key(dotted))
            node[part] = {}
        if not isinstance(node[part], dict):
            raise InputError(f"config key {prefix!r} is a value, not a section, so {dotted!r} cannot be set; use {prefix!r}")
        node = node[part]
    last = parts[-1]
    if last not in node and not _is_open(".".join(parts[:-1])) and not _is_open(dotted):
        raise InputError(_unknown_key(dotted))
    node[last] = copy.deepcopy(value)


def _unknown_key(dotted: str) -> str:
    known = sorted(_flat_keys(DEFAULT_POINT))
    return f"unknown sweep config key {dotted!r}; known keys: {', '.join(known)} (free keys only under {', '.join(OPEN_SECTIONS)})"


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and not _is_open(path):
            out += _flat_keys(v, path + ".")
        else:
            out.append(path)
    return out


def _merge_nested(config: dict, overrides: dict, prefix: str = "") -> None:
    """Apply a nested ``fixed`` mapping (dotted keys allowed at any level) onto ``config``."""
    for k, v in overrides.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and not _is_open(path) and "." not in k:
            existing = config
            for part in path.split("."):
                existing = existing.get(part) if isinstance(existing, dict) else None
            if isinstance(existing, dict):
                _merge_nested(config, v, path + ".")
                continue
        set_dotted(config, path, v)


def _axes(grid: dict, zips: list[dict]) -> list[list[dict[str, Any]]]:
    """Each axis is a list of assignments {dotted key: value}; the points are the cartesian product of the axes."""
    axes = []
    for key, values in grid.items():
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


def validate_point(config: dict) -> None:
    """Checks that need the whole resolved point (early, before anything runs)."""
    target = config.get("target")
    if not target:
        raise InputError("a sweep point has no target; set `target` under fixed or grid (e.g. grid: {target: [sw-KE]})")
    check_locale(target)
    sel = config["selection"]
    if not isinstance(sel["num_sources"], int) or sel["num_sources"] < 1:
        raise InputError(f"selection.num_sources must be a positive integer, got {sel['num_sources']!r}")
    if config["evaluate"]["split"] not in ("train", "validation", "test"):
        raise InputError(f"evaluate.split must be train, validation or test, got {config['evaluate']['split']!r}")
    if not isinstance(config["merge"]["params"], dict):
        raise InputError(f"merge.params must be a mapping of parameter names to values, got {config['merge']['params']!r}")
    _check_method(config)


def _check_method(config: dict) -> None:
    """Unknown methods, method parameters and AdaMerging/Trainer options fail at planning time, not mid-sweep."""
    import dataclasses

    from merginguriel.experiments.point import ENSEMBLE_METHOD, engine_method

    method = config["merge"]["method"]
    if method == ENSEMBLE_METHOD:
        return
    if method == "adamerging":
        from merginguriel.adamerging.options import AdaMergingOptions, TrainerOptions

        for section, cls in (("adamerging", AdaMergingOptions), ("trainer", TrainerOptions)):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(config.get(section) or {}) - known)
            if unknown:
                raise InputError(f"unknown {section} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return
    from merginguriel.merging import get_method

    name, params = engine_method(method, dict(config["merge"]["params"]))
    get_method(name).make_params(params)


def expand(fixed: Optional[dict] = None, grid: Optional[dict] = None, zips: Optional[list[dict]] = None) -> list[dict]:
    """All resolved point configs of a sweep, in grid order, duplicates (same key) removed."""
    base = copy.deepcopy(DEFAULT_POINT)
    _merge_nested(base, fixed or {})
    points, seen = [], set()
    for combo in itertools.product(*_axes(grid or {}, zips or [])):
        config = copy.deepcopy(base)
        for assignment in combo:
            for dotted, value in assignment.items():
                set_dotted(config, dotted, value)
        validate_point(config)
        key = point_key(config)
        if key not in seen:
            seen.add(key)
            points.append(config)
    return points
