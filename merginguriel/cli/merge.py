"""`merginguriel merge`: run one merge job (merginguriel.jobs): choose the sources, merge, judge.

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

import sys
from typing import Optional

from merginguriel.adamerging.options import AdaMergingOptions, TrainerOptions
from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED
from merginguriel.data.config import DataSource
from merginguriel.jobs.spec import EvaluateConfig, MethodConfig, SelectionConfig

def merge(
    target: Optional[str] = None,
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    data: DataSource = DataSource(),
    selection: SelectionConfig = SelectionConfig(),
    merge: MethodConfig = MethodConfig(),
    adamerging: Optional[AdaMergingOptions] = None,
    trainer: Optional[TrainerOptions] = None,
    evaluate: EvaluateConfig = EvaluateConfig(),
    device: str = "auto",
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
    list: bool = False,
) -> int:
    """Merge fine-tuned models for a target and judge the result (`--list` shows every method and its parameters).

    Args:
        target: the target locale (output under merged/<target>/; needed by a similarity selection and evaluation).
        backbone: the backbone whose fine-tunes are merged (embedded, a hub id or a folder).
        root: the checkpoints root.
        data: the MASSIVE data source (evaluation, data-dependent methods).
        selection: which models take part (explicit sources or a similarity selection).
        merge: how they are merged (method, parameters, excludes, seed, dtype).
        adamerging: AdaMerging options (merge.method adamerging).
        trainer: Lightning Trainer options of AdaMerging (e.g. --trainer.devices 4 --trainer.strategy ddp).
        evaluate: where the result is judged (splits; an empty list skips the evaluation).
        device: auto (cuda when present, else cpu), cpu, cuda, cuda:N.
        run: the run name under merged/<target>/ (default: the method plus a hash of the job).
        output: write here instead of merged/<target>/<run>.
        overwrite: merge again over an output made from other inputs (an identical finished one is reused).
        dry_run: print the plan (sources and weights, method, output, expected peak memory) and write nothing.
        memory_mb: working-memory budget of the streaming merge.
        shard_mb: weights larger than this are written as several safetensors shards plus
            ``model.safetensors.index.json`` (the layout transformers loads).
        progress: show a progress bar over tensors.
        mergekit: a mergekit YAML to merge (linear, task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, slerp),
            translated into this job's selection and method; what cannot be translated is refused.
        print_recipe: print the minimal recipe (only the settings that differ from the defaults) and exit.
        save_recipe: also write the minimal recipe to this YAML file; `merginguriel merge -c FILE` reproduces the merge.
        list: print the methods with their parameters and defaults, and exit.
    """
    if list:
        from merginguriel.merging.registry import format_methods

        print(format_methods(), end="")
        print("similarity: linear with the selection's similarity weights (needs selection.similarity)")
        print("average: linear with equal weights 1/K")
        print("adamerging: learns merge coefficients on the target's unlabelled validation utterances "
              "(options: --adamerging.*, --trainer.*)")
        return 0
    from merginguriel.jobs import MergeJob, plan_job, run_job
    from merginguriel.jobs.run import estimate_peak_mb, evaluation_line

    job = MergeJob(target=target, backbone=backbone, root=root, data=data, selection=selection, merge=merge,
                   adamerging=adamerging, trainer=trainer, evaluate=evaluate, device=device)
    if mergekit:
        from merginguriel.jobs.mergekit import import_mergekit

        job, notes = import_mergekit(mergekit, job)
        for note in notes:  # kept off stdout when stdout is the recipe
            print(f"mergekit: {note}", file=sys.stderr if print_recipe else sys.stdout)
    recipe = None
    if print_recipe or save_recipe:
        job.check()  # method parameters under their canonical names, as the job key has them
        recipe = _recipe(job, {"run": run, "output": output, "memory_mb": memory_mb, "shard_mb": shard_mb,
                               "progress": progress})
        if print_recipe:
            print(recipe, end="")
            return 0
    plan = plan_job(job, output, run)
    if save_recipe:  # written once the plan holds: bad input leaves no recipe behind
        from merginguriel.io import atomic_write_text

        atomic_write_text(save_recipe, recipe)
        print(f"recipe: {save_recipe} (`merginguriel merge -c {save_recipe}` reproduces this merge)")
    print(plan.describe())
    if dry_run:
        print(f"  expected peak memory: about {estimate_peak_mb(plan, memory_mb):.0f} MB (dry run: nothing written)")
        return 0
    result = run_job(job, output, run, overwrite=overwrite, progress=progress, memory_mb=memory_mb, shard_mb=shard_mb,
                     plan=plan)
    print(f"merged model: {result.output}{' (reused: same job, same inputs)' if result.reused else ''}")
    for record in result.evaluation.values():
        print(evaluation_line(job, record))
    return 0


def _recipe(job, run_options: dict) -> str:
    """The minimal recipe: the job's settings that differ from the defaults, plus the run options given (overwrite,
    dry_run and the recipe options themselves act on one invocation and are left out)."""
    import inspect

    from merginguriel.jobs.recipe import job_recipe, recipe_yaml

    defaults = inspect.signature(merge).parameters
    recipe = job_recipe(job)
    recipe.update({k: v for k, v in run_options.items() if v != defaults[k].default})
    return recipe_yaml(recipe, f"merginguriel merge -c <this file> reproduces merge job {job.key()[:12]}")
