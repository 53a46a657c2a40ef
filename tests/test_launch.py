"""Submitit jobs on the local cluster as a study launches them: at most ``local_max_jobs`` run at once (measured from
the jobs' own clocks), and a failed job comes back with its reason and the tail of its stderr."""

from __future__ import annotations

import time
from pathlib import Path

from merginguriel.experiments.launch import check_settings, run_jobs

HERE = Path(__file__).resolve().parent


def hold(path: str, seconds: float) -> str:
    """A job that holds its slot for ``seconds`` and writes when it ran (by its own clock)."""
    start = time.time()
    time.sleep(seconds)
    Path(path).write_text(f"{start} {time.time()}")
    return "held"


def fail(message: str) -> None:
    print("about to fail", flush=True)
    raise ValueError(message)


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_local_jobs_run_at_most_the_cap_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))  # the jobs import this module to find their function
    log: list[str] = []
    calls = [(str(tmp_path / f"{i}.txt"), 1.5) for i in range(5)]
    settings = check_settings({"cluster": "local", "timeout_min": "5", "local_max_jobs": 2})
    results, failed = run_jobs(hold, calls, [f"t{i}" for i in range(5)], settings, tmp_path / "jobs", "demo", log.append)
    assert failed == {} and results == {f"t{i}": "held" for i in range(5)}
    intervals = [tuple(map(float, (tmp_path / f"{i}.txt").read_text().split())) for i in range(5)]
    assert _most_at_once(intervals) == 2  # never more than the cap, and the cap was used
    assert log[0] == f"[demo] submitted 5 jobs to local, at most 2 at once, time limit 5 min each (logs in {tmp_path / 'jobs'})"
    assert sorted(line.split("] ")[1].split(" (job")[0] for line in log[1:]) == [f"done    t{i}" for i in range(5)]


def test_a_failed_job_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    log: list[str] = []
    results, failed = run_jobs(fail, [("the disk said no",)], ["broken"], check_settings({"cluster": "local"}),
                               tmp_path / "jobs", "demo", log.append)
    assert results == {} and list(failed) == ["broken"]
    why = failed["broken"]
    assert why.reason == "ValueError: the disk said no"
    assert any('raise ValueError(message)' in line for line in why.stderr_tail) and Path(why.log).is_file()
    assert "about to fail" not in "\n".join(why.stderr_tail)  # stdout is not stderr
    assert log[-1].startswith(f"[demo 1/1] failed  broken: job {why.job_id}: ValueError: the disk said no\n    | ")
    assert log[-1].endswith(f"    log: {why.log}")
