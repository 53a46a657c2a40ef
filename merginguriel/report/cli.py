"""`merginguriel report`: merged models against every baseline -- a markdown table per target, a CSV and bar charts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal, Optional, Union

from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError
from merginguriel.io import atomic_dir, write_manifest

BASE_CACHE = "base_accuracy.json"


def nxn_split(nxn: Path) -> str | None:
    """The split an NxN matrix was computed on, from the summary `merginguriel nxn` writes beside it."""
    summary = nxn.parent / "summary.json"
    if summary.is_file():
        try:
            return json.loads(summary.read_text(encoding="utf-8")).get("split")
        except json.JSONDecodeError:
            return None
    return None


def build_report(
    merged: Union[list[str], str],
    nxn: str,
    output: str = "report",
    split: Optional[Literal["validation", "test"]] = None,
    base: Optional[str] = None,
    base_baseline: bool = True,
    data: DataConfig = DataConfig(),
    device: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Compare merged models with every baseline and write ``report.csv``, ``report.md`` and ``<target>.png``.

    Args:
        merged: merged model folders, their manifest.json files, folders above them (e.g. ``checkpoints/<bb>/merged``)
            or globs; one value or a list (``--merged '[a, b]'``).
        nxn: the NxN ``evaluation_matrix.csv`` of the split the merged models are judged on (normally ``test``).
        output: output folder (written atomically).
        split: the evaluation split; default: the NxN matrix's own (from its summary.json), else ``test``.
        base: the shared base folder (default: the one the merged manifests record).
        base_baseline: include the untrained shared base (evaluated once per split and cached as
            ``base_accuracy.json`` beside the NxN matrix).
        data: MASSIVE data source, for evaluations the manifests lack (its root defaults to the base's checkpoints root).
        device: device for those evaluations.
        overwrite: replace an existing output folder.
    """
    from merginguriel.report.baselines import base_accuracies, target_baselines
    from merginguriel.report.manifests import base_of, find_manifests, rows_from_manifests
    from merginguriel.report.table import compare, write_report
    from merginguriel.similarity.real import read_nxn

    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; choose another --output or pass --overwrite true")
    nxn_path = Path(nxn)
    if nxn_path.is_dir():
        nxn_path = nxn_path / "evaluation_matrix.csv"
    matrix = read_nxn(nxn_path)
    known = nxn_split(nxn_path)
    if split is not None and known is not None and split != known:
        raise InputError(f"--split {split} but {nxn_path} was computed on {known}; pass that split's NxN matrix")
    split = split or known or "test"
    manifests = find_manifests([merged] if isinstance(merged, str) else list(merged))
    for path in manifests:  # every NxN cell the baselines need, checked before anything is evaluated
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("target"):
            target_baselines(matrix, record["target"], [s.get("locale") for s in record.get("sources", [])])
    base_folder = Path(base) if base else base_of(manifests) if base_baseline else None
    if data.root == DataConfig.root and base_folder is not None:
        # evaluations here use the data (and tokenisation cache) of the checkpoints root the base lives in
        data = dataclasses.replace(data, root=str(base_folder.parent.parent))
    results = rows_from_manifests([str(p) for p in manifests], split, data, device)
    base_acc = None
    if base_folder is not None:
        base_acc = base_accuracies(base_folder, sorted(set(results["target"])), split, data, nxn_path.parent / BASE_CACHE,
                                   device=device)
    table = compare(results, matrix, base_acc)
    from merginguriel.report.table import markdown

    with atomic_dir(out, overwrite=overwrite) as tmp:
        paths = write_report(table, tmp)
        write_manifest(tmp, "report", split=split, nxn=str(nxn_path), merged=[str(p) for p in manifests],
                       base_accuracy=base_acc, files=sorted(p.name for p in paths.values()))
    print(markdown(table))
    return out


def main(argv: list[str]) -> int:
    """`merginguriel report`."""
    if any(a == "--db" or a.startswith("--db=") for a in argv):  # a sweep's results database: merginguriel/report/sweep.py
        from merginguriel.report.sweep import main as sweep_main

        return sweep_main(argv)
    from merginguriel.cli.function import parse_function_args

    out = build_report(**parse_function_args(build_report, argv, "merginguriel report"))
    print(f"report written to {out / 'report.csv'} (+ report.md and one bar chart per target)")
    return 0
