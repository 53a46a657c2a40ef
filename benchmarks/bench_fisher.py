"""Fisher merging at XLM-R-base size: the diagonal Fisher of K = 5 sources on 256 examples each, then the merge.

Statistics are computed one source after another in one process (as `merginguriel merge --method fisher` does),
one backward pass per example into one running buffer; the peak RSS of that process is compared with the size of
one model (its safetensors file). The merge itself (the streaming engine reading the K models and K Fisher files)
runs in its own process and is timed separately.

    flock /tmp/merginguriel-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_fisher.py

Models are the random XLM-R-base-sized ones `bench_adamerging.py --size base` builds (built here when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from bench_adamerging import _peak_mb, _rss_mb  # noqa: E402  (the benchmarks' shared memory probes)


def statistics(folder: Path, examples: int, out: Path) -> dict:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification

    from merginguriel.statistics.fisher import fisher_diagonal

    rss0 = _rss_mb()
    config = json.loads((folder / "base" / "config.json").read_text())
    vocab, longest = config["vocab_size"], min(30, config["max_position_embeddings"] - 5)
    gen = torch.Generator().manual_seed(0)
    rows = [[0, *torch.randint(3, vocab - 1, (int(n),), generator=gen).tolist(), 2]
            for n in torch.randint(6, longest, (examples,), generator=gen)]
    per_source = []
    sources = sorted(folder.glob("source*"))
    for src in sources:
        t = time.perf_counter()
        model = AutoModelForSequenceClassification.from_pretrained(src, dtype=torch.float32)
        fisher = fisher_diagonal(model, rows, label="sample", seed=0)
        del model
        target = out / src.name
        target.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in fisher.items()}, str(target / "statistics.safetensors"))
        del fisher
        per_source.append(time.perf_counter() - t)
    return {"per_source_s": per_source, "peak_rss_mb": _peak_mb(), "rss_start_mb": rss0, "sources": [str(s) for s in sources]}


def merge_worker(folder: Path, stats: Path, out: Path) -> dict:
    from merginguriel.merging import merge
    from merginguriel.merging.spec import MergeSpec, Source

    sources = sorted(folder.glob("source*"))
    t = time.perf_counter()
    spec = MergeSpec(base=folder / "base", sources=[Source(p, None, 1.0) for p in sources], method="fisher", params={},
                     output=out, overwrite=True, progress=False, device="cpu",
                     statistics={"fisher": [stats / p.name for p in sources]})
    merge(spec)
    return {"merge_s": time.perf_counter() - t, "peak_rss_mb": _peak_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--work", default="/tmp/merginguriel-bench")
    ap.add_argument("--phase", choices=["stats", "merge"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    folder = work / "adamerging-base"
    stats, merged = work / "fisher-stats", work / "fisher-merged"
    if args.phase == "stats":
        print(json.dumps(statistics(folder, args.examples, stats)))
        return
    if args.phase == "merge":
        print(json.dumps(merge_worker(folder, stats, merged)))
        return
    from bench_adamerging import SIZES, build_models

    build_models(folder, SIZES["base"])  # the models the AdaMerging benchmark uses (reused when present)
    model_mb = (folder / "base" / "model.safetensors").stat().st_size / 2**20
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    runs = {}
    for phase in ("stats", "merge"):
        proc = subprocess.run([sys.executable, str(HERE), "--phase", phase, "--examples", str(args.examples), "--work", str(work)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{phase} failed:\n{proc.stderr[-4000:]}")
        runs[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    s, m = runs["stats"], runs["merge"]
    k = len(s["per_source_s"])
    print(f"# Fisher merging, XLM-R-base-sized random models (one model = {model_mb:.0f} MB), K={k}, {args.examples} examples "
          f"per source, labels sampled ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs)")
    print("| phase | time (s) | per source (s) | per example (ms) | peak RSS (MB) | peak / one model |")
    print("|---|---|---|---|---|---|")
    total = sum(s["per_source_s"])
    print(f"| Fisher statistics (K sources, one process) | {total:.1f} | {total / k:.1f} | {total / k / args.examples * 1000:.0f} | "
          f"{s['peak_rss_mb']:.0f} | {s['peak_rss_mb'] / model_mb:.2f}x |")
    print(f"| merge (streaming engine, K models + K Fisher files) | {m['merge_s']:.1f} | - | - | {m['peak_rss_mb']:.0f} | "
          f"{m['peak_rss_mb'] / model_mb:.2f}x |")
    print(f"(process RSS before loading any model: {s['rss_start_mb']:.0f} MB, included in the peak)")


if __name__ == "__main__":
    main()
