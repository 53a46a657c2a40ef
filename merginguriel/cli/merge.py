"""`merginguriel merge`: run one merge job (merginguriel.jobs): choose the sources, merge, judge. Its options are the
MergeJob itself (``--target``, ``--selection.*``, ``--merge.*``, ...) and how to run it.

```
merginguriel merge --list
merginguriel merge --target sw-KE --selection.sources de-DE fr-FR --selection.weights 0.6 0.4 --merge.method ties \\
    --merge.params.density 0.2
merginguriel merge --target sw-KE --selection.similarity real --selection.num_sources 5 --merge.method ties
merginguriel merge -c merge.yaml --merge.params.lam 0.5 --dry-run
merginguriel merge --target sw-KE --selection.sources de-DE fr-FR --merge.method ties --save_recipe ties.yaml
merginguriel merge -c ties.yaml                      # the same job: same key, same output (reused)
merginguriel merge --mergekit mergekit.yml --output merged/  # a mergekit config, for the methods both tools have
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

from merginguriel.cli.parse import FLAT
from merginguriel.errors import InputError
from merginguriel.jobs.spec import MergeJob


@dataclass
class Merged:
    """What `merge` did, for its printer: the method list, the notes of a mergekit import, the recipe (printed, or
    saved), the plan, the expected peak memory of a dry run, the job's result."""

    listing: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    recipe: Optional[str] = None
    recipe_file: Optional[str] = None
    mergekit_file: Optional[str] = None
    plan: Any = None
    peak_mb: Optional[float] = None
    result: Any = None


def merge(
    job: Annotated[MergeJob, FLAT],
    run: Optional[str] = None,
    output: Optional[str] = None,
    overwrite: bool = False,
    dry_run: bool = False,
    memory_mb: float = 256.0,
    shard_mb: float = 2048.0,
    progress: bool = True,
    mergekit: Optional[str] = None,
    print_recipe: bool = False,
    save_recipe: Optional[str] = None,
    save_mergekit: Optional[str] = None,
    list: bool = False,
) -> Merged:
    """Merge fine-tuned models for a target and judge the result (`--list` shows every method and its parameters).

    Args:
        job: the merge job (its fields are this command's options).
        run: the run name under merged/<target>/ (default: the method plus a hash of the job).
        output: write here instead of merged/<target>/<run>.
        overwrite: merge again over an output made from other inputs (an identical finished one is reused).
        dry_run: print the plan (sources and weights, method, output, expected peak memory) and write nothing.
        memory_mb: working-memory budget of the streaming merge.
        shard_mb: weights larger than this are written as several safetensors shards plus
            ``model.safetensors.index.json`` (the layout transformers loads).
        progress: show a progress bar over tensors.
        mergekit: a mergekit YAML to merge (linear, task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs,
            breadcrumbs_ties, slerp), translated into this job's selection and method; what cannot be translated is
            refused.
        print_recipe: print the minimal recipe (only the settings that differ from the defaults) and exit.
        save_recipe: also write the minimal recipe to this YAML file; `merginguriel merge -c FILE` reproduces the merge.
        save_mergekit: also write the merge as a mergekit YAML to this file (`mergekit-yaml FILE out/` gives the same
            tensors), for the methods both tools have; anything mergekit cannot express is refused before a file is
            written.
        list: print the methods with their parameters and defaults, and exit.
    """
    if list:
        from merginguriel.merging.registry import format_methods

        return Merged(listing=format_methods())
    from merginguriel.jobs.run import estimate_peak_mb, plan_job, run_job

    done = Merged()
    imported = None
    if mergekit:
        from merginguriel.jobs.mergekit import import_mergekit

        job, imported = import_mergekit(mergekit, job)
        done.notes = imported["notes"]
    checked = job.check()
    if save_mergekit:
        from merginguriel.merging.mergekit_export import check_exportable

        check_exportable(checked.method)
        if len(checked.options) > 1:  # which setting wins is known only after the validation run
            raise InputError(f"--save_mergekit: merge.params lists {len(checked.options)} settings to choose from on "
                             "validation, and mergekit takes one; run the job, then export its chosen setting "
                             "(recorded under choice in the manifest) as plain values")
    if print_recipe or save_recipe:
        done.recipe = _recipe(checked, {"run": run, "output": output, "memory_mb": memory_mb, "shard_mb": shard_mb,
                                        "progress": progress})
        if print_recipe:
            return done
    done.plan = plan_job(checked, output, run)
    if imported:
        done.plan = dataclasses.replace(done.plan, merge=dataclasses.replace(done.plan.merge, imported=imported))
    exported = None
    if save_mergekit:
        from merginguriel.merging.mergekit_export import config_yaml, export_config

        config, notes = export_config(done.plan.merge)
        exported = config_yaml(config, notes)
        done.notes += notes
    from merginguriel.io import atomic_write_text

    if save_recipe:  # written once the plan holds: bad input leaves no recipe behind
        atomic_write_text(save_recipe, done.recipe)
        done.recipe_file = save_recipe
    if exported:
        atomic_write_text(save_mergekit, exported)
        done.mergekit_file = save_mergekit
    if dry_run:
        done.peak_mb = estimate_peak_mb(done.plan, memory_mb)
        return done
    done.result = run_job(done.plan, overwrite=overwrite, progress=progress, memory_mb=memory_mb, shard_mb=shard_mb)
    return done


def _recipe(checked, run_options: dict) -> str:
    """The minimal recipe: the job's settings that differ from the defaults, plus the run options given (overwrite,
    dry_run and the recipe options themselves act on one invocation and are left out)."""
    import inspect

    from merginguriel.jobs.recipe import job_recipe, recipe_yaml

    defaults = inspect.signature(merge).parameters
    recipe = job_recipe(checked)
    recipe.update({k: v for k, v in run_options.items() if v != defaults[k].default})
    return recipe_yaml(recipe, f"merginguriel merge -c <this file> reproduces merge job {checked.key()[:12]}")
