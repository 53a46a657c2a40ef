"""Embedded world: does it transfer the way XLM-R does? Build, fine-tune every locale, NxN, URIEL vs measured transfer,
task-vector sizes and merge outcomes, written as a markdown results file with date and machine.

    nice -n 10 .venv/bin/python benchmarks/embedded_transfer.py   # all 52 locales: 23 min on a 2-core VM at load 2-4
    nice -n 10 .venv/bin/python benchmarks/embedded_transfer.py --locales es-ES,pt-PT,... --targets pt-PT,...

Steps (each reuses what a previous run under the same --root finished):
1. build the embedded data and backbone into a fresh root (timed) and the shared base;
2. fine-tune every locale with the recipe of configs/fit-embedded.yaml (a plain loop that mirrors IntentClassifier);
3. the NxN matrix on validation (REAL similarity, the single-source choice) and test (everything reported);
4. the numbers issue 12 asks for: hi-IN on ur-PK against ur-PK's own model, ru-RU on pl-PL, zero-shot / self over all
   off-diagonal cells, cells below 3x chance, Spearman of each URIEL view with measured transfer, task-vector sizes;
5. merges for the --targets: REAL- and URIEL-selected K sources (ExcTar), --methods (default linear, similarity-
   weighted, and TIES), against the selected source with the best validation zero-shot accuracy, exact McNemar on
   the test rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedded_measure import (
    Corpus, Recipe, correctness, ensure_finetuned, finetune, load_classifier, machine, random_encoder_copy, spearman,
    task_vector_ratios,
)
from embedded_outcomes import merge_outcome, select
from merginguriel.embedded.build import ensure_embedded_backbone, ensure_embedded_data
from merginguriel.locales import LOCALES, NUM_INTENTS
from merginguriel.models.base import ensure_base
from merginguriel.similarity import similarity_matrix

REPO = Path(__file__).resolve().parents[1]
URIEL_VIEWS = {"syntax_knn (uriel)": "uriel", "genetic (uriel_genetic)": "uriel_genetic", "geographic (uriel_geographic)": "uriel_geographic"}
DEFAULT_TARGETS = "sw-KE,tr-TR,az-AZ,tl-PH,cy-GB,af-ZA,ur-PK,pt-PT,ja-JP,th-TH,am-ET,vi-VN"
METHOD_PARAMS = {
    "linear": {"normalise": True}, "ties": {"density": 0.2}, "task_arithmetic": {"weighted": False, "lam": 0.3},
    "breadcrumbs": {}, "dare_linear": {"p": 0.9}, "dare_ties": {"p": 0.9},
}
CHANCE = 1.0 / NUM_INTENTS


def off_diagonal(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return [(s, t) for s in frame.index for t in frame.columns if s != t]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="checkpoints root (default: a fresh temporary folder, so the build is timed)")
    ap.add_argument("--locales", default="all", help="comma-separated locales to fine-tune (default: all 52)")
    ap.add_argument("--targets", default=DEFAULT_TARGETS, help="comma-separated merge targets")
    ap.add_argument("--num_sources", default="3,5", help="comma-separated K values")
    ap.add_argument("--methods", default="linear,ties", help=f"comma-separated merge methods, of: {', '.join(METHOD_PARAMS)}")
    ap.add_argument("--config", default="fit-embedded", help="a fine-tuning config: a file or a shipped name")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "embedded-run.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="mu-embedded-"))
    locales = list(LOCALES) if args.locales == "all" else args.locales.split(",")
    targets = [t for t in args.targets.split(",") if t in locales]
    ks = [int(k) for k in args.num_sources.split(",")]
    methods = {m: METHOD_PARAMS[m] for m in args.methods.split(",")}
    recipe = Recipe.from_yaml(args.config)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    # 1. build -------------------------------------------------------------------------------------------------------
    t = time.perf_counter()
    data = ensure_embedded_data(root / "embedded")
    t_data = time.perf_counter() - t
    t = time.perf_counter()
    ensure_embedded_backbone(root / "embedded")
    t_backbone = time.perf_counter() - t
    base = ensure_base("embedded", root)
    from transformers import AutoTokenizer

    corpus = Corpus(data, AutoTokenizer.from_pretrained(base), recipe.max_length)
    bench = root / "embedded-bench"

    # 2. fine-tunes --------------------------------------------------------------------------------------------------
    t = time.perf_counter()
    folders = {loc: ensure_finetuned(bench / "finetuned" / loc, base, corpus, loc, recipe, seed_key=LOCALES.index(loc)) for loc in locales}
    t_finetune = time.perf_counter() - t
    fit_stats = {loc: json.loads((f / "manifest.json").read_text())["metrics"] for loc, f in folders.items()}

    # 3. NxN (reused when a previous run under this root measured the same locales) ---------------------------------
    t = time.perf_counter()
    saved = {split: bench / f"nxn-{split}.csv" for split in ("validation", "test")}
    test_rows: dict[tuple[str, str], np.ndarray] = {}
    nxn = {split: pd.read_csv(path, index_col=0) for split, path in saved.items() if path.is_file()}
    if any(list(frame.index) != locales or list(frame.columns) != locales for frame in nxn.values()) or len(nxn) < 2:
        nxn = {split: pd.DataFrame(index=locales, columns=locales, dtype=float) for split in saved}
        for s in locales:
            model = load_classifier(folders[s])
            for split in saved:
                for tgt in locales:
                    right = correctness(model, corpus.split(tgt, split))
                    nxn[split].at[s, tgt] = float(right.mean())
                    if split == "test":
                        test_rows[s, tgt] = right
        for split, frame in nxn.items():
            frame.to_csv(saved[split])
    t_nxn = time.perf_counter() - t

    test = nxn["test"]
    self_acc = pd.Series({loc: test.at[loc, loc] for loc in locales})
    pairs = off_diagonal(test)
    ratio = np.array([test.at[s, t] / self_acc[t] for s, t in pairs])
    zero_shot = np.array([test.at[s, t] for s, t in pairs])

    # 4. the numbers -------------------------------------------------------------------------------------------------
    say("# Embedded world: measured transfer (generated by benchmarks/embedded_transfer.py)")
    say()
    say(f"Date: {dt.datetime.now().isoformat(timespec='seconds')}. Machine: {machine()}.")
    say(f"Locales fine-tuned: {len(locales)}; merge targets: {len(targets)}; recipe: {recipe.__dict__}.")
    say()
    say("## Time")
    say("| step | wall |")
    say("|---|---|")
    say(f"| data, 52 locales | {t_data:.1f} s |")
    say(f"| backbone (tokenizer + planted weights) | {t_backbone:.1f} s |")
    say(f"| fine-tunes ({len(locales)}) | {t_finetune:.0f} s ({np.mean([f['fit_seconds'] for f in fit_stats.values()]):.1f} s each on average, "
        f"{np.mean([f['epochs'] for f in fit_stats.values()]):.1f} epochs) |")
    say(f"| NxN, validation + test ({len(locales)}x{len(locales)}) | {t_nxn:.0f} s{'' if test_rows else ' (reused from an earlier run)'} |")
    say()
    chance3 = 3 * CHANCE
    say("## Transfer (test split, chance 1/60 = 0.017)")
    say("| number | measured | target |")
    say("|---|---|---|")
    checks = []
    if {"hi-IN", "ur-PK"} <= set(locales):
        v = test.at["hi-IN", "ur-PK"] / self_acc["ur-PK"]
        checks.append(("hi-IN model on ur-PK / ur-PK's own model", f"{test.at['hi-IN', 'ur-PK']:.3f} / {self_acc['ur-PK']:.3f} = {v:.2f}", ">= 0.5", v >= 0.5))
    if {"ru-RU", "pl-PL"} <= set(locales):
        v = test.at["ru-RU", "pl-PL"]
        checks.append(("ru-RU model on pl-PL", f"{v:.3f} ({v / CHANCE:.0f}x chance)", "clearly above chance", v >= chance3))
    med = float(np.median(ratio))
    checks.append(("median zero-shot / self, all off-diagonal cells", f"{med:.3f} (quartiles {np.percentile(ratio, 25):.2f}-{np.percentile(ratio, 75):.2f}, {len(pairs)} cells)", "in [0.4, 0.9]", 0.4 <= med <= 0.9))
    below = float((zero_shot < chance3).mean())
    checks.append(("off-diagonal cells below 3x chance (0.05)", f"{below:.1%}", "< 5%", below < 0.05))
    checks.append(("in-language accuracy (self), min / median / max", f"{self_acc.min():.3f} / {self_acc.median():.3f} / {self_acc.max():.3f}", ">= 0.6", self_acc.min() >= 0.6))
    for name, kind in URIEL_VIEWS.items():
        sim = similarity_matrix(kind, locales, root=root)
        rho = spearman([sim.at[t, s] for s, t in pairs], zero_shot)
        checks.append((f"Spearman(URIEL {name}, zero-shot accuracy)", f"{rho:.3f}", "in [0.2, 0.8]", 0.2 <= rho <= 0.8))
    real_rho = spearman([nxn["validation"].at[s, t] for s, t in pairs], zero_shot)
    checks.append(("Spearman(REAL = validation NxN, test zero-shot accuracy)", f"{real_rho:.3f}", "above every URIEL view", None))
    for name, value, target, ok in checks:
        say(f"| {name} | {value} | {target}{'' if ok is None else (' (met)' if ok else ' (NOT met)')} |")
    say()

    probe = "es-ES" if "es-ES" in locales else locales[0]
    # A random encoder cannot learn at the backbone's encoder rate: give it the head's rate, for twice the epochs.
    scratch_recipe = replace(recipe, learning_rate=recipe.head_learning_rate or recipe.learning_rate, max_epochs=2 * recipe.max_epochs)
    scratch, _ = finetune(random_encoder_copy(base, recipe.seed), corpus.split(probe, "train"), corpus.split(probe, "validation"), scratch_recipe)
    scratch_acc = {t: float(correctness(scratch, corpus.split(t, "test")).mean()) for t in locales}
    others = [t for t in locales if t != probe]
    say(f"## What the backbone brings: {probe} fine-tuned from a randomly initialised encoder (same architecture, tokenizer, "
        f"head; lr {scratch_recipe.learning_rate} everywhere, {scratch_recipe.max_epochs} epochs)")
    say("| start | self | mean zero-shot over the other locales | other scripts: mean zero-shot |")
    say("|---|---|---|---|")
    from merginguriel.embedded.typology import load_typology

    typ = load_typology()
    cross = [t for t in others if typ[t]["script"] != typ[probe]["script"]]
    for name, row in (("planted backbone", {t: test.at[probe, t] for t in locales}), ("random encoder", scratch_acc)):
        say(f"| {name} | {row[probe]:.3f} | {np.mean([row[t] for t in others]):.3f} | {np.mean([row[t] for t in cross]):.3f} ({len(cross)} locales) |")
    say()

    ratios = {loc: task_vector_ratios(base, f) for loc, f in folders.items()}
    flat = np.array([v for r in ratios.values() for v in r.values()])
    worst = max(((loc, n, v) for loc, r in ratios.items() for n, v in r.items()), key=lambda x: x[2])
    say("## Task-vector size: ||tau|| / ||theta_base|| per encoder tensor (head excluded)")
    say(f"{len(flat)} tensors ({len(ratios)} fine-tunes x {len(next(iter(ratios.values())))}): "
        f"median {np.median(flat):.4f}, 90th percentile {np.percentile(flat, 90):.4f}, 99th {np.percentile(flat, 99):.4f}, "
        f"max {flat.max():.4f} ({worst[1]} of {worst[0]}); share <= 0.05: {(flat <= 0.05).mean():.1%}.")
    by_tensor = pd.DataFrame(ratios).T
    say()
    say("| tensor | median over fine-tunes | max |")
    say("|---|---|---|")
    for name in by_tensor.columns:
        say(f"| {name} | {by_tensor[name].median():.4f} | {by_tensor[name].max():.4f} |")
    say()

    say("## Self accuracy and zero-shot per target (test)")
    say("| target | self | best zero-shot (source) | mean zero-shot | zero-shot / self, median |")
    say("|---|---|---|---|---|")
    for tgt in locales:
        col = test[tgt].drop(tgt)
        say(f"| {tgt} | {self_acc[tgt]:.3f} | {col.max():.3f} ({col.idxmax()}) | {col.mean():.3f} | {(col / self_acc[tgt]).median():.2f} |")
    say()

    # 5. merges ------------------------------------------------------------------------------------------------------
    if targets:
        t = time.perf_counter()
        uriel = similarity_matrix("uriel", locales, root=root)
        outcomes = []

        def test_correct(folder: Path, loc: str) -> np.ndarray:
            source = next((s for s, f in folders.items() if f == folder), None)
            if source is not None and (source, loc) in test_rows:
                return test_rows[source, loc]
            right = correctness(load_classifier(folder), corpus.split(loc, "test"))
            if source is not None:
                test_rows[source, loc] = right
            return right

        for tgt in targets:
            candidates = [c for c in locales if c != tgt]
            for sim in ("real", "uriel"):
                for k in ks:
                    selection = select(tgt, sim, k, candidates, nxn["validation"], uriel)
                    for method, params in methods.items():
                        outcomes.append(merge_outcome(selection, method, params, base, folders.__getitem__, bench / "merged",
                                                      nxn["validation"], test_correct))
        t_merge = time.perf_counter() - t
        say(f"## Merges against the validation-chosen single source ({len(outcomes)} merges, {t_merge:.0f} s)")
        say("gain = merged test accuracy - test accuracy of the selected source with the best validation zero-shot; "
            "p: exact McNemar on the test rows (600 per target).")
        say()
        say("| target | similarity | K | method | sources | single (val-chosen) | single acc | merged acc | gain | merge-only / single-only | p |")
        say("|---|---|---|---|---|---|---|---|---|---|---|")
        for o in outcomes:
            say(f"| {o.target} | {o.similarity} | {o.num_sources} | {o.method} | {' '.join(o.sources)} | {o.single} | "
                f"{o.single_accuracy:.3f} | {o.merged_accuracy:.3f} | {o.gain:+.3f} | {o.merge_only} / {o.single_only} | {o.p_value:.3g} |")
        gains = [o for o in outcomes if o.gain > 0]
        significant = [o for o in gains if o.p_value < 0.05]
        per_target = pd.DataFrame([o.row() for o in outcomes]).groupby("target")["gain"].agg(["min", "max", "mean"])
        say()
        say(f"Merges that gain: {len(gains)}/{len(outcomes)}; significant gains (p < 0.05): {len(significant)}; "
            f"targets whose every merge gains: {int((per_target['min'] > 0).sum())}; whose every merge loses: "
            f"{int((per_target['max'] < 0).sum())}; of {len(per_target)} targets.")
        pd.DataFrame([o.row() for o in outcomes]).to_csv(bench / f"merges-{Path(args.out).stem}.csv", index=False)
    say()
    say(f"Total benchmark time: {time.perf_counter() - started:.0f} s. Outputs: {bench}")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
