"""A method parameter chosen on validation inside one job: ``merge.params: {lam: [0.3, 0.5, 0.7, 1.0]}`` (several
lists: their product) makes the job merge each candidate setting, score it on the target's VALIDATION split, keep the
best (ties: the earlier in the order given) and record the choice. Test data is never read here: the judgement of the
kept merge (merginguriel.jobs.judge) comes after, on the job's splits, as for any job.

Each candidate is merged into a hidden folder beside the output (named as the atomic writes name their temporaries,
so a killed run's are removed by the next run); only the best so far is kept on disk. The manifest of the kept merge
records ``choice``: the split, the number of candidates, each candidate's values, validation accuracy and weights'
hash, and the chosen values. The report counts every candidate as a comparison.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
from pathlib import Path
from typing import Any

CHOICE_SPLIT = "validation"


def _candidate_folder(out: Path, i: int) -> Path:
    return out.parent / f".{out.name}.tmp-{socket.gethostname()}-{os.getpid()}-candidate{i}"


def merge_best_on_validation(plan: Any, job_record: dict, options: Any, context: Any) -> dict:
    """Merge every candidate of ``plan`` (a JobPlan whose job lists parameter values), keep the one with the highest
    validation accuracy as the plan's output, write the choice into its manifest and return the choice."""
    from merginguriel.evaluation.outputs import checkpoint_outputs
    from merginguriel.io import read_manifest, write_json_atomic
    from merginguriel.merging import run_plan
    from merginguriel.models.card import write_card

    checked, out = plan.checked, plan.output
    tried: list[dict] = []
    best: tuple[float, Path] | None = None
    try:
        for i, (option, merge) in enumerate(zip(checked.options, plan.options)):
            folder = _candidate_folder(out, i)
            run_plan(dataclasses.replace(merge, output=folder, job=job_record), dataclasses.replace(options, overwrite=True),
                     context)
            scored = checkpoint_outputs(folder, checked.target, CHOICE_SPLIT, checked.data, checked.evaluate.batch_size,
                                        checked.job.device, cache=False)
            accuracy = float(scored.correct.float().mean())
            tried.append({"values": option.values, "validation_accuracy": accuracy, "hash": read_manifest(folder).get("hash")})
            if best is None or accuracy > best[0]:
                if best is not None:
                    shutil.rmtree(best[1])
                best = (accuracy, folder)
            else:
                shutil.rmtree(folder)
        if out.exists():
            shutil.rmtree(out)
        os.replace(best[1], out)
    finally:
        for i in range(len(plan.options)):
            shutil.rmtree(_candidate_folder(out, i), ignore_errors=True)
    chosen = next(t for t in tried if t["validation_accuracy"] == best[0])
    choice = {"split": CHOICE_SPLIT, "count": len(tried), "parameters": list(checked.options[0].values),
              "chosen": chosen["values"], "candidates": tried}
    manifest = read_manifest(out)
    manifest["choice"] = choice
    write_json_atomic(out / "manifest.json", manifest)
    write_card(out, manifest)
    return choice
