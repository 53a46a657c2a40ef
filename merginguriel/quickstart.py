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

STEPS = 7


def _step(i: int, text: str) -> float:
    print(f"\n[{i}/{STEPS}] {text}", flush=True)
    return time.time()


def _done(t0: float, text: str = "") -> None:
    print(f"      done in {time.time() - t0:.1f} s{(': ' + text) if text else ''}", flush=True)


def run_quickstart(
    sweep: str = "quickstart_sweep",
    locales: Optional[list[str]] = None,
    fit_config: str = "fit-embedded",
    report: Optional[str] = None,
    device: str = "auto",
    torch_threads: int = 0,
):
    """Run the whole flow for the sweep's backbone and data; returns the report folder and the verdicts.

    Args:
        sweep: the sweep of merge jobs to run (a shipped config name or a YAML path); its ``fixed`` settings give
            backbone, root and data.
        locales: locales to fine-tune (default: the sweep's targets plus every locale they may select from).
        fit_config: the fit recipe (a shipped name or a path) used for every fine-tune.
        report: the report folder (default: beside the sweep's results database).
        device: device for evaluations (``auto``: the GPU when there is one).
        torch_threads: CPU threads for torch (0: torch's default; the tiny embedded backbone is fastest on 1).
    """
    import yaml

    from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, embedded_home
    from merginguriel.configs import config_path
    from merginguriel.data.config import DataSource
    from merginguriel.evaluation.nxn import compute_nxn
    from merginguriel.experiments.runner import Sweep, run_sweep
    from merginguriel.io import read_manifest
    from merginguriel.locales import check_locales
    from merginguriel.models.base import ensure_base
    from merginguriel.models.finetune import finetune
    from merginguriel.report import build_report, rows_from_db
    from merginguriel.report.rows import features_from_db
    from merginguriel.similarity.output import write_similarity

    started = time.time()
    if torch_threads > 0:
        import torch

        torch.set_num_threads(torch_threads)
    path = config_path(sweep)
    plan = Sweep.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path))
    fixed = plan.fixed
    backbone, root = fixed.get("backbone", EMBEDDED), str(fixed.get("root", DEFAULT_ROOT))
    source = DataSource(**fixed.get("data", {}))
    data = source.at(root)
    targets = sorted(set(_targets(plan)))  # the points are checked only once the fine-tunes exist (K is checked against them)
    locales = check_locales(locales or sorted(set(targets) | set(fixed.get("selection", {}).get("candidates", []) or [])))
    missing = sorted(set(targets) - set(locales))
    if missing:
        raise InputError(f"the sweep's targets {missing} are not among --locales; add them (each target needs its own fine-tune)")

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

    t = _step(4, "NxN transfer matrix (validation for every choice, test for the final numbers)")
    for split in ("validation", "test"):
        compute_nxn(backbone=backbone, root=root, split=split, locales=locales, models=locales, data=source, device=device,
                    progress=True)
    _done(t, str(layout.home / "nxn"))

    t = _step(5, "URIEL similarity")
    sim, reused = write_similarity("uriel", locales, backbone, root)
    _done(t, f"{sim}{' (reused)' if reused else ''}")

    t = _step(6, f"sweep: {len(plan.points())} merge jobs (choose on validation -> merge -> judge on validation and test) into {plan.db}")
    run_sweep(plan)
    _done(t)

    t = _step(7, "report against every baseline")
    out = Path(report) if report else Path(plan.db).with_name("report")
    folder, found = build_report(rows_from_db(plan.db, plan.name), str(out), overwrite=True,
                                 features=features_from_db(plan.db, plan.name), sources={"db": plan.db})
    _done(t, str(folder))
    print(f"\nquickstart finished in {time.time() - started:.0f} s. Report: {folder / 'summary.md'}", flush=True)
    return folder, found


def _targets(plan) -> list[str]:
    """The sweep's targets, read from its settings without checking the points (the fine-tunes may not exist yet)."""
    grid_targets = plan.grid.get("target")
    if grid_targets:
        return list(grid_targets)
    if plan.fixed.get("target"):
        return [plan.fixed["target"]]
    raise InputError("the quick start sweep names no target; set `target` under fixed or grid")
