"""The report: verdicts per target, merges beside every baseline on the same rows with paired intervals, plots."""

from merginguriel.report.build import build_report
from merginguriel.report.rows import rows_from_db, rows_from_manifests
from merginguriel.report.verdict import Verdict, verdicts

__all__ = ["Verdict", "build_report", "rows_from_db", "rows_from_manifests", "verdicts"]
