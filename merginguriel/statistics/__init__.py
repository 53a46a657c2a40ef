"""Per-source statistics for data-dependent merges (Fisher information, RegMean Gram matrices), cached per locale."""

from merginguriel.statistics.cache import COMPUTE_CALLS, statistics_folder, statistics_folders
from merginguriel.statistics.examples import StatisticsData, statistics_rows

__all__ = ["COMPUTE_CALLS", "StatisticsData", "statistics_folder", "statistics_folders", "statistics_rows"]
