"""NxN transfer matrix: `compute_nxn` (each model loaded once, each locale's split tokenised once) vs the per-pair approach of
the reference code (every cell loads its model, reads its locale's data and tokenises the one split it evaluates), on
tiny models: like for like, the per-pair side does no more tokenisation than a cell needs.

Both use the same evaluation module, so the matrices must be identical; the ratio is measured side by side in one run.
Then `compute_nxn` alone for N = 4, 8, 16 (N model loads + N^2 evaluations, cold tokenisation cache each time).

    python benchmarks/bench_nxn.py [--n 8] [--sizes 4 8 16] [--per-intent 192 34 50] [--hidden 32] [--device cpu]
                                   [--threads 1] [--batch-size 256] [--repeats 2]

The default `--per-intent 192 34 50` gives 11,520 / 2,040 / 3,000 train / validation / test utterances per locale, the
sizes of a MASSIVE locale (11,514 / 2,033 / 2,974); both sides tokenise only the evaluated split.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pandas as pd  # noqa: E402

from merginguriel.data.config import EVAL_BATCH_SIZE  # noqa: E402
from merginguriel.locales import LOCALES  # noqa: E402


SIZES = {"tiny": {}, "base": {"layers": 12, "heads": 12, "intermediate": 3072, "vocab_size": 250002}}


def build(root: Path, n: int, per_intent: tuple[int, int, int], hidden: int, size: str = "tiny"):
    from conftest import make_base, make_finetuned, write_release_data

    from merginguriel.checkpoints import Layout
    from merginguriel.data import DataConfig

    locales = list(LOCALES[:n])
    make_base(root, "tiny", **{"hidden": hidden, "intermediate": 2 * hidden, **SIZES[size]})
    for i, loc in enumerate(locales):
        make_finetuned(root, loc, "tiny", seed=100 + i, scale=0.5)
    write_release_data(root / "data", locales, per_intent=per_intent,
                       shift={loc: 3 * i for i, loc in enumerate(locales)})
    return Layout(root, "tiny"), DataConfig(source="release", data_path=str(root / "data"), root=str(root)), locales


def cold_cache(root: Path) -> None:
    """Forget every tokenisation, in memory and on disk, as a fresh process with no cache would."""
    from merginguriel.data.tokenized import clear_memo

    clear_memo()
    shutil.rmtree(root / "cache" / "tokenized", ignore_errors=True)


def per_pair(layout, data, locales, device: str, batch_size: int) -> tuple[pd.DataFrame, float, int]:
    """The reference approach: for every (source, target) cell, load the model, read the locale's data and tokenise
    only the split it evaluates (like for like: the same evaluation module, no more tokenisation than a cell needs)."""
    from merginguriel.data import load_locale
    from merginguriel.data.loaders import split_dataloader
    from merginguriel.data.tokenized import encode
    from merginguriel.evaluation.evaluate import evaluate_loaders, load_checkpoint

    t0 = time.perf_counter()
    loads = 0
    matrix = pd.DataFrame(index=locales, columns=locales, dtype=float)
    for s in locales:
        for t in locales:
            model, tok = load_checkpoint(layout.finetuned(s))
            split = encode(tok, load_locale(data, t)["validation"], data.max_length)
            loader = split_dataloader(split, tok, batch_size)
            matrix.at[s, t] = evaluate_loaders(model, tok, {t: loader}, device)[t]["accuracy"]
            loads += 1
    return matrix, time.perf_counter() - t0, loads


def nxn(layout, data, device: str, batch_size: int = EVAL_BATCH_SIZE) -> tuple[pd.DataFrame, float, int, int]:
    from merginguriel.data.tokenized import TOKENIZE_CALLS
    from merginguriel.evaluation.evaluate import MODEL_LOADS
    from merginguriel.evaluation.nxn import compute_nxn

    cold_cache(Path(data.root))
    shutil.rmtree(layout.nxn("validation"), ignore_errors=True)
    loads0, tok0 = sum(MODEL_LOADS.values()), sum(TOKENIZE_CALLS.values())
    t0 = time.perf_counter()
    from merginguriel.data.config import DataSource

    source = DataSource(source=data.source, data_path=data.data_path, max_length=data.max_length)
    folder = compute_nxn(layout.backbone, str(layout.root), "validation", data=source, batch_size=batch_size, device=device,
                         progress=False)
    seconds = time.perf_counter() - t0
    matrix = pd.read_csv(folder / "evaluation_matrix.csv", index_col=0, float_precision="round_trip")
    return matrix, seconds, sum(MODEL_LOADS.values()) - loads0, sum(TOKENIZE_CALLS.values()) - tok0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="models for the side-by-side comparison")
    parser.add_argument("--sizes", type=int, nargs="*", default=[4, 8, 16], help="N values for the scaling table")
    parser.add_argument("--per-intent", type=int, nargs=3, default=[192, 34, 50],
                        help="train/validation/test utterances per intent and locale (default: MASSIVE's split sizes)")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny (hidden --hidden, 2 layers) or base (XLM-R-base shape: 12 layers, vocab 250,002; use --hidden 768)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription on a shared 2-core box)")
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE,
                        help="evaluation batch size, the same for both approaches (default: the toolkit's evaluation default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of both approaches; the fastest of each counts")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    per_intent = tuple(args.per_intent)
    for name in ("lightning", "lightning.pytorch", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    with tempfile.TemporaryDirectory() as tmp:
        layout, data, locales = build(Path(tmp) / "cmp", args.n, per_intent, args.hidden, args.size)
        # Alternate the two approaches and keep each one's fastest run: the box is shared, so load comes and goes.
        fast_s = slow_s = float("inf")
        # one warm-up evaluation (CUDA context, first imports) so that neither approach pays it
        from merginguriel.evaluation.evaluate import evaluate_checkpoint

        evaluate_checkpoint(layout.finetuned(locales[0]), [locales[0]], "validation", data, device=args.device)
        for _ in range(args.repeats):
            fast, seconds, fast_loads, fast_tok = nxn(layout, data, args.device, args.batch_size)
            fast_s = min(fast_s, seconds)
            slow, seconds, slow_loads = per_pair(layout, data, locales, args.device, args.batch_size)
            slow_s = min(slow_s, seconds)
        diff = float(abs(fast.loc[locales, locales].to_numpy() - slow.to_numpy()).max())
        cells = args.n * args.n
        sizes = "/".join(str(k * 60) for k in per_intent)
        print(f"### N = {args.n}: NxN vs per-pair ({cells} cells; train/validation/test utterances per locale {sizes}; "
              f"{args.size} model, hidden {args.hidden}; batch {args.batch_size}; {args.device}, {args.threads} thread(s); "
              f"fastest of {args.repeats} alternating runs)\n")
        print("| approach | wall s | model loads | tokenisations | s / cell |")
        print("|---|---|---|---|---|")
        print(f"| per-pair (reference) | {slow_s:.1f} | {slow_loads} | {cells} | {slow_s / cells:.3f} |")
        print(f"| compute_nxn | {fast_s:.1f} | {fast_loads} | {fast_tok} | {fast_s / cells:.3f} |")
        print(f"\nspeed-up: {slow_s / fast_s:.1f}x; largest |difference| between the two matrices: {diff:.3g}\n")

        print("### compute_nxn scaling (cold tokenisation cache)\n")
        print("| N | cells | model loads | tokenisations | wall s | s / cell |")
        print("|---|---|---|---|---|---|")
        for n in args.sizes:
            layout, data, _ = build(Path(tmp) / f"n{n}", n, per_intent, args.hidden, args.size)
            _, seconds, loads, toks = nxn(layout, data, args.device, args.batch_size)
            print(f"| {n} | {n * n} | {loads} | {toks} | {seconds:.1f} | {seconds / (n * n):.3f} |")


if __name__ == "__main__":
    main()
