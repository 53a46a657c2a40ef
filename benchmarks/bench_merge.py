"""Benchmark of the streaming merge engine against mergekit 0.1.5 on XLM-R-base-sized checkpoints.

Generates a shared base and 10 "fine-tuned" checkpoints with random weights (vocab 250,002, hidden 768, 12 layers,
60 labels: 278 M parameters, 1.11 GB each) under --folder, then runs every merge in its own subprocess, which reports
its own peak memory from inside (benchmarks/peak.py: VmHWM through merginguriel.memory, the probe the merge manifests
use): every merginguriel method at K=5 and K=10, and mergekit's linear and TIES merges of the same K=5 files side by
side, like for like: mergekit trims TIES per tensor keeping floor(density * n), so the headline TIES row compares it
with merginguriel's per-tensor TIES with mergekit's rounding; the global (paper) TIES has its own row. Prints Markdown
tables (paste them into benchmarks/results/merge.md). Run it alone, under the shared lock:

    flock /tmp/merginguriel-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_merge.py --folder /tmp/mu-bench

mergekit lives in its own venv: python3 -m venv /tmp/venv-mergekit && /tmp/venv-mergekit/bin/pip install torch==2.13.0 mergekit==0.1.5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

METHODS = [
    ("linear", {}),
    ("task_arithmetic", {}),
    ("ties", {"density": 0.2, "scope": "global"}),
    ("ties", {"density": 0.2, "scope": "tensor", "rounding": "floor"}),
    ("dare_linear", {"p": 0.9}),
    ("dare_task_arithmetic", {"p": 0.9}),
    ("dare_ties", {"p": 0.9}),
    ("breadcrumbs", {}),
    ("directional_consensus", {}),
    ("directional_consensus", {"variant": "research_log"}),
    ("neuromerging", {}),
    ("neuromerging", {"variant": "research_log"}),
    ("slerp", {}),
]


def xlmr_config():
    from transformers import XLMRobertaConfig

    from merginguriel.locales import ID2LABEL, LABEL2ID, NUM_INTENTS

    return XLMRobertaConfig(
        vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, num_labels=NUM_INTENTS, id2label=dict(ID2LABEL), label2id=dict(LABEL2ID),
        architectures=["XLMRobertaForSequenceClassification"],
    )


def tensor_shapes() -> dict[str, tuple[int, ...]]:
    from transformers import XLMRobertaForSequenceClassification

    with torch.device("meta"):
        model = XLMRobertaForSequenceClassification(xlmr_config())
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def write_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], **manifest) -> None:
    from safetensors.torch import save_file

    from merginguriel.io import checkpoint_hash, weights_stat, write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    xlmr_config().save_pretrained(folder)
    # the hash with the weights' size and mtime, as merginguriel writes it: a merge then trusts it without re-hashing
    write_manifest(folder, manifest.pop("kind"), hash=checkpoint_hash(folder), weights_stat=weights_stat(folder), **manifest)


def generate(folder: Path, k: int) -> None:
    """A base (N(0, 0.02)) and k sources (base + N(0, 0.002)), each written once; existing ones are kept."""
    shapes = tensor_shapes()
    base_dir = folder / BACKBONE / "base"  # the shared base where merginguriel's layout looks for it
    gen = torch.Generator().manual_seed(0)
    if not (base_dir / "manifest.json").is_file():
        print(f"generating {base_dir}", flush=True)
        base = {n: torch.randn(s, generator=gen) * 0.02 for n, s in shapes.items()}
        write_checkpoint(base_dir, base, kind="base", seed=0)
        del base
    from merginguriel.io import read_manifest

    base_hash = read_manifest(base_dir)["hash"]
    for i in range(k):
        d = folder / f"src{i}"
        if (d / "manifest.json").is_file():
            continue
        print(f"generating {d}", flush=True)
        from safetensors import safe_open

        g = torch.Generator().manual_seed(100 + i)
        tensors = {}
        with safe_open(str(base_dir / "model.safetensors"), "pt") as fh:
            for n, s in shapes.items():
                tensors[n] = fh.get_tensor(n) + torch.randn(s, generator=g) * 0.002
        write_checkpoint(d, tensors, kind="finetuned", locale=f"src{i}", base={"path": str(base_dir), "hash": base_hash}, seed=100 + i)
        del tensors


BACKBONE = "bench"
PEAK = str(Path(__file__).with_name("peak.py"))
REPO = str(Path(__file__).resolve().parents[1])


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, int, str]:
    """Run ``cmd`` (a peak.py command line); return wall seconds, the peak RSS in GB the child measured inside itself,
    its exit status and its output tail."""
    import re

    env = {**(env or os.environ), "PYTHONPATH": REPO}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    text = proc.stdout.decode(errors="replace")
    found = re.findall(r"PEAK_RSS_MB=([0-9.]+)", text)
    rss_gb = float(found[-1]) * 2**20 / 1e9 if found else float("nan")
    return wall, rss_gb, proc.returncode, text[-2000:]


def ours(folder: Path, out: Path, k: int, method: str, params: dict) -> tuple[float, float]:
    sources = [str(folder / f"src{i}") for i in range(k)]
    cmd = [
        sys.executable, PEAK, "-m", "merginguriel.cli.main", "merge", "--root", str(folder), "--backbone", BACKBONE,
        "--selection.sources", json.dumps(sources), "--merge.method", method, "--merge.params", json.dumps(params),
        "--output", str(out), "--overwrite", "true", "--progress", "false", "--device", "cpu",
    ]
    wall, rss, rc, text = run_measured(cmd)
    if rc != 0:
        raise RuntimeError(f"merginguriel {method} failed:\n{text}")
    shutil.rmtree(out, ignore_errors=True)
    return wall, rss


def mergekit(folder: Path, out: Path, k: int, method: str, venv: Path) -> tuple[float, float]:
    models = [{"model": str(folder / f"src{i}"), "parameters": {"weight": 1.0 / k}} for i in range(k)]
    if method == "linear":
        cfg = {"merge_method": "linear", "models": models, "dtype": "float32"}
    else:
        for m in models:
            m["parameters"]["density"] = 0.2
        cfg = {"merge_method": "ties", "base_model": str(folder / BACKBONE / "base"), "models": models,
               "parameters": {"normalize": True}, "dtype": "float32"}
    cfg_path = out.parent / f"mergekit-{method}.yml"
    cfg_path.write_text(json.dumps(cfg))  # JSON is YAML
    cmd = [str(venv / "bin" / "python"), PEAK, "--entry-point", "mergekit-yaml", str(cfg_path), str(out), "--allow-crimes",
           "--no-copy-tokenizer", "--no-write-model-card"]
    wall, rss, rc, text = run_measured(cmd)
    if rc != 0:
        raise RuntimeError(f"mergekit {method} failed:\n{text}")
    shutil.rmtree(out, ignore_errors=True)
    return wall, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, required=True, help="where the checkpoints are generated (about 12 GB)")
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints afterwards")
    ap.add_argument("--mergekit-venv", type=Path, default=Path("/tmp/venv-mergekit"))
    ap.add_argument("--methods", nargs="*", default=None, help="restrict to these method names")
    ap.add_argument("--ks", nargs="*", type=int, default=[5, 10])
    ap.add_argument("--mergekit", nargs="*", default=["linear", "ties"], help="mergekit methods to run side by side (K=5)")
    args = ap.parse_args()
    folder = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    # Generate in a child process, so this process stays small while the merges run.
    import multiprocessing

    gen = multiprocessing.get_context("spawn").Process(target=generate, args=(folder, max(args.ks)))
    gen.start()
    gen.join()
    if gen.exitcode != 0:
        raise SystemExit(f"generating the checkpoints failed (exit {gen.exitcode})")
    out = folder / "out"
    rows = []
    have_mergekit = (args.mergekit_venv / "bin" / "mergekit-yaml").is_file()
    ref: dict[str, tuple[float, float]] = {}
    if have_mergekit and 5 in args.ks:
        for m in args.mergekit:
            ref[m] = mergekit(folder, out, 5, m, args.mergekit_venv)
            print(f"mergekit {m} K=5: {ref[m][0]:.1f} s, {ref[m][1]:.2f} GB", flush=True)
    for method, params in METHODS:
        if args.methods and method not in args.methods:
            continue
        res = {}
        for k in args.ks:
            res[k] = ours(folder, out, k, method, params)
            print(f"merginguriel {method} {params} K={k}: {res[k][0]:.1f} s, {res[k][1]:.2f} GB", flush=True)
        rows.append((method, params, res))
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{date}; {platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}; float32 on CPU")
    if ref:
        print("\n| K=5 | mergekit 0.1.5 wall | mergekit peak RSS | merginguriel wall | merginguriel peak RSS | time ratio | RSS ratio |")
        print("|---|---|---|---|---|---|---|")
        like_for_like = (
            ("linear", "linear", ("linear", {})),
            ("ties", "ties, per tensor, floor(density n) (mergekit's rule)",
             ("ties", {"density": 0.2, "scope": "tensor", "rounding": "floor"})),
            ("ties", "ties, global (the paper's) vs mergekit's per tensor: not like for like",
             ("ties", {"density": 0.2, "scope": "global"})),
        )
        for m, label, (method, params) in like_for_like:
            if m not in ref:
                continue
            got = next((r[2][5] for r in rows if r[0] == method and r[1] == params), None)
            if got:
                print(f"| {label} | {ref[m][0]:.1f} s | {ref[m][1]:.2f} GB | "
                      f"{got[0]:.1f} s | {got[1]:.2f} GB | {got[0] / ref[m][0]:.2f}x | {got[1] / ref[m][1]:.2f}x |")
    ks = sorted(args.ks)
    head = " | ".join(f"K={k} wall | K={k} peak RSS" for k in ks)
    print(f"\n| method | params | {head} | RSS K={ks[-1]} / K={ks[0]} |")
    print("|---|---|" + "---|---|" * len(ks) + "---|")
    for method, params, res in rows:
        cells = " | ".join(f"{res[k][0]:.1f} s | {res[k][1]:.2f} GB" for k in ks)
        print(f"| {method} | {json.dumps(params)} | {cells} | {res[ks[-1]][1] / res[ks[0]][1]:.2f}x |")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
