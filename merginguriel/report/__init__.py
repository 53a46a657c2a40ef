"""Merges against baselines: the report core over a frame of result rows (table.py), baselines, plots, manifests."""

from merginguriel.report.baselines import target_baselines
from merginguriel.report.table import RESULT_COLUMNS, compare, markdown, to_markdown, write_report

__all__ = ["RESULT_COLUMNS", "compare", "markdown", "target_baselines", "to_markdown", "write_report"]
