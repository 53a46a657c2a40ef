"""Run a command line in THIS process and report its peak memory, measured inside it with merginguriel's probe.

    python benchmarks/peak.py -m merginguriel.cli.main merge ...        # a module's command line
    python benchmarks/peak.py --entry-point mergekit-yaml cfg.yml out/  # an installed console script

Prints ``PEAK_RSS_MB=<VmHWM>`` on stderr at exit. Why not the parent's ``wait4``: a child's ``ru_maxrss`` starts from
the parent's peak at fork and survives exec, so it reports the benchmark's own footprint. Works in another tool's venv
too, with the repository on PYTHONPATH (merginguriel.memory needs only the standard library).
"""

from __future__ import annotations

import atexit
import runpy
import sys

from merginguriel.memory import process_peak_mb


def main() -> None:
    atexit.register(lambda: print(f"PEAK_RSS_MB={process_peak_mb():.1f}", file=sys.stderr, flush=True))
    kind, target, *args = sys.argv[1:]
    sys.argv = [target, *args]
    if kind == "-m":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif kind == "--entry-point":
        from importlib.metadata import entry_points

        (ep,) = [e for e in entry_points(group="console_scripts") if e.name == target]
        sys.exit(ep.load()())
    else:
        raise SystemExit("usage: peak.py -m MODULE ARGS... | --entry-point NAME ARGS...")


if __name__ == "__main__":
    main()
