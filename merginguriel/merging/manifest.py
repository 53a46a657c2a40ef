"""The one writer of a merged model's manifest, for the streaming engine and for AdaMerging alike.

Every merged folder records the same fields, so the report, the sweep and a reader of the folder never need to know
which path made it: ``method`` and ``params``, the shared ``base`` and the ``sources`` (locale, path, hash, weight,
origin) with the normalised weights, the ``target``, IncTar/ExcTar, the ``selection`` (how the sources were chosen:
similarity, scores, NxN file/split/hash), ``exclude``, ``statistics``, ``seed``, ``dtype``, ``device``, ``timings``
and ``memory`` (the job's own peak, see merginguriel.memory), plus the ``job`` that asked for it when a merge job did,
the ``hash`` of the merged weights (merges with equal hashes are one model: the report shows and counts it once), and
the ``mergekit`` config it was imported from (the file, copied into the folder as mergekit does, its hash, where it
came from, the keys ignored and the notes on what differs).
Method-specific records (AdaMerging's coefficients and adaptation log) go under ``extra`` keys. The model card
(README.md) is written from the manifest right after it, inside the caller's atomic write.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from merginguriel.io import checkpoint_hash, write_manifest

KIND = "merged"


def write_merged_manifest(
    folder: str | os.PathLike,
    *,
    method: str,
    params: dict,
    base: dict,
    sources: list[dict],
    weights_normalised: list[float],
    seed: Optional[int],
    target: Optional[str],
    include_target: Optional[bool],
    selection: Optional[dict],
    exclude: dict,
    statistics: dict,
    dtype: str,
    device: str,
    timings: dict,
    memory: dict,
    job: Optional[dict] = None,
    imported: Optional[dict] = None,
    **extra: Any,
) -> None:
    if imported:
        from merginguriel.io import atomic_write_text

        atomic_write_text(os.path.join(folder, imported["file"]), imported["text"])
        extra["mergekit"] = {k: v for k, v in imported.items() if k != "text"}
    write_manifest(
        folder,
        KIND,
        method=method,
        params=params,
        base=base,
        sources=sources,
        weights_normalised=[float(w) for w in weights_normalised],
        seed=seed,
        target=target,
        include_target=include_target,
        selection=selection,
        exclude=exclude,
        statistics=statistics,
        dtype=dtype,
        device=device,
        timings=timings,
        memory=memory,
        job=job,
        hash=checkpoint_hash(folder),
        **extra,
    )
    from merginguriel.models.card import write_card

    write_card(folder)
