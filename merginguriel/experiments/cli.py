"""`merginguriel experiment --config configs/ablations/<name>.yaml [--dry-run]`: run a sweep into a results database."""

from __future__ import annotations

import sys


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from merginguriel.experiments.runner import Sweep

    parser = ArgumentParser(
        prog="merginguriel experiment",
        description="Run a sweep (fixed settings + a grid over any config keys): every point is select -> merge -> test, "
        "recorded as one row of a results database. Rerunning skips finished points; a killed run resumes.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="the sweep YAML (see configs/ablations/)")
    parser.add_class_arguments(Sweep, as_group=False)
    parser.add_argument("--dry_run", "--dry-run", type=bool, default=False, nargs="?", const=True,
                        help="list the points (with their status in the database) and stop")
    return parser


def main(argv: list[str]) -> int:
    from merginguriel.experiments.runner import Sweep, run_sweep

    parser = build_parser()
    cfg = parser.parse_args(argv)
    fields = {k: cfg[k] for k in Sweep.__dataclass_fields__}
    sweep = Sweep(**{k: (v if not hasattr(v, "as_dict") else v.as_dict()) for k, v in fields.items()})
    result = run_sweep(sweep, dry_run=bool(cfg.dry_run))
    if cfg.dry_run:
        return 0
    counts = result["counts"]
    print(
        f"sweep {sweep.name!r}: {counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
        f"{counts.get('running', 0)} running, {counts.get('planned', 0)} planned; results in {sweep.db}"
        f" (`merginguriel report --db {sweep.db}`)"
    )
    if counts.get("failed"):
        from merginguriel.experiments.db import ResultsDB

        with ResultsDB(sweep.db) as db:
            for row in db.rows(sweep=sweep.name, status="failed")[:5]:
                print(f"  failed {row['key'][:12]} {row['target']} {row['method']}: {(row['error'] or '').splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0
