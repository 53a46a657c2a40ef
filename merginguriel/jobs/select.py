"""Which models take part in a merge job: explicit sources, or a similarity-driven selection.

Every choice is made on validation data. REAL similarity reads the backbone's VALIDATION NxN matrix by default; a
test-split matrix is refused unless ``selection.allow_test_nxn`` says so, and then the choice is recorded as a
warning. The selection record (what the manifest and the sweep row keep) names the NxN file, its split and its hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from merginguriel.errors import InputError
from merginguriel.jobs.spec import MergeJob

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


def validation_nxn(job: MergeJob) -> Optional[Path]:
    """The NxN matrix a job's choices read: ``selection.nxn`` or the backbone's validation matrix (None if absent)."""
    if job.selection.nxn:
        from merginguriel.similarity.real import nxn_file

        path = nxn_file(job.selection.nxn)
        if not path.is_file():
            raise InputError(f"selection.nxn {path} not found; run `merginguriel nxn --split validation` or fix the path")
        return path
    path = job.layout.nxn_matrix("validation")
    return path if path.is_file() else None


def checked_nxn(job: MergeJob) -> tuple[Path, dict, list[str]]:
    """The NxN matrix for REAL selection with its record; a test-split matrix is refused unless allowed."""
    from merginguriel.similarity.real import nxn_record

    path = validation_nxn(job)
    if path is None:
        raise InputError(
            f"REAL similarity reads the validation NxN matrix, expected at {job.layout.nxn_matrix('validation')}: run "
            f"`merginguriel nxn --backbone {job.backbone} --root {job.root} --split validation`, or set selection.nxn"
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


def _explicit(job: MergeJob) -> Chosen:
    from merginguriel.io import read_manifest
    from merginguriel.locales import LOCALES

    layout = job.layout
    locales, paths = [], []
    for token in job.selection.sources or []:
        if token in LOCALES:
            path = layout.finetuned(token)
            if not path.is_dir():
                raise InputError(
                    f"source {token}: no fine-tuned model at {path}; fine-tune it first (merginguriel fit) or check --root/--backbone"
                )
            locales.append(token)
        else:
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
                locales.append(read_manifest(path).get("locale"))
            except FileNotFoundError:
                locales.append(None)
        paths.append(path)
    given = job.selection.weights
    weights = [float(w) for w in given] if given is not None else [1.0] * len(paths)
    origin = "manual" if given is not None else "average"
    from merginguriel.models.hub import hub_id_of

    record = {"origin": origin, "sources": [loc or hub_id_of(p) or str(p) for loc, p in zip(locales, paths)], "weights": weights}
    return Chosen(locales, paths, weights, record)


def _by_similarity(job: MergeJob) -> Chosen:
    from merginguriel.similarity import select_for_target

    sel = job.selection
    layout = job.layout
    include = bool(sel.include_target)
    candidates = job.candidate_pool()
    if not candidates:
        raise InputError(f"no fine-tuned models under {layout.home / 'finetuned'} to select from; run merginguriel fit first")
    if include and job.target not in candidates:
        raise InputError(
            f"IncTar needs the target {job.target}'s own fine-tuned model, but {layout.finetuned(job.target)} has none; "
            "fine-tune it (merginguriel fit) or use --selection.include_target false (ExcTar)"
        )
    nxn, nxn_rec, warnings = (None, None, [])
    if sel.similarity == "real":
        nxn, nxn_rec, warnings = checked_nxn(job)
    compat = sel.weighting == "similarity_x_compatibility"
    chosen = select_for_target(
        job.target, sel.similarity, sel.num_sources, include, "scores" if compat else sel.weighting, candidates,
        nxn_csv=str(nxn) if nxn else None, feature_set=sel.feature_set, root=job.root, temperature=sel.temperature,
    )
    if compat:
        from merginguriel.compatibility.weighting import apply_compatibility, compatibility_for

        chosen = apply_compatibility(chosen, compatibility_for(
            list(chosen.sources), layout.base, {s: layout.finetuned(s) for s in chosen.sources}, sel.compatibility))
    record = {"origin": "similarity", **chosen.to_dict(), "nxn": nxn_rec}
    paths = []
    for loc in chosen.sources:
        path = layout.finetuned(loc)
        if not path.is_dir():
            raise InputError(f"selected source {loc} has no fine-tuned model at {path}; fine-tune it or restrict selection.candidates")
        paths.append(path)
    return Chosen(list(chosen.sources), paths, [float(w) for w in chosen.weights], record, warnings)


def choose_sources(job: MergeJob) -> Chosen:
    """The job's sources and weights (explicit, or selected by similarity), with the record of the choice."""
    chosen = _by_similarity(job) if job.selection.similarity else _explicit(job)
    if chosen.warnings:
        chosen.record = {**chosen.record, "warnings": list(chosen.warnings)}
    return chosen


def as_selection(chosen: Chosen):
    """The similarity Selection of a similarity-driven choice (features and reports read it), else None."""
    from merginguriel.similarity import Selection

    rec = chosen.record
    if rec.get("origin") != "similarity":
        return None
    names = {f.name for f in dataclasses.fields(Selection)}
    return Selection(**{k: v for k, v in rec.items() if k in names})
