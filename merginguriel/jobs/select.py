"""Which models take part in a merge job: its model pool checked once (the base, and the explicit sources or every
candidate a similarity may choose), then the choice itself, on the checked job and pool, checking nothing again.

Every choice is made on validation data. REAL similarity reads the backbone's VALIDATION NxN matrix by default; a
test-split matrix is refused unless ``selection.allow_test_nxn`` says so, and then the choice is recorded as a
warning. The selection record (what the manifest and the sweep row keep) names the NxN file, its split and its hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from merginguriel.errors import InputError
from merginguriel.jobs.spec import CheckedJob

TEST_NXN_WARNING = (
    "sources were selected with a TEST-split NxN matrix (selection.allow_test_nxn): the test accuracy of this merge "
    "is not an unbiased estimate"
)


@dataclass
class Chosen:
    """The sources of a job: their locales (None for an outside folder), folders and weights, and the record of how
    they were chosen (``record`` goes into the manifest under ``selection``)."""

    locales: list[Optional[str]]
    paths: list[Path]
    weights: list[float]
    record: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        from merginguriel.models.hub import hub_id_of

        return [loc or hub_id_of(p) or p.name for loc, p in zip(self.locales, self.paths)]


@dataclass(frozen=True)
class Pool:
    """The checked models of a job: the base, and per source token (an explicit source) or candidate locale (a
    similarity selection) its checked model (merginguriel.merging.validate.CheckedModel); the NxN matrix REAL reads,
    with its record and warnings."""

    base: Any
    models: dict[str, Any]
    nxn: Optional[Path] = None
    nxn_record: Optional[dict] = None
    warnings: tuple[str, ...] = ()


def validation_nxn(job: Any) -> Optional[Path]:
    """The NxN matrix a job's choices read: ``selection.nxn`` or the backbone's validation matrix (None if absent)."""
    if job.selection.nxn:
        from merginguriel.similarity.real import nxn_file

        path = nxn_file(job.selection.nxn)
        if not path.is_file():
            raise InputError(f"selection.nxn {path} not found; run `merginguriel nxn --split validation` or fix the path")
        return path
    path = job.layout.nxn_matrix("validation")
    return path if path.is_file() else None


def checked_nxn(job: Any) -> tuple[Path, dict, list[str]]:
    """The NxN matrix for REAL selection with its record; a test-split matrix is refused unless allowed."""
    from merginguriel.similarity.real import nxn_record

    path = validation_nxn(job)
    if path is None:
        raise InputError(
            f"REAL similarity reads the validation NxN matrix, expected at {job.layout.nxn_matrix('validation')}: run "
            f"`merginguriel nxn --backbone {job.job.backbone} --root {job.job.root} --split validation`, or set selection.nxn"
        )
    record = nxn_record(path)
    warnings = []
    if record["split"] == "test":
        if not job.selection.allow_test_nxn:
            raise InputError(
                f"{path} was computed on the TEST split; choosing sources with it leaks test data into the choice. Use the "
                "validation matrix (`merginguriel nxn --split validation`), or pass --selection.allow_test_nxn true to "
                "accept the leak (it is recorded in the manifest)"
            )
        warnings.append(TEST_NXN_WARNING)
    elif record["split"] is None:
        warnings.append(f"the split of {path} is unknown (no summary.json beside it); make sure it is not the test split")
    return path, record, warnings


def _explicit_folder(checked: CheckedJob, token: str) -> tuple[Path, Optional[str]]:
    """The folder and locale of one explicit source: a locale (its fine-tune), a checkpoint folder, or a hub id."""
    from merginguriel.io import read_manifest
    from merginguriel.locales import LOCALES, Locale

    if token in LOCALES:
        path = checked.layout.finetuned(token)
        if not path.is_dir():
            raise InputError(
                f"source {token}: no fine-tuned model at {path}; fine-tune it first (merginguriel fit) or check --root/--backbone"
            )
        return path, Locale(token)
    path = Path(token)
    if not path.is_dir():
        from merginguriel.models.hub import is_hub_id, resolve_hub_model

        if not is_hub_id(token):
            raise InputError(
                f"source {token!r} is neither a MASSIVE locale, a checkpoint folder nor a hub model id "
                "(namespace/name); check the name or path"
            )
        path = resolve_hub_model(token)
    try:
        locale = read_manifest(path).get("locale")
    except FileNotFoundError:
        locale = None
    return path, locale


def check_pool(checked: CheckedJob) -> Pool:
    """The job's models, each checked once: the shared base, then every explicit source or every candidate with a
    finished fine-tune; REAL's NxN matrix (its split)."""
    from merginguriel.checkpoints import is_finished
    from merginguriel.merging.validate import check_base, check_source

    sel, layout = checked.selection, checked.layout
    base = check_base(checked.base)
    models: dict[str, Any] = {}
    if sel.similarity:
        if not checked.candidates:
            raise InputError(f"no fine-tuned models under {layout.home / 'finetuned'} to select from; run merginguriel fit first")
        if sel.include_target and checked.target not in checked.candidates:
            raise InputError(
                f"IncTar needs the target {checked.target}'s own fine-tuned model, but {layout.finetuned(checked.target)} "
                "has none; fine-tune it (merginguriel fit) or use --selection.include_target false (ExcTar)"
            )
        for loc in checked.candidates:
            path = layout.finetuned(loc)
            if is_finished(path):
                models[loc] = check_source(base, path, loc, named_base=checked.named_base)
    else:
        for i, token in enumerate(sel.sources):
            path, locale = _explicit_folder(checked, token)
            models[token] = check_source(base, path, locale, f"source {locale or i}", named_base=checked.named_base)
    if sel.similarity == "real":
        nxn, record, warnings = checked_nxn(checked)
        return Pool(base, models, nxn, record, tuple(warnings))
    return Pool(base, models)


def choose_sources(checked: CheckedJob, pool: Pool) -> Chosen:
    """The job's sources and weights (explicit, or selected by similarity among the pool), with the record of the
    choice."""
    chosen = _by_similarity(checked, pool) if checked.selection.similarity else _explicit(checked, pool)
    if chosen.warnings:
        chosen.record = {**chosen.record, "warnings": list(chosen.warnings)}
    return chosen


def _explicit(checked: CheckedJob, pool: Pool) -> Chosen:
    from merginguriel.models.hub import hub_id_of

    models = [pool.models[token] for token in checked.selection.sources]
    given = checked.selection.weights
    weights = [float(w) for w in given] if given is not None else [1.0] * len(models)
    origin = "manual" if given is not None else "average"
    record = {"origin": origin, "sources": [m.locale or hub_id_of(m.path) or str(m.path) for m in models], "weights": weights}
    return Chosen([m.locale for m in models], [m.path for m in models], weights, record)


def _by_similarity(checked: CheckedJob, pool: Pool) -> Chosen:
    from merginguriel.similarity import select_for_target

    sel, layout = checked.selection, checked.layout
    compat = sel.weighting == "similarity_x_compatibility"
    chosen = select_for_target(
        checked.target, sel.similarity, sel.num_sources, bool(sel.include_target), "scores" if compat else sel.weighting,
        list(checked.candidates), nxn_csv=str(pool.nxn) if pool.nxn else None, feature_set=sel.feature_set,
        root=checked.job.root, temperature=sel.temperature,
    )
    for loc in chosen.sources:
        if loc not in pool.models:
            raise InputError(f"selected source {loc} has no fine-tuned model at {layout.finetuned(loc)}; fine-tune it or "
                             "restrict selection.candidates")
    if compat:
        from merginguriel.compatibility.weighting import apply_compatibility, compatibility_for

        chosen = apply_compatibility(chosen, compatibility_for(
            list(chosen.sources), checked.base, {s: layout.finetuned(s) for s in chosen.sources}, sel.compatibility))
    record = {"origin": "similarity", **chosen.to_dict(), "nxn": pool.nxn_record}
    paths = [pool.models[loc].path for loc in chosen.sources]
    return Chosen(list(chosen.sources), paths, [float(w) for w in chosen.weights], record, list(pool.warnings))


def as_selection(chosen: Chosen):
    """The similarity Selection of a similarity-driven choice (features and reports read it), else None."""
    from merginguriel.similarity import Selection

    rec = chosen.record
    if rec.get("origin") != "similarity":
        return None
    names = {f.name for f in dataclasses.fields(Selection)}
    return Selection(**{k: v for k, v in rec.items() if k in names})
