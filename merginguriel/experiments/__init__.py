"""Experiments at scale: sweep configs, the results database, the point runner and launchers, merge-or-not advice."""

from merginguriel.experiments.db import ResultsDB
from merginguriel.experiments.grid import expand, point_key
from merginguriel.experiments.runner import Sweep, execute_point, run_sweep

__all__ = ["ResultsDB", "Sweep", "execute_point", "expand", "point_key", "run_sweep"]
