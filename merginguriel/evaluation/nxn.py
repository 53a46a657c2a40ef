"""The NxN transfer matrix: every fine-tuned model evaluated on every locale's split.

Cost: N model loads plus N x M evaluations. Each model is loaded once (``evaluation.evaluate.load_checkpoint``) and
evaluated on its missing locales through ``evaluate_model`` (the evaluation module: bf16 autocast on GPU), all of them in
one call by default (``chunk``); each locale's data is tokenised once per process and cached on disk by the data layer,
and its evaluation batches are padded once, so both are shared by every model with the same tokenizer.

Outputs in ``Layout.nxn(split)`` (or ``output``):

* ``cells.jsonl`` -- one JSON line per finished cell (source, target, accuracy, macro_f1, n, seconds, model hash, data
  key, and the per-example predictions in dataset order, packed: merginguriel.io.predictions.unpack), appended and fsynced as soon as its evaluation call returns. A rerun reads it and evaluates only the missing cells; cells
  of a model whose weights changed (another hash) or of another data configuration are recomputed.
* ``evaluation_matrix.csv`` -- row = source model locale, column = evaluated locale, accuracy in [0, 1].
* ``summary.json`` -- diagonal, best source per target (other than the target itself), timings, model loads.
* ``heatmap.png`` and ``manifest.json`` (kind ``nxn``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Optional

import pandas as pd

from merginguriel.checkpoints import DEFAULT_ROOT, EMBEDDED, NXN_CELLS, NXN_HEATMAP, NXN_MATRIX, NXN_SUMMARY, Layout
from merginguriel.data.config import EVAL_BATCH_SIZE, DataConfig, DataSource
from merginguriel.errors import InputError
from merginguriel.io import write_json_atomic, write_manifest
from merginguriel.io.atomic import atomic_write_text, check_writable
from merginguriel.locales import check_locales


Cell = dict
CellCallback = Callable[[Cell], None]


def read_cells(path: Path) -> list[Cell]:
    """Finished cells from ``cells.jsonl``; a torn last line (a run killed mid-write) is ignored."""
    if not path.is_file():
        return []
    cells = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            cell = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(cell, dict) and {"source", "target", "accuracy"} <= set(cell):
            cells.append(cell)
    return cells


def repair_cells(path: Path) -> None:
    """Drop a torn or unreadable line (a run killed mid-write) so that new cells are appended on a line of their own."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    cells = read_cells(path)
    if text and (not text.endswith("\n") or len(cells) != len(text.splitlines())):
        atomic_write_text(path, "".join(json.dumps(c) + "\n" for c in cells))


def append_cell(path: Path, cell: Cell) -> None:
    """Append one cell and fsync, so that a finished cell survives a crash right after it (a torn line left by a
    crash or a full disk is dropped by the next run, see repair_cells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "ab", buffering=0) as fh:  # unbuffered: a failed write raises here, not again at close
            fh.write((json.dumps(cell) + "\n").encode("utf-8"))
            os.fsync(fh.fileno())
    except OSError as err:
        from merginguriel.io.diskfull import as_disk_full

        full = as_disk_full(err, path)
        if full is not None:
            raise full from err
        raise


def usable_cells(path: Path, data_key: str, hashes: dict[str, str]) -> dict[tuple[str, str], Cell]:
    """The cells of ``path`` that still hold: same data configuration, source model unchanged (``hashes``: locale ->
    model hash); a later line for the same cell wins."""
    done: dict[tuple[str, str], Cell] = {}
    for cell in read_cells(path):
        if cell.get("data") == data_key and hashes.get(cell["source"]) == cell.get("model_hash"):
            done[(cell["source"], cell["target"])] = cell
    return done


def model_hashes(layout: Layout, models: list[str]) -> dict[str, str]:
    """The hash of each locale's fine-tuned model as its weights are now (empty when it has no manifest): weights
    edited after their manifest was written get a new hash, so their cells are recomputed."""
    from merginguriel.io import checkpoint_ref

    folders = {m: layout.finetuned(m) for m in models}
    return {m: checkpoint_ref(f)["hash"] if (f / "manifest.json").is_file() else "" for m, f in folders.items()}


def summarize(matrix: pd.DataFrame) -> dict:
    """Diagonal (self accuracy) and, per evaluated locale, the best other source model and its accuracy."""
    diagonal = {loc: float(matrix.at[loc, loc]) for loc in matrix.index if loc in matrix.columns}
    best = {}
    for target in matrix.columns:
        others = matrix[target].drop(index=target, errors="ignore").dropna()
        if len(others):
            ordered = sorted(others.items(), key=lambda kv: (-kv[1], kv[0]))
            best[target] = {"source": ordered[0][0], "accuracy": float(ordered[0][1])}
    return {"diagonal": diagonal, "best_source": best}


def compute_nxn(
    backbone: str = EMBEDDED,
    root: str = DEFAULT_ROOT,
    split: Literal["validation", "test"] = "validation",
    locales: Optional[list[str]] = None,
    models: Optional[list[str]] = None,
    data: DataSource = DataSource(),
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    output: Optional[str] = None,
    chunk: int = 0,
    progress: bool = True,
    on_cell: Optional[CellCallback] = None,
) -> Path:
    """Evaluate every fine-tuned model on every locale's split; write the NxN matrix, summary and heatmap.

    Args:
        backbone: backbone whose fine-tuned models (``<root>/<backbone>/finetuned/<locale>``) are evaluated.
        root: checkpoints root.
        split: ``validation`` (default; REAL similarity reads this one so the test split stays unseen) or ``test``.
        locales: evaluated locales (columns); default: the models' locales.
        models: source model locales (rows); default: every finished fine-tune of the backbone.
        data: the MASSIVE data source (under ``root``, which holds the embedded data and the caches).
        batch_size: evaluation batch size.
        device: ``auto``, ``cpu`` or ``cuda`` (bf16 autocast on GPU).
        output: output folder (default ``<root>/<backbone>/nxn/<split>``).
        chunk: locales per evaluation call; 0 (default) evaluates all of a model's missing locales in one call (the
            fastest: the call's fixed cost is paid once per model), 1 one locale per call. Cells are saved after each
            call, so an interruption loses at most one call's cells.
        progress: show a progress bar with cells done and examples/s.
        on_cell: called with each finished cell (after it is saved).
    """
    from merginguriel.evaluation.evaluate import load_checkpoint

    if split not in ("validation", "test"):
        raise InputError(f"unknown split {split!r}; the NxN matrix is computed on validation (default) or test")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    if chunk < 0:
        raise InputError(f"chunk must be 0 (a model's locales in one call) or a positive count, got {chunk}")
    layout = Layout.for_backbone(backbone, root)
    available = layout.finetuned_locales()
    if models is None:
        models = available
        if not models:
            raise InputError(
                f"no fine-tuned models under {layout.home / 'finetuned'}; fine-tune some first (`merginguriel fit`) "
                "or point --root/--backbone at where they are"
            )
    models = check_locales(models)
    absent = [m for m in models if m not in available]
    if absent:
        raise InputError(
            f"no finished fine-tuned model for {', '.join(absent)} under {layout.home / 'finetuned'}; "
            "fine-tune them first or drop them from --models"
        )
    locales = check_locales(models if locales is None else locales)
    if not locales:
        raise InputError("no locales to evaluate; pass --locales")
    data = data.at(root)

    folder = Path(output) if output else layout.nxn(split)  # created with the first finished cell
    check_writable(folder)  # not after the first model was evaluated
    cells_path = folder / NXN_CELLS
    key = data.key(split)
    hashes = model_hashes(layout, models)
    repair_cells(cells_path)
    done = usable_cells(cells_path, key, hashes)
    todo = {m: [t for t in locales if (m, t) not in done] for m in models}
    total = len(models) * len(locales)
    resumed = total - sum(len(v) for v in todo.values())

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=resumed, desc=f"nxn {split}", unit="cell", dynamic_ncols=True)
    loads, load_s, eval_s, examples = 0, 0.0, 0.0, 0
    started = time.perf_counter()
    try:
        for source in models:
            if not todo[source]:
                continue
            t0 = time.perf_counter()
            model, tokenizer = load_checkpoint(layout.finetuned(source))
            load_s += time.perf_counter() - t0
            loads += 1
            step = chunk if chunk > 0 else len(todo[source])
            for i in range(0, len(todo[source]), step):
                cells = _evaluate_cells(model, tokenizer, source, todo[source][i : i + step], split, data, batch_size, device)
                for cell in cells:
                    cell.update(model_hash=hashes[source], data=key)
                    append_cell(cells_path, cell)
                    done[(source, cell["target"])] = cell
                    eval_s += cell["seconds"]
                    examples += cell["n"]
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(examples_per_s=f"{examples / max(eval_s, 1e-9):.0f}", refresh=False)
                    if on_cell is not None:
                        on_cell(cell)
            del model, tokenizer
    finally:
        if bar is not None:
            bar.close()
    total_s = time.perf_counter() - started

    matrix = pd.DataFrame(index=pd.Index(models, name="source"), columns=locales, dtype=float)
    for (source, target), cell in done.items():
        if source in matrix.index and target in matrix.columns:
            matrix.at[source, target] = float(cell["accuracy"])
    atomic_write_text(folder / NXN_MATRIX, matrix.to_csv())  # full precision: the same numbers as the cells
    summary = {
        "split": split,
        "models": models,
        "locales": locales,
        **summarize(matrix),
        "cells": {"total": total, "computed": total - resumed, "resumed": resumed},
        "loads": loads,
        "timings": {"total_s": round(total_s, 3), "load_s": round(load_s, 3), "eval_s": round(eval_s, 3),
                    "examples": examples, "examples_per_s": round(examples / eval_s, 1) if eval_s else None},
    }
    write_json_atomic(folder / NXN_SUMMARY, summary)
    from merginguriel.plots import heatmap

    heatmap(matrix, folder / NXN_HEATMAP, f"NxN accuracy ({split})", xlabel="evaluated locale", ylabel="source model")
    write_manifest(folder, "nxn", backbone=layout.backbone, split=split, models=models, locales=locales,
                   model_hashes=hashes, data=dataclasses.asdict(data), batch_size=batch_size, device=device,
                   timings=summary["timings"], loads=loads)
    return folder


def _evaluate_cells(model, tokenizer, source: str, targets: list[str], split: str, data: DataConfig, batch_size: int,
                    device: str) -> list[Cell]:
    """One evaluation call for several target locales (the call's fixed cost is shared; its time is split by examples)."""
    from merginguriel.evaluation.evaluate import evaluate_model

    t0 = time.perf_counter()
    results = evaluate_model(model, tokenizer, list(targets), split, data, batch_size, device)
    seconds = time.perf_counter() - t0
    total = sum(int(results[t]["n"]) for t in targets) or 1
    return [{"source": source, "target": t, "accuracy": float(results[t]["accuracy"]),
             "macro_f1": float(results[t].get("macro_f1", float("nan"))), "n": int(results[t]["n"]),
             "seconds": round(seconds * int(results[t]["n"]) / total, 4),
             "predictions": results[t].get("predictions", "")} for t in targets]
