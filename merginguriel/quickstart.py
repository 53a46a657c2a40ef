"""The quick start: the whole flow end to end, each step through the library functions the commands use -- data and
backbone, shared base, fine-tunes, NxN, similarity, a sweep of merge jobs, the report with one verdict per target.

Every step reuses what an earlier run finished (fine-tunes, NxN cells, the similarity matrix, sweep rows), so a rerun
is quick and an interrupted run resumes. On the embedded default it needs no network and runs in minutes on two CPU
cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from merginguriel.errors import InputError

STEPS = 8


def _step(i: int, text: str) -> float:
    print(f"\n[{i}/{STEPS}] {text}", flush=True)
    return time.time()


def _done(t0: float, text: str = "") -> None:
    print(f"      done in {time.time() - t0:.1f} s{(': ' + text) if text else ''}", flush=True)


def run_quickstart(
    sweep: str = "quickstart_sweep",
    locales: Optional[list[str]] = None,
    targets_per_end: int = 1,
    fit_config: str = "fit-embedded",
    report: Optional[str] = None,
    device: str = "auto",
    torch_threads: int = 0,
):
    """Run the whole flow for the sweep's backbone and data; returns the report folder and the verdicts.

    The targets are chosen by a rule fixed in advance that reads validation data only
    (merginguriel.experiments.target_rule): the ``targets_per_end`` fine-tuned locales with the lowest validation
    best-source zero-shot/self ratio and the ``targets_per_end`` with the highest. The rule is printed with every
    value it read; each target's verdict is printed as soon as its merges are judged.

    Args:
        sweep: the sweep of merge jobs run for each target (a shipped config name or a YAML path); its ``fixed``
            settings give backbone, root and data. It names no target: the rule picks them.
        locales: the locales to fine-tune; they are the targets the rule chooses from and the candidate sources
            (default: the sweep's ``selection.candidates``).
        targets_per_end: how many targets the rule takes at each end (lowest and highest ratio).
        fit_config: the fit recipe (a shipped name or a path) used for every fine-tune.
        report: the report folder (default: beside the sweep's results database).
        device: device for evaluations (``auto``: the GPU when there is one).
        torch_threads: CPU threads for torch (0: torch's default; the tiny embedded backbone is fastest on 1).
    """
    from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, embedded_home
    from merginguriel.configs import config_path
    from merginguriel.data.config import DataSource
    from merginguriel.evaluation.nxn import compute_nxn
    from merginguriel.experiments.runner import Sweep, run_sweep
    from merginguriel.experiments.target_rule import RULE, apply_rule, check_per_end
    from merginguriel.io import read_manifest
    from merginguriel.io.jsonfile import read_yaml_mapping
    from merginguriel.locales import check_locales
    from merginguriel.models.base import ensure_base
    from merginguriel.models.finetune import finetune
    from merginguriel.report import build_report, rows_from_db
    from merginguriel.report.rows import features_from_db
    from merginguriel.report.verdict import verdict
    from merginguriel.similarity import read_nxn
    from merginguriel.similarity.output import write_similarity

    started = time.time()
    check_per_end(targets_per_end)
    if torch_threads > 0:
        import torch

        torch.set_num_threads(torch_threads)
    path = config_path(sweep)
    spec = read_yaml_mapping(path, "sweep config", "fixed, grid, ...")
    plan = Sweep.from_dict(spec, str(path))
    fixed = plan.fixed
    if "target" in plan.grid or fixed.get("target"):
        raise InputError(f"{path} names targets; the quick start picks its targets by its rule ({RULE}): remove "
                         "`target` from the sweep (or run that sweep with `merginguriel experiment`)")
    backbone, root = fixed.get("backbone", EMBEDDED), str(fixed.get("root", DEFAULT_ROOT))
    source = DataSource(**fixed.get("data", {}))
    data = source.at(root)
    selection = fixed.setdefault("selection", {})
    locales = check_locales(list(locales or selection.get("candidates") or []))
    if len(locales) < 2:
        raise InputError(f"the quick start needs at least 2 locales to fine-tune (got {locales or 'none'}): pass "
                         "--locales [de-DE, fr-FR, ...] or set selection.candidates in the sweep")
    selection.setdefault("candidates", list(locales))  # the sources come from the quick start's fine-tunes only

    grid = dict(plan.grid)

    def sweep_for(targets: list[str]) -> Sweep:
        return Sweep.from_dict({**spec, "fixed": fixed, "grid": {"target": list(targets), **grid}}, str(path))

    sweep_for(locales[:1]).points()  # the sweep's settings are checked before anything runs

    t = _step(1, f"data ({data.source}) and backbone ({backbone})")
    if backbone == EMBEDDED:
        from merginguriel.embedded.build import ensure_embedded_backbone

        ensure_embedded_backbone(embedded_home(root))
    _done(t)

    t = _step(2, "shared base (pretrained encoder + seeded 60-intent head)")
    base = ensure_base(backbone, root)
    _done(t, str(base))

    t = _step(3, f"fine-tune {len(locales)} locales: {' '.join(locales)}")
    from merginguriel.checkpoints import Layout, is_finished
    from merginguriel.evaluation.evaluate import quiet_lightning

    layout = Layout.for_backbone(backbone, root)
    for i, loc in enumerate(locales, 1):
        folder = layout.finetuned(loc)
        t_loc = time.time()
        reused = is_finished(folder)
        if not reused:
            with quiet_lightning():
                finetune(fit_config, {
                    "model": {"backbone": backbone, "root": root},
                    "data": {"locales": loc, "source": data.source, "data_path": data.data_path, "max_length": data.max_length},
                    "trainer": {"enable_progress_bar": False, "enable_model_summary": False},
                })
        acc = read_manifest(folder)["metrics"]["best_val_accuracy"]
        print(f"      {i}/{len(locales)} {loc}: validation accuracy {acc:.3f} ({'reused' if reused else f'{time.time() - t_loc:.0f} s'})",
              flush=True)
    _done(t)

    def nxn(split: str) -> Path:
        return compute_nxn(backbone=backbone, root=root, split=split, locales=locales, models=locales, data=source,
                           device=device, progress=True)

    t = _step(4, "NxN transfer matrix on validation (every choice reads it)")
    validation = nxn("validation")
    _done(t, str(validation))

    t = _step(5, f"targets, by the rule fixed in advance: {RULE}")
    chosen = apply_rule(read_nxn(validation), locales, targets_per_end)
    print(chosen.text(), flush=True)
    _done(t, f"targets {', '.join(chosen.targets)} (read: the validation NxN only)")
    plan = sweep_for(chosen.targets)
    points = plan.points()  # every point checked (K against the fine-tunes) before any merge

    t = _step(6, "NxN transfer matrix on test (the final numbers) and URIEL similarity")
    nxn("test")
    sim, reused = write_similarity("uriel", locales, backbone, root)
    _done(t, f"{sim}{' (reused)' if reused else ''}")

    t = _step(7, f"sweep: {len(points)} merge jobs (choose on validation -> merge -> judge on validation and test) into {plan.db}")
    for target in chosen.targets:
        run_sweep(sweep_for([target]))
        rows = rows_from_db(plan.db, plan.name)
        print(f"      verdict: {verdict(target, rows[rows['target'] == target]).line}", flush=True)
    _done(t)

    t = _step(8, "report against every baseline")
    out = Path(report) if report else Path(plan.db).with_name("report")
    rows = rows_from_db(plan.db, plan.name)
    features = features_from_db(plan.db, plan.name)
    keep = set(chosen.targets)  # rows of targets an earlier run chose (another world, other locales) stay out
    folder, found = build_report(rows[rows["target"].isin(keep)].reset_index(drop=True), str(out), overwrite=True,
                                 features=features[features["target"].isin(keep)] if not features.empty else features,
                                 sources={"db": plan.db, "target_rule": RULE, "targets": chosen.targets})
    _done(t, str(folder))
    print(f"\nquickstart finished in {time.time() - started:.0f} s. Report: {folder / 'summary.md'}", flush=True)
    return folder, found
