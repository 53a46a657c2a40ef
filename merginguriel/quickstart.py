"""`merginguriel quickstart`: the whole flow end to end, one step after another, each through the same code the
subcommands run — data and backbone, shared base, fine-tunes, NxN, similarity, a sweep of merges, the report.

Every step reuses what an earlier run finished (fine-tunes, NxN cells, sweep rows), so a rerun is quick and an
interrupted run resumes. On the embedded default it needs no network and runs in minutes on two CPU cores.
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


def quickstart(
    sweep: str = "configs/quickstart_sweep.yaml",
    locales: Optional[list[str]] = None,
    fit_config: str = "configs/fit-embedded.yaml",
    report: Optional[str] = None,
    device: str = "auto",
    torch_threads: int = 0,
) -> Path:
    """Run the whole flow for the sweep's backbone and data, and print the comparison table.

    Args:
        sweep: the sweep YAML of merges to run (its ``fixed`` settings give backbone, root and data).
        locales: locales to fine-tune (default: the sweep's targets plus every locale they may select from).
        fit_config: the `merginguriel fit` config used for every fine-tune.
        report: the report folder (default: beside the sweep's results database).
        device: device for evaluations (``auto``: the GPU when there is one).
        torch_threads: CPU threads for torch (0: torch's default; the tiny embedded backbone is fastest on 1).
    """
    import yaml

    from merginguriel.data.config import DataConfig
    from merginguriel.experiments.runner import Sweep
    from merginguriel.locales import check_locales
    from merginguriel.checkpoints import Layout
    from merginguriel.models.base import EMBEDDED, ensure_base

    started = time.time()
    if torch_threads > 0:
        import torch

        torch.set_num_threads(torch_threads)
    spec = yaml.safe_load(Path(sweep).read_text(encoding="utf-8"))
    plan = Sweep(**{k: v for k, v in spec.items() if k in Sweep.__dataclass_fields__})
    fixed = plan.fixed
    backbone, root = fixed.get("backbone", EMBEDDED), fixed.get("root", "checkpoints")
    data = DataConfig(**{"root": root, **fixed.get("data", {})})
    targets = sorted({p["target"] for p in plan.points()})
    locales = check_locales(locales or sorted(set(targets) | set(fixed.get("selection", {}).get("candidates", []) or [])))
    missing = sorted(set(targets) - set(locales))
    if missing:
        raise InputError(f"the sweep's targets {missing} are not among --locales; add them (each target needs its own fine-tune)")
    layout = Layout.for_backbone(backbone, root)

    t = _step(1, f"data ({data.source}) and backbone ({backbone})")
    if backbone == EMBEDDED:
        from merginguriel.embedded.build import ensure_embedded_backbone, ensure_embedded_data

        ensure_embedded_data(Path(root) / "embedded")
        ensure_embedded_backbone(Path(root) / "embedded")
    _done(t)

    t = _step(2, "shared base (pretrained encoder + seeded 60-intent head)")
    base = ensure_base(backbone, root)
    _done(t, str(base))

    t = _step(3, f"fine-tune {len(locales)} locales: {' '.join(locales)}")
    from merginguriel.cli.lightning import main as lightning_main
    from merginguriel.evaluation.evaluate import quiet_lightning
    from merginguriel.io import read_manifest

    for i, loc in enumerate(locales, 1):
        folder = layout.finetuned(loc)
        if not (folder / "manifest.json").is_file():
            t_loc = time.time()
            with quiet_lightning():
                lightning_main(["fit", "--config", fit_config, "--data.locales", loc, "--model.backbone", backbone,
                                "--model.root", str(root), "--data.source", data.source,
                                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
            took = f"{time.time() - t_loc:.0f} s"
        else:
            took = "reused"
        acc = read_manifest(folder)["metrics"]["best_val_accuracy"]
        print(f"      {i}/{len(locales)} {loc}: validation accuracy {acc:.3f} ({took})", flush=True)
    _done(t)

    t = _step(4, "NxN transfer matrix (validation for REAL similarity, test for the baselines)")
    from merginguriel.evaluation.nxn import compute_nxn

    nxn = {}
    for split in ("validation", "test"):
        nxn[split] = compute_nxn(backbone=backbone, root=str(root), split=split, locales=locales, models=locales,
                                 data=data, device=device, progress=True)
    _done(t, ", ".join(str(p) for p in nxn.values()))

    t = _step(5, "URIEL similarity")
    from merginguriel.similarity.cli import main as similarity_main

    sim_dir = layout.home / "similarity"
    similarity_main(["--kind", "uriel", "--locales", f"[{', '.join(locales)}]", "--output", str(sim_dir)])
    _done(t, str(sim_dir))

    t = _step(6, f"sweep: {len(plan.points())} merges (select -> merge -> test) into {plan.db}")
    from merginguriel.experiments.cli import main as experiment_main

    experiment_main(["--config", sweep])
    _done(t)

    t = _step(7, "report against every baseline")
    from merginguriel.report.cli import main as report_main

    out = Path(report) if report else Path(plan.db).with_name("report")
    report_main(["--db", plan.db, "--nxn", str(nxn["test"]), "--output", str(out), "--overwrite", "true"])
    _done(t, str(out))
    print(f"\nquickstart finished in {time.time() - started:.0f} s. Report: {out}", flush=True)
    return out


def cli(argv: list[str]) -> int:
    from merginguriel.cli.function import parse_function_args

    quickstart(**parse_function_args(quickstart, argv, "merginguriel quickstart"))
    return 0
