"""Benchmark: peak memory of the streamed task-vector cosine matrix for XLM-R-base-sized models (budget: <= 3x one model).

Builds a random XLM-R-base-architecture base (vocab 250,002, hidden 768, 12 layers, 60 labels: ~1.11 GB of float32
safetensors) and N "fine-tunes" (base + seeded noise), then runs ``task_vector_cosine`` in a fresh process for
N = 2 and N = 8, each reporting its own peak RSS, so the ratios are measured side by side in one run. Heavy:

    flock /tmp/merginguriel-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_compat.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Peak RSS measured inside each child with merginguriel.memory (VmHWM): getrusage's ru_maxrss survives exec, so a
# child would report its parent's peak.
CHILD = r"""
import json, sys, time
from merginguriel.compatibility.cosine import task_vector_cosine
from merginguriel.memory import process_peak_mb
base, models = sys.argv[1], json.loads(sys.argv[2])
t = time.perf_counter()
frame = task_vector_cosine(base, models)
secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "peak_rss_mb": process_peak_mb(),
                  "min_offdiag": float(frame.values[~__import__("numpy").eye(len(models), dtype=bool)].min())}))
"""

IDLE = r"""
import json
import merginguriel.compatibility.cosine, torch, safetensors, pandas
from merginguriel.memory import process_peak_mb
print(json.dumps({"peak_rss_mb": process_peak_mb()}))
"""


def build_models(folder: Path, n: int) -> tuple[Path, dict[str, Path]]:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(0)
    cfg = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=514, num_labels=60, type_vocab_size=1)
    model = XLMRobertaForSequenceClassification(cfg)
    base = folder / "base"
    model.save_pretrained(base, safe_serialization=True)
    originals = {k: v.clone() for k, v in model.state_dict().items()}
    models = {}
    gen = torch.Generator().manual_seed(1)
    for i in range(n):
        with torch.no_grad():
            for name, p in model.state_dict().items():
                if p.is_floating_point():
                    p.copy_(originals[name] + torch.randn(p.shape, generator=gen) * 0.01)
        path = folder / f"m{i}"
        model.save_pretrained(path, safe_serialization=True)
        models[f"m{i}"] = path
    del originals, model
    return base, models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the 9 models (~10 GB) are written (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the models for a rerun")
    args = parser.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-compat-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        if not (work / "m7" / "model.safetensors").is_file():
            base, models = build_models(work, 8)
        else:
            base, models = work / "base", {f"m{i}": work / f"m{i}" for i in range(8)}
        build_s = time.perf_counter() - t
        model_mb = (base / "model.safetensors").stat().st_size / 2**20
        idle = json.loads(subprocess.run([sys.executable, "-c", IDLE], capture_output=True, text=True, check=True).stdout)
        rows = []
        for n in (2, 8):
            chosen = {k: str(v) for k, v in list(models.items())[:n]}
            proc = subprocess.run([sys.executable, "-c", CHILD, str(base), json.dumps(chosen)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((n, res))
        print(f"one model: {model_mb:.0f} MB of safetensors; models built in {build_s:.0f} s; "
              f"process baseline (imports) {idle['peak_rss_mb']:.0f} MB")
        print("| N | wall (s) | peak RSS (MB) | peak / one model | (peak - imports) / one model | budget |")
        print("|---|---|---|---|---|---|")
        for n, res in rows:
            print(f"| {n} | {res['seconds']:.1f} | {res['peak_rss_mb']:.0f} | {res['peak_rss_mb'] / model_mb:.2f} | "
                  f"{(res['peak_rss_mb'] - idle['peak_rss_mb']) / model_mb:.2f} | <= 3.00 |")
        return 0
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
