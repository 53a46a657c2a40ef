"""What every command prints: a command is a typed function and one of these printers, which gets the function's
result and the options it was called with, prints, and returns the exit status (merginguriel.cli.main runs them)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def base(folder: Path, options: dict) -> int:
    from merginguriel.io import read_manifest

    manifest = read_manifest(folder)
    print(f"shared base: {folder} (hash {manifest['hash'][:12]}, head seed {manifest['seed']})")
    return 0


def embedded(built: dict[str, Path], options: dict) -> int:
    from merginguriel.io import read_manifest

    for name, path in built.items():
        m = read_manifest(path)
        if name == "data":
            s = m["sizes"]
            print(f"embedded data: {path}  ({len(m['locales'])} locales x {m['rows_per_locale']} rows: "
                  f"{s['train_per_intent']}/{s['dev_per_intent']}/{s['test_per_intent']} train/dev/test per intent; "
                  f"seed {m['seed']}; built {m['created']} in {m['build_seconds']} s)")
        else:
            params = (m.get("planting") or {}).get("parameters")
            size = f"{params / 1e6:.2f} M parameters, " if params else ""
            print(f"embedded backbone: {path}  (XLM-R architecture, {size}vocab {m.get('vocab_size')}; "
                  f"seed {m['seed']}; built {m['created']} in {m['build_seconds']} s)")
    return 0


def similarity(result: tuple[Path, bool], options: dict) -> int:
    import pandas as pd

    from merginguriel.checkpoints import SIMILARITY_MATRIX

    out, reused = result
    matrix = pd.read_csv(out / SIMILARITY_MATRIX, index_col=0)
    with pd.option_context("display.width", 200, "display.max_columns", 12):
        print(matrix.round(3).to_string() if len(matrix) <= 12 else matrix.round(3))
    print(f"\n{options['kind']} similarity of {len(matrix)} locales {'reused from' if reused else 'written to'} "
          f"{out / SIMILARITY_MATRIX}")
    return 0


def compatibility(result: tuple[Path, bool], options: dict) -> int:
    import pandas as pd

    from merginguriel.checkpoints import COMPATIBILITY_MATRIX

    out, reused = result
    print(pd.read_csv(out / COMPATIBILITY_MATRIX, index_col=0).round(4).to_string())
    print(f"\ncompatibility ({options['kind']}) {'reused from' if reused else 'written to'} {out / COMPATIBILITY_MATRIX}")
    return 0


def advise(advice, options: dict) -> int:
    from merginguriel.report.table_text import to_markdown

    print(f"pilot on {advice.target}, judged on the validation split:\n")
    print(to_markdown(advice.evidence, 4))
    for note in advice.notes:
        print(f"note: {note}")
    print(f"\n{advice.summary()}")
    return 0


def quickstart(result, options: dict) -> int:
    _, found = result
    print("\nVerdicts (merge chosen on validation, judged on test):")
    for v in found:
        print(v.line)
    return 0


def nxn(folder: Path, options: dict) -> int:
    import json

    import pandas as pd

    from merginguriel.checkpoints import NXN_MATRIX, NXN_SUMMARY

    matrix = pd.read_csv(folder / NXN_MATRIX, index_col=0)
    summary = json.loads((folder / NXN_SUMMARY).read_text(encoding="utf-8"))
    print(matrix.round(4).to_string())
    t = summary["timings"]
    print(f"\n{summary['cells']['computed']} cell(s) computed, {summary['cells']['resumed']} resumed, "
          f"{summary['loads']} model load(s), {t['total_s']} s")
    print(f"NxN matrix ({options['split']}) written to {folder / NXN_MATRIX}")
    return 0


def merge(done, options: dict) -> int:
    from merginguriel.jobs.run import choice_line, evaluation_line

    if done.listing is not None:
        print(done.listing, end="")
        return 0
    for note in done.notes:  # kept off stdout when stdout is the recipe
        print(f"mergekit: {note}", file=sys.stderr if options["print_recipe"] else sys.stdout)
    if options["print_recipe"]:
        print(done.recipe, end="")
        return 0
    if done.recipe_file:
        print(f"recipe: {done.recipe_file} (`merginguriel merge -c {done.recipe_file}` reproduces this merge)")
    if done.mergekit_file:
        print(f"mergekit config: {done.mergekit_file} (`mergekit-yaml {done.mergekit_file} OUT/` gives this merge)")
    print(done.plan.describe())
    if done.peak_mb is not None:
        print(f"  expected peak memory: about {done.peak_mb:.0f} MB (dry run: nothing written)")
        return 0
    result = done.result
    print(f"merged model: {result.output}{' (reused: same job, same inputs)' if result.reused else ''}")
    if result.manifest.get("choice"):
        print(choice_line(result.manifest["choice"]))
    for record in result.evaluation.values():
        print(evaluation_line(done.plan.checked.target, record))
    return 0


def experiment(result: tuple[Any, dict], options: dict) -> int:
    from merginguriel.experiments.db import ResultsDB

    sweep, ran = result
    if options["dry_run"]:
        print(ran["plan"])
        return 0
    counts = ran["counts"]
    print(
        f"sweep {sweep.name!r}: {counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
        f"{counts.get('running', 0)} running, {counts.get('planned', 0)} planned; results in {sweep.db}"
        f" (`merginguriel report sweep --db {sweep.db}`)"
    )
    if counts.get("failed"):
        with ResultsDB(sweep.db, readonly=True) as rdb:
            for row in rdb.rows(sweep=sweep.name, status="failed")[:5]:
                print(f"  failed {row['key'][:12]} {row['target']} {row['method']}: {(row['error'] or '').splitlines()[-1]}",
                      file=sys.stderr)
        return 1
    return 0


def study(result: tuple[Any, dict], options: dict) -> int:
    plan, ran = result
    if options["dry_run"]:
        print(ran["plan"])
        return 0
    resume = f"merginguriel study --config {ran['resume']}"
    if ran["interrupted"]:
        import signal

        from merginguriel.errors import Stopped

        signum = Stopped.last or signal.SIGINT
        print(f"study {plan.name!r} stopped by {signal.Signals(signum).name} during {ran['interrupted']}; finished work "
              f"is kept, resume with: {resume}", file=sys.stderr)
        return 128 + signum
    for stage, failed in ran["failed"].items():
        print(f"study {plan.name!r} stopped at {stage}: {len(failed)} task(s) failed:", file=sys.stderr)
        for label, failure in failed.items():
            print("\n".join([f"  {label}: {failure.lines()[0]}", *failure.lines()[1:]]), file=sys.stderr)
        print(f"fix the cause, then resume with: {resume}", file=sys.stderr)
        return 1
    counts = ran["sweep"]["counts"]
    db = plan.sweep_plan().db
    print(f"study {plan.name!r}: {len(plan.locales)} fine-tunes, NxN {' and '.join(plan.nxn_splits)} under "
          f"{plan.layout.home / 'nxn'}, sweep {counts.get('done', 0)} done, {counts.get('failed', 0)} failed; "
          f"results in {db} (`merginguriel report sweep --db {db}`)")
    return 1 if counts.get("failed") else 0


def report(result: tuple[Path, list], options: dict) -> int:
    folder, found = result
    text = (folder / "summary.md").read_text(encoding="utf-8")
    print(text.split("\n## ", 1)[1] if "\n## " in text else "", end="")
    print(f"\nreport: {folder} (summary.md, report.csv, one chart per target as PNG and SVG)\n")
    print("Verdicts (merge chosen on validation, judged on test):")
    for v in found:
        print(v.line)
    return 0


def predict(result: dict, options: dict) -> int:
    if result["text"] is not None:
        sys.stdout.write(result["text"])
    else:
        print(result["summary"])
    return 0


def push(url: str, options: dict) -> int:
    print(f"pushed {options['folder']} to {url}")
    return 0
