"""`merginguriel report sweep --db results.sqlite` and `merginguriel report models --merged <folders>`: the two forms
of the report, one per kind of input."""

from __future__ import annotations

from typing import Optional


def report_sweep(db: str, output: Optional[str] = None, sweep: Optional[str] = None, overwrite: bool = False) -> tuple:
    """Report a sweep's results database: verdicts per target, merges beside every baseline, plots.

    Args:
        db: the results database (opened read-only).
        output: output folder (default: ``report/`` beside the database).
        sweep: only this sweep's rows (default: every row).
        overwrite: replace an existing output folder.
    """
    from pathlib import Path

    from merginguriel.report import build_report, rows_from_db
    from merginguriel.report.rows import features_from_db

    table = rows_from_db(db, sweep)
    out = output or str(Path(db).with_name("report"))
    return build_report(table, out, overwrite, features=features_from_db(db, sweep), sources={"db": str(db)})


def report_models(merged: list[str], output: str = "report", overwrite: bool = False) -> tuple:
    """Report merged models: verdicts per target, merges beside every baseline, plots. A model not yet judged on
    validation and test is judged now (its weights must be there) and the judgement is added to its manifest.

    Args:
        merged: merged model folders, their manifest.json files, folders above them, or globs.
        output: output folder.
        overwrite: replace an existing output folder.
    """
    from merginguriel.report import build_report, rows_from_manifests

    return build_report(rows_from_manifests(list(merged)), output, overwrite, sources={"merged": list(merged)})
