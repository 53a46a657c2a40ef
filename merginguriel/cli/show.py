"""What the commands registered straight over a library function print: each gets the function's result and the
options it was called with, prints, and returns the exit status (merginguriel.cli.main runs them)."""

from __future__ import annotations

from pathlib import Path


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
