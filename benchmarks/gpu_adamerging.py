"""AdaMerging on GPUs: step time of XLM-R-base-sized models, K = 5 sources, bf16, on 1 GPU and on all GPUs (DDP).

Self-contained and offline: it builds a random XLM-R-base-sized base (vocab 250,002, hidden 768, 12 layers, 60
intents) and K "fine-tuned" sources (base + seeded noise) with manifests, a small tokenizer and release-format target
data, then runs AdaMerging through `merge` (the Lightning path `merginguriel merge --merge.method adamerging` takes) in one
subprocess per configuration, and prints a table from the manifests (mean step time after warm-up, measured with a
CUDA synchronise per step; peak GPU memory of rank 0). Meant to finish in well under 5 minutes on an H100 machine.

    python benchmarks/gpu_adamerging.py            # on the GPU machine
    python benchmarks/gpu_adamerging.py --tiny     # a tiny model on CPU (1 vs 2 gloo processes), to check the script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package
TARGET = "sw-KE"
WORDS = [f"w{i}" for i in range(200)]
CONFIGS = {
    "base": dict(vocab=250002, hidden=768, layers=12, heads=12, intermediate=3072),
    "tiny": dict(vocab=len(WORDS) + 5, hidden=32, layers=2, heads=2, intermediate=64),
}


def _tokenizer():
    from transformers import XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -float(i + 1)) for i, w in enumerate(WORDS)] + [("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=vocab)


def build(work: Path, size: str, k: int) -> tuple[Path, list[Path], Path]:
    """Base + K sources (HF folders with manifests) and release-format data for the target locale."""
    import random

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from merginguriel.io import checkpoint_hash, write_manifest
    from merginguriel.locales import ID2LABEL, INTENTS, LABEL2ID

    c = CONFIGS[size]
    root = work / "ckpt" / "bench"
    base = root / "base"
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
        intermediate_size=c["intermediate"], max_position_embeddings=72, num_labels=60, id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
    )
    tok = _tokenizer()
    XLMRobertaForSequenceClassification(config).save_pretrained(base, safe_serialization=True)
    tok.save_pretrained(base)
    base_hash = checkpoint_hash(base)
    write_manifest(base, "base", hash=base_hash, seed=0)
    state = load_file(str(base / "model.safetensors"))
    gen = torch.Generator().manual_seed(1)
    sources = []
    for i in range(k):
        folder = root / "finetuned" / f"src{i}"
        folder.mkdir(parents=True)
        save_file({n: (t + torch.randn(t.shape, generator=gen) * 0.02).contiguous() for n, t in state.items()},
                  str(folder / "model.safetensors"), metadata={"format": "pt"})
        for f in base.iterdir():
            if f.name not in ("model.safetensors", "manifest.json"):
                shutil.copy2(f, folder / f.name)
        write_manifest(folder, "finetuned", hash=checkpoint_hash(folder), locale=None,
                       base={"path": str(base), "hash": base_hash}, seed=i)
        sources.append(folder)
    rng = random.Random(0)
    rows = [
        {"id": str(i), "locale": TARGET, "partition": "dev" if i % 2 else "train", "scenario": "x",
         "intent": rng.choice(INTENTS), "utt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20)))}
        for i in range(1024)
    ]
    data = work / "massive" / "1.1" / "data"
    data.mkdir(parents=True)
    (data / f"{TARGET}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return base, sources, work / "massive"


def worker(args) -> None:
    """One configuration (re-executed by Lightning on every DDP rank)."""
    from merginguriel.adamerging.options import AdaMergingOptions
    from merginguriel.data.config import DataConfig
    from merginguriel.merging import MergeContext, MergeSpec, Source, merge
    from merginguriel.training import TrainerOptions

    work = Path(args.work)
    base = work / "ckpt" / "bench" / "base"
    sources = sorted((work / "ckpt" / "bench" / "finetuned").iterdir())
    options = AdaMergingOptions(
        granularity="layer", steps=args.steps, batch_size=args.batch * args.devices, lr=1e-3,
        task_vector_dtype="float32" if args.tiny else "bfloat16", embedding_storage=args.storage,
        checkpoint_every=10**6, resume="never",
    )
    trainer = TrainerOptions(
        accelerator="cpu" if args.tiny else "gpu", devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto", precision="32-true" if args.tiny else "bf16-mixed",
        default_root_dir=str(work / "lightning" / args.name),
    )
    data = DataConfig(source="release", data_path=str(work / "massive"), root=str(work / "ckpt"), max_length=64)
    spec = MergeSpec(base=base, sources=[Source(p, None, 1.0 / len(sources)) for p in sources], method="adamerging",
                     params=options, output=work / "out" / args.name, target=TARGET, progress=False)
    merge(spec, MergeContext(data=data, trainer=trainer))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU (1 vs 2 processes): checks the script")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16, help="utterances per device and step")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--name", default="", help=argparse.SUPPRESS)
    ap.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--storage", default="file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    n_gpu = 0 if args.tiny else torch.cuda.device_count()
    if not args.tiny and n_gpu == 0:
        raise SystemExit("no CUDA device found; use --tiny to check the script on CPU")
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-adamerging-"))
    t0 = time.perf_counter()
    build(work, "tiny" if args.tiny else "base", args.k)
    build_s = time.perf_counter() - t0
    top = 2 if args.tiny else n_gpu
    runs = [("1 device, embedding rows from files", 1, "file"), ("1 device, embedding task vectors on device", 1, "device")]
    if top > 1:
        runs.append((f"{top} devices (DDP), embedding rows from files", top, "file"))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = []
    for i, (label, devices, storage) in enumerate(runs):
        name = f"run{i}"
        cmd = [sys.executable, str(HERE), "--worker", "--work", str(work), "--name", name, "--devices", str(devices),
               "--storage", storage, "--steps", str(args.steps), "--batch", str(args.batch)] + (["--tiny"] if args.tiny else [])
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(f"{label}: FAILED\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        m = json.loads((work / "out" / name / "manifest.json").read_text())
        results.append((label, devices, m, wall))
    device_name = "CPU" if args.tiny else torch.cuda.get_device_name(0)
    size = "tiny" if args.tiny else "XLM-R-base-sized (278M parameters)"
    print(f"\n# AdaMerging, {size}, K={args.k}, layer-wise, {'float32' if args.tiny else 'bf16 task vectors, bf16-mixed'}, "
          f"{args.steps} steps, {args.batch} utterances per device and step; {device_name}; models built in {build_s:.0f} s")
    print("| configuration | devices | global batch | step (ms) | utterances/s | peak GPU memory rank 0 (GB) | load (s) | run wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, devices, m, wall in results:
        step = m["adaptation"]["step_time_s"]
        batch = args.batch * devices
        gpu = m["peak_memory"].get("cuda_bytes")
        print(f"| {label} | {devices} | {batch} | {step * 1000:.1f} | {batch / step:.0f} | "
              f"{gpu / 2**30:.2f} | {m['timings']['load_s']:.1f} | {wall:.1f} |" if gpu is not None else
              f"| {label} | {devices} | {batch} | {step * 1000:.1f} | {batch / step:.0f} | - | {m['timings']['load_s']:.1f} | {wall:.1f} |")
    if top <= 1:
        print("(only one device here: the multi-device row needs more GPUs)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
