"""How fast `merginguriel <command> --help` answers: each command's module is imported only when used, so help needs
only the command's typed signature (target: under 1 s). The LightningCLI commands (fit, validate, test) must import
Lightning and build the Trainer's parser; their row shows that cost.

    .venv/bin/python benchmarks/bench_cli.py [--repeats 5]

Prints a Markdown table (fastest of --repeats runs of a fresh process each, so machine noise only adds time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time


def forms() -> list[list[str]]:
    from merginguriel.cli.main import COMMANDS, FORMS

    out = []
    for name in COMMANDS:
        if name in FORMS:
            out += [[name, form] for form in FORMS[name]]
        else:
            out.append([name])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    print(f"{date}; {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}; Python {platform.python_version()}\n")
    print("| command | `--help` wall (fastest of %d) | under 1 s |" % args.repeats)
    print("|---|---|---|")
    for cmd in forms():
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "merginguriel.cli.main", *cmd, "--help"], env=env,
                                  capture_output=True, text=True)
            best = min(best, time.perf_counter() - t)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} --help failed:\n{proc.stderr[-2000:]}")
        print(f"| {' '.join(cmd)} | {best:.2f} s | {'yes' if best < 1 else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
