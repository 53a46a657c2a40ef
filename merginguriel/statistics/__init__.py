"""Per-source statistics for data-dependent merges (Fisher information, RegMean Gram matrices), cached per locale."""

from merginguriel.statistics.cache import COMPUTE_CALLS, ensure_statistics, statistics_folder

__all__ = ["COMPUTE_CALLS", "ensure_statistics", "statistics_folder"]
