"""Benchmark: sweep overhead per grid point (budget < 2 s) and results-database queries at 10,000 rows (budget < 1 s).

Overhead = the wall time a point costs the runner minus the merge and the evaluation themselves: planning, the claim
and result transactions, the heartbeat thread, selection, the manifest copy and the model deletion. Measured on a tiny
model family (so merge and evaluation are small but real) with `run_sweep` in this process, after one warm-up point
(imports, URIEL and tokenisation caches are one-off costs of a process, not of a point).

    .venv/bin/python benchmarks/bench_sweep.py [--points 12] [--rows 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sweep_overhead(work: Path, n_points: int) -> dict:
    from conftest import write_class_release as write_release
    from conftest import make_family

    from merginguriel.experiments.db import ResultsDB
    from merginguriel.experiments.runner import Sweep, run_sweep

    locales = ["sw-KE", "th-TH", "vi-VN", "fi-FI", "tr-TR", "sq-AL"]
    make_family(work, locales)
    data = write_release(work / "data", locales, {"train": 10, "dev": 50, "test": 50})
    fixed = {"backbone": "tiny", "root": str(work), "data": {"source": "release", "data_path": str(data)},
             "selection": {"similarity": "uriel"}, "features": {"enabled": False}, "merge": {"method": "similarity"}}
    run_sweep(Sweep(name="warmup", db=str(work / "warm.sqlite"), fixed=fixed, grid={"target": ["sw-KE"]}))
    methods = ["similarity", "average", "task_arithmetic"]
    targets = locales[: max(1, n_points // (len(methods) * 2))]
    grid = {"target": targets, "merge.method": methods, "selection.num_sources": [2, 3]}
    sweep = Sweep(name="bench", db=str(work / "bench.sqlite"), fixed=fixed, grid=grid, heartbeat_s=1.0)
    t = time.perf_counter()
    run_sweep(sweep)
    wall = time.perf_counter() - t
    with ResultsDB(sweep.db) as db:
        rows = db.rows(status="done")
    work_s = sum(r["timings"]["merge_s"] + r["timings"]["evaluate_s"] for r in rows)
    inside = [r["timings"]["overhead_s"] for r in rows]
    return {"points": len(rows), "wall_s": wall, "merge_eval_s": work_s, "per_point_overhead_s": (wall - work_s) / len(rows),
            "max_in_point_overhead_s": max(inside)}


def database_queries(work: Path, n_rows: int) -> dict:
    from merginguriel.experiments.db import ResultsDB, Worker
    from merginguriel.experiments.frame import results_frame
    from merginguriel.experiments.grid import expand, point_key

    template = expand(fixed={"target": "sw-KE"})[0]
    rng = random.Random(0)
    db = ResultsDB(work / "big.sqlite")
    points = []
    for i in range(n_rows):
        cfg = json.loads(json.dumps(template))
        cfg["merge"]["seed"] = i
        points.append((point_key(cfg), cfg))
    t = time.perf_counter()
    db.plan("big", points)
    plan_s = time.perf_counter() - t
    me = Worker.current()
    with db.transaction() as conn:  # finish them all in one go (the per-row path is what the sweep uses)
        for key, cfg in points:
            conn.execute(
                "UPDATE points SET status='done', metrics=?, timings=?, selection=?, host=?, pid=? WHERE key=?",
                (json.dumps({"split": "test", "accuracy": rng.random(), "macro_f1": rng.random(), "n": 100}),
                 json.dumps({"merge_s": 1.0, "evaluate_s": 1.0}),
                 json.dumps({"sources": ["th-TH", "vi-VN", "fi-FI"], "weights": [0.4, 0.3, 0.3], "similarity": "uriel",
                             "weighting": "scores"}), me.host, me.pid, key),
            )
    out = {"plan_s": plan_s}
    for name, fn in [
        ("counts", lambda: db.counts()),
        ("get one row", lambda: db.get(points[n_rows // 2][0])),
        ("claim one row", lambda: db.claim(points[-1][0])),
        ("all done rows", lambda: db.rows(status="done")),
        ("results_frame", lambda: results_frame(db)),
    ]:
        t = time.perf_counter()
        res = fn()
        out[name] = time.perf_counter() - t
        if name == "results_frame":
            assert len(res) == n_rows
    db.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--rows", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        ov = sweep_overhead(work / "sweep", args.points)
        q = database_queries(work, args.rows)
    print(f"## sweep overhead per grid point ({ov['points']} points, tiny models)\n")
    print("| measure | seconds | budget |")
    print("|---|---|---|")
    print(f"| sweep wall time | {ov['wall_s']:.2f} | |")
    print(f"| merge + evaluation inside the points | {ov['merge_eval_s']:.2f} | |")
    print(f"| overhead per point (wall - merge - evaluation) / points | {ov['per_point_overhead_s']:.3f} | < 2 |")
    print(f"| largest in-point overhead (selection, bookkeeping) | {ov['max_in_point_overhead_s']:.3f} | < 2 |")
    print(f"\n## results database with {args.rows} rows\n")
    print("| query | seconds | budget |")
    print("|---|---|---|")
    print(f"| plan {args.rows} points (one transaction) | {q['plan_s']:.3f} | |")
    for name in ["counts", "get one row", "claim one row", "all done rows", "results_frame"]:
        print(f"| {name} | {q[name]:.3f} | < 1 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
