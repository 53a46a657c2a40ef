"""A mergekit YAML as a merge job (``merginguriel merge --mergekit mergekit.yml``): the translation
(merginguriel.merging.mergekit) applied onto the job the command line gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from merginguriel.errors import InputError
from merginguriel.jobs.spec import MergeJob, job_from_dict, set_dotted
from merginguriel.merging.mergekit import Imported, read_mergekit, translate


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def apply_import(job: MergeJob, imported: Imported) -> MergeJob:
    """``job`` with the imported settings; a setting also given differently on the command line is refused."""
    given, default = job.to_dict(), MergeJob().to_dict()
    settings = dict(imported.settings)
    if "root" in settings and job.layout.base.resolve() == Path(settings["backbone"]):
        del settings["backbone"], settings["root"]  # --backbone/--root name the same shared base as base_model
    for dotted, value in settings.items():
        mine = _get(given, dotted)
        if mine != _get(default, dotted) and mine != value:
            raise InputError(f"{dotted} is set by the mergekit config ({value!r}) and on the command line ({mine!r}); "
                             "drop the command-line option")
        set_dotted(given, dotted, value)
    if given.get("trainer") is None:
        given.pop("trainer", None)
    return job_from_dict(given)


CONFIG_FILE = "mergekit_config.yml"  # where mergekit itself keeps the config in its output folder


def import_mergekit(path: str | Path, job: MergeJob) -> tuple[MergeJob, dict]:
    """``job`` with the settings of the mergekit YAML at ``path``, and the record of the import: the config's text
    (copied into the merged folder as ``mergekit_config.yml``), its hash and path, the keys ignored and the notes on
    what differs from mergekit (merginguriel.merging.manifest records it)."""
    import hashlib

    imported = translate(read_mergekit(path))
    text = Path(path).read_text(encoding="utf-8")
    record = {"file": CONFIG_FILE, "text": text, "from": str(Path(path).resolve()),
              "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "ignored": imported.ignored,
              "notes": imported.notes}
    return apply_import(job, imported), record
