"""merginguriel against the real mergekit, both ways, method by method, on a tiny XLM-R family: `merge --mergekit`
(a mergekit YAML merged by both tools) and `merge --save_mergekit` (merginguriel's merge, exported, merged again by
mergekit-yaml from the exported file).

mergekit is not a dependency: install it in its own venv and point --mergekit-yaml at its `mergekit-yaml`:

    python3 -m venv /tmp/mk && /tmp/mk/bin/pip install torch==2.13.0 && /tmp/mk/bin/pip install mergekit==0.1.5
    python benchmarks/compare_mergekit.py --mergekit-yaml /tmp/mk/bin/mergekit-yaml --folder /tmp/mk-compare

For every config below, both tools merge the same folders (mergekit offline, --no-write-model-card) and the table
gives the largest absolute difference over every entry of every tensor, and the relative difference of the merged
model's L1 distance from the base (SLERP: from its first model), the figure DARE, whose masks are random in both,
should agree on. The export table gives the largest absolute difference over every tensor and checks it is at most
1e-6 (DARE exports at p = 0 only: its masks are random in both tools); the script exits 1 when one is not.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CONFIGS = {  # name -> (merge_method, per-model parameters for de-DE, fr-FR, sw-KE, top-level parameters)
    "linear": ("linear", [{"weight": 2.0}, {"weight": 1.0}, {"weight": 0.5}], {}),
    "linear normalize false": ("linear", [{"weight": 0.5}, {"weight": 0.3}, {"weight": 0.2}], {"normalize": False}),
    "task_arithmetic λ 0.7": ("task_arithmetic", [{"weight": 0.5}, {"weight": 0.8}, {"weight": 0.3}], {"lambda": 0.7}),
    "ties density 0.3": ("ties", [{"weight": 1.0}, {"weight": 0.5}, {"weight": 0.7}], {"density": 0.3}),
    "ties normalize false λ 0.9": ("ties", [{"weight": 1.0}, {"weight": 0.5}, {"weight": 0.7}],
                                   {"density": 0.5, "normalize": False, "lambda": 0.9}),
    "breadcrumbs 0.8 / 0.05": ("breadcrumbs", [{"weight": 0.4}, {"weight": 1.2}, {"weight": 0.6}],
                               {"density": 0.8, "gamma": 0.05}),
    "slerp t 0.3": ("slerp", None, {"t": 0.3}),
    "dare_ties density 1": ("dare_ties", [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}], {"density": 1.0}),
    "dare_linear density 1": ("dare_linear", [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}], {"density": 1.0}),
    "dare_ties density 0.5": ("dare_ties", [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}], {"density": 0.5}),
    "dare_linear density 0.5": ("dare_linear", [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}], {"density": 0.5}),
}
LOCALES = ["de-DE", "fr-FR", "sw-KE"]
EXPORTS = {  # name -> (merge.method, merge.params, selection.weights); every method merginguriel exports
    "linear": ("linear", {}, [2.0, 1.0, 0.5]),
    "linear normalise false": ("linear", {"normalise": False}, [0.5, 0.3, 0.2]),
    "average": ("average", {}, None),
    "task_arithmetic λ 0.7": ("task_arithmetic", {"lam": 0.7}, [0.5, 0.8, 0.3]),
    "task_arithmetic unweighted λ 0.3": ("task_arithmetic", {"lam": 0.3, "weighted": False}, None),
    "ties tensor density 0.3": ("ties", {"density": 0.3, "scope": "tensor"}, [1.0, 0.5, 0.7]),
    "ties tensor dis-sum λ 0.4": ("ties", {"density": 0.5, "scope": "tensor", "merge": "dis-sum", "lam": 0.4}, [1.0, 0.5, 0.7]),
    "breadcrumbs floor 0.8 / 0.05": ("breadcrumbs", {"density": 0.8, "gamma": 0.05, "rounding": "floor"}, [0.4, 1.2, 0.6]),
    "breadcrumbs_ties floor 0.7 / 0.1": ("breadcrumbs_ties", {"density": 0.7, "gamma": 0.1, "rounding": "floor"}, [0.4, 1.2, 0.6]),
    "dare_ties p 0": ("dare_ties", {"p": 0.0}, [0.2, 0.5, 0.3]),
    "dare_task_arithmetic p 0": ("dare_task_arithmetic", {"p": 0.0}, [0.2, 0.5, 0.3]),
    "dare_linear p 0": ("dare_linear", {"p": 0.0}, [0.2, 0.5, 0.3]),
    "task_vectors ties + sum λ 0.5": ("task_vectors", {"consensus": "ties", "combine": "sum", "lam": 0.5}, [0.2, 0.5, 0.3]),
    "slerp t 0.3": ("slerp", {"t": 0.3}, None),
}
TOLERANCE = 1e-6


def config(layout, name: str) -> dict:
    method, per_model, top = CONFIGS[name]
    if method == "slerp":
        return {"merge_method": "slerp", "base_model": str(layout.finetuned("de-DE")), "parameters": top, "dtype": "float32",
                "models": [{"model": str(layout.finetuned("de-DE"))}, {"model": str(layout.finetuned("fr-FR"))}]}
    cfg = {"merge_method": method, "parameters": top, "dtype": "float32",
           "models": [{"model": str(layout.finetuned(loc)), "parameters": p} for loc, p in zip(LOCALES, per_model)]}
    if method != "linear":
        cfg["base_model"] = str(layout.base)
    return cfg


def load(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def compare(layout, name: str, folder: Path, mergekit_yaml: str) -> tuple[float, float]:
    from merginguriel.cli.main import run

    slug = name.replace(" ", "_").replace("/", "")
    cfg_path = folder / f"{slug}.yml"
    cfg_path.write_text(yaml.safe_dump(config(layout, name), allow_unicode=True))
    ours, theirs = folder / f"{slug}-merginguriel", folder / f"{slug}-mergekit"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run([mergekit_yaml, str(cfg_path), str(theirs), "--no-write-model-card", "--quiet", "--random-seed", "0"],
                   check=True, env=env, capture_output=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the merge's own report: the table is the output
        assert run("merge", ["--mergekit", str(cfg_path), "--output", str(ours), "--overwrite", "true", "--root",
                             str(layout.root), "--backbone", layout.backbone, "--evaluate.splits", "[]", "--progress",
                             "false", "--merge.seed", "0"]) == 0
    a, b, base = load(ours), load(theirs), load(layout.base)
    missing = sorted(set(a) ^ set(b))
    assert not missing, f"tensor names differ: {missing[:5]}"
    diff = max(float((a[n].double() - b[n].double()).abs().max()) for n in a)
    anchor = load(layout.finetuned("de-DE")) if CONFIGS[name][0] == "slerp" else base
    l1 = [sum(float((m[n].double() - anchor[n].double()).abs().sum()) for n in m) for m in (a, b)]
    return diff, abs(l1[0] / l1[1] - 1)


def export(layout, name: str, folder: Path, mergekit_yaml: str) -> tuple[str, int, float]:
    """merginguriel's merge with --save_mergekit, then mergekit-yaml on the exported file: (mergekit method, tensors
    compared, largest absolute difference)."""
    from merginguriel.cli.main import run

    method, params, weights = EXPORTS[name]
    slug = "export-" + name.replace(" ", "_").replace("/", "")
    ours, theirs, cfg_path = folder / f"{slug}-merginguriel", folder / f"{slug}-mergekit", folder / f"{slug}.yml"
    sources = LOCALES[:2] if method == "slerp" else LOCALES
    args = ["--output", str(ours), "--overwrite", "true", "--root", str(layout.root), "--backbone", layout.backbone,
            "--evaluate.splits", "[]", "--progress", "false", "--selection.sources", *sources, "--merge.method", method,
            "--save_mergekit", str(cfg_path)]
    args += ["--selection.weights", *map(str, weights)] if weights else []
    for key, value in params.items():
        args += [f"--merge.params.{key}", str(value)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert run("merge", args) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run([mergekit_yaml, str(cfg_path), str(theirs), "--no-write-model-card", "--quiet", "--random-seed", "0"],
                   check=True, env=env, capture_output=True)
    a, b = load(ours), load(theirs)
    missing = sorted(set(a) ^ set(b))
    assert not missing, f"tensor names differ: {missing[:5]}"
    diff = max(float((a[n].double() - b[n].double()).abs().max()) for n in a)
    return yaml.safe_load(cfg_path.read_text())["merge_method"], len(a), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mergekit-yaml", required=True, help="the mergekit-yaml script of a venv with mergekit 0.1.5")
    parser.add_argument("--folder", default="/tmp/mk-compare", help="where the tiny family and the merges go")
    parser.add_argument("--directions", nargs="+", choices=["import", "export"], default=["import", "export"],
                        help="import: `merge --mergekit`; export: `merge --save_mergekit`")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from conftest import make_family  # the tests' tiny XLM-R family builder

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = make_family(folder / "ckpt", LOCALES)
    version = subprocess.run([str(Path(args.mergekit_yaml).with_name("python")), "-c",
                              "import importlib.metadata as m; print(m.version('mergekit'))"],
                             capture_output=True, text=True).stdout.strip()
    print(f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} CPUs; "
          f"torch {torch.__version__}; mergekit {version}; tiny XLM-R (hidden 32, 2 layers, vocab 205, 60 labels), float32")
    if "import" in args.directions:
        print("\n| config | max abs difference | relative difference of the L1 distance from the base |")
        print("|---|---|---|")
    for name in CONFIGS if "import" in args.directions else []:
        diff, l1 = compare(layout, name, folder, args.mergekit_yaml)
        print(f"| {name} | {diff:.2e} | {l1:.2e} |", flush=True)
    if "export" in args.directions:
        print(f"\n`merge --save_mergekit` then `mergekit-yaml` on the exported file (every tensor, at most {TOLERANCE:g}):\n")
        print("| merginguriel merge | exported as | tensors | max abs difference | within 1e-6 |")
        print("|---|---|---|---|---|")
    failed = []
    for name in EXPORTS if "export" in args.directions else []:
        method, count, diff = export(layout, name, folder, args.mergekit_yaml)
        ok = diff <= TOLERANCE
        failed += [] if ok else [name]
        print(f"| {name} | {method} | {count} | {diff:.2e} | {'yes' if ok else 'NO'} |", flush=True)
    if failed:
        print(f"\nabove {TOLERANCE:g}: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
