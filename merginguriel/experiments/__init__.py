"""Experiments at scale: sweeps of merge jobs, the results database, the launchers, merge-or-not advice."""

from merginguriel.experiments.db import ResultsDB
from merginguriel.experiments.grid import expand
from merginguriel.experiments.runner import Sweep, execute_point, run_sweep

__all__ = ["ResultsDB", "Sweep", "execute_point", "expand", "run_sweep"]
