"""The results database (claims, staleness, concurrent writer processes) and sweep grid expansion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from merginguriel.errors import InputError
from merginguriel.experiments.db import ResultsDB, Worker
from merginguriel.experiments.grid import expand

WORKER = textwrap.dedent(
    """
    import json, sys
    from merginguriel.experiments.db import ResultsDB
    db_path, keys_file, out = sys.argv[1:4]
    keys = json.load(open(keys_file))
    db = ResultsDB(db_path, timeout=60)
    db.plan("race", [(k, {"target": "sw-KE", "merge": {"method": "x"}, "i": i}) for i, k in enumerate(keys)])
    mine = []
    for k in keys:
        if db.claim(k) is not None:
            mine.append(k)
            assert db.finish(k, {"accuracy": 0.5, "by": %s}, {"total_s": 0.0}, None, None)
    json.dump(mine, open(out, "w"))
    """
)


def test_two_concurrent_writer_processes(tmp_path):
    db_path = tmp_path / "r.sqlite"
    keys = [f"k{i:04d}" for i in range(150)]
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER % "__import__('os').getpid()", str(db_path), str(tmp_path / "keys.json"), str(tmp_path / f"out{i}.json")],
            stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    claimed = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    # Every point claimed by exactly one process, and every row done once (the key is the primary key).
    assert sorted(claimed[0] + claimed[1]) == keys
    assert not set(claimed[0]) & set(claimed[1])
    with ResultsDB(db_path) as db:
        rows = db.rows()
        assert len(rows) == len(keys) and {r["status"] for r in rows} == {"done"}
        assert all(r["attempts"] == 1 for r in rows)
        by = {r["key"]: r["metrics"]["by"] for r in rows}
        # Each row records the process that claimed it (one process may claim all of them if it starts first).
        assert all(by[k] == procs[i].pid for i in range(2) for k in claimed[i])


def test_claim_rules_and_staleness(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    cfg = {"target": "sw-KE", "merge": {"method": "ties"}}
    assert db.plan("s", [("a", cfg), ("b", cfg), ("c", cfg)]) == 3
    assert db.plan("s", [("a", cfg)]) == 0  # planning again adds nothing
    me = Worker.current()
    assert db.claim("a", me) == cfg
    assert db.claim("a", me) is None  # held by a live process (this one)

    # A worker that died: a real process that claimed "b" and exited.
    code = f"from merginguriel.experiments.db import ResultsDB; ResultsDB({str(tmp_path / 'r.sqlite')!r}).claim('b')"
    subprocess.run([sys.executable, "-c", code], check=True)
    row = db.get("b")
    assert row["status"] == "running" and row["pid"] != os.getpid()
    assert db.claim("b", me) == cfg  # stale: its pid is gone
    assert db.get("b")["attempts"] == 2

    # Another host: only the heartbeat tells; fresh -> held, old -> stale.
    other = Worker("some-other-host", 12345, None)
    assert db.claim("c", other) == cfg
    assert db.claim("c", me, stale_after=60) is None
    db.conn.execute("UPDATE points SET heartbeat = ? WHERE key = 'c'", (time.time() - 120,))
    assert db.claim("c", me, stale_after=60) == cfg

    # Only the holder may finish; failed points are retried unless told not to.
    assert not db.finish("a", {"accuracy": 1.0}, {}, None, None, worker=other)
    assert db.fail("a", "boom", worker=me)
    assert db.claim("a", me, retry_failed=False) is None
    assert db.claim("a", me) == cfg
    assert db.finish("a", {"accuracy": 1.0}, {"total_s": 1}, "m.json", {"sources": ["x"]}, worker=me)
    assert db.claim("a", me) is None
    assert db.counts("s") == {"planned": 0, "running": 2, "done": 1, "failed": 0}
    db.put_features("a", "sw-KE", {"num_sources": 3.0})
    assert db.features()[0]["features"] == {"num_sources": 3.0}
    db.close()


@pytest.mark.parametrize("moment", ["claim written, not yet returned", "transaction begun, not yet committed"])
def test_a_stop_at_the_claim_gives_the_point_back(tmp_path, monkeypatch, moment):
    """A SIGTERM that lands inside the claim (after its row is written, or between its BEGIN and COMMIT) must still
    leave the point planned, not running until it goes stale (the window a stopped sweep once left open)."""
    import signal

    from merginguriel.errors import Stopped
    from merginguriel.experiments.runner import execute_point

    db_path = tmp_path / "r.sqlite"
    cfg = {"target": "sw-KE", "merge": {"method": "ties"}}
    with ResultsDB(db_path) as db:
        db.set_workdir(str(tmp_path))
        db.plan("s", [("a", cfg)])
    claim = ResultsDB.claim

    def stopped_claim(self, *args, **kwargs):
        if moment.startswith("claim written"):
            claim(self, *args, **kwargs)
        else:  # the stop arrives while the claim's transaction is still open
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("UPDATE points SET status = 'running', pid = ?, host = ? WHERE key = 'a'",
                              (os.getpid(), Worker.current().host))
        os.kill(os.getpid(), signal.SIGTERM)  # the handler execute_point installed raises at the next instruction
        time.sleep(5)
        raise AssertionError("the signal did not stop the claim")

    monkeypatch.setattr(ResultsDB, "claim", stopped_claim)
    with pytest.raises(Stopped):
        execute_point(str(db_path), "a")
    with ResultsDB(db_path) as db:
        row = db.get("a")
    assert row["status"] == "planned" and row["pid"] is None, dict(row)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the worker's handlers were put back


def test_grid_expansion():
    from merginguriel.jobs import CheckedJob

    points = expand(
        fixed={"backbone": "tiny", "selection": {"similarity": "real"}, "merge.seed": 7},
        grid={"target": ["sw-KE", "th-TH"], "selection.num_sources": [3, 5]},
        zips=[{"merge.method": ["ties", "dare_ties"], "merge.params": [{"density": 0.2}, {"density": 0.2, "p": 0.9}]}],
    )
    assert len(points) == 2 * 2 * 2 and all(isinstance(p, CheckedJob) for p in points)
    assert {(p.target, p.selection.num_sources, p.merge.method) for p in points} == {
        (t, k, m) for t in ["sw-KE", "th-TH"] for k in [3, 5] for m in ["ties", "dare_ties"]
    }
    for p in points:
        assert p.job.backbone == "tiny" and p.selection.similarity == "real" and p.merge.seed == 7
        assert p.merge.params == ({"density": 0.2} if p.merge.method == "ties" else {"density": 0.2, "p": 0.9})
        assert p.selection.weighting == "scores"  # defaults filled in
    keys = [p.key() for p in points]
    assert len(set(keys)) == len(points)
    # The key is a function of the job only: the same job rebuilt from its own record has the same key; the device
    # does not change it, and settings that do not apply (softmax temperature with score weights) neither.
    from merginguriel.jobs import job_from_dict

    p = points[0]
    assert job_from_dict(json.loads(json.dumps(p.to_dict()))).key() == keys[0]
    assert job_from_dict({**p.to_dict(), "device": "cuda"}).key() == keys[0]
    assert job_from_dict({**p.to_dict(), "selection": {**p.to_dict()["selection"], "temperature": 9.0}}).key() == keys[0]
    assert job_from_dict({**p.to_dict(), "selection": {**p.to_dict()["selection"], "num_sources": 4}}).key() != keys[0]
    # Jobs that differ only in where they are judged share one merged model (folder name).
    other = job_from_dict({**p.to_dict(), "evaluate": {"splits": ["validation"]}})
    assert other.key() != keys[0] and other.check().run_name() == p.run_name()
    # Same point reached twice -> one point.
    assert len(expand(fixed={"selection": {"similarity": "uriel"}}, grid={"target": ["sw-KE", "sw-KE"]})) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid": {"selection.num_source": [3]}, "fixed": {"target": "sw-KE"}}, "unknown selection option.*num_source.*num_sources"),
        ({"grid": {"targett": ["sw-KE"]}}, "unknown merge job key.*targett"),
        ({"grid": {"target": []}}, "non-empty list"),
        ({"grid": {"target": ["xx-XX"]}, "fixed": {"selection.similarity": "uriel"}}, "unknown locale"),
        ({"fixed": {"selection.similarity": "uriel"}}, "chooses sources for a target"),
        ({"grid": {"target": ["sw-KE"]}, "zips": [{"merge.method": ["a", "b"], "merge.params": [{}]}]}, "same length"),
        ({"grid": {"target": ["sw-KE"], "merge.method": ["tiess"]}, "fixed": {"selection.similarity": "uriel"}},
         "unknown merge method 'tiess'"),
        ({"fixed": {"target": "sw-KE", "selection.similarity": "uriel", "merge": {"method": "ties", "params": {"k": 20}}}},
         "no parameter"),
        ({"fixed": {"target": "sw-KE", "selection.similarity": "uriel", "merge.method": "adamerging",
                    "adamerging": {"stepz": 3}}}, "method 'adamerging' has no parameter.*'stepz'"),
        # values out of range are refused at planning (issue: they used to fail at every point)
        ({"fixed": {"target": "sw-KE", "selection.similarity": "uriel", "merge": {"method": "ties", "params": {"density": 1.5}}}},
         "density"),
        ({"fixed": {"target": "sw-KE", "selection.similarity": "urial"}}, "unknown selection.similarity 'urial'"),
        ({"fixed": {"target": "sw-KE", "selection": {"similarity": "uriel", "num_sources": 4, "candidates": ["de-DE", "fr-FR"]}}},
         "num_sources=4 but sw-KE has only 2 candidate"),
    ],
)
def test_grid_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        expand(**kwargs)


def test_every_shipped_config_loads():
    """Every YAML shipped in configs/ (merginguriel.configs) parses through its command: fit recipes through the fit parser,
    sweeps (the quick start's and the ablations) into checked merge jobs, the quick start config into its command."""
    import yaml

    from merginguriel.cli.experiment import experiment
    from merginguriel.cli.parse import parse_function_args
    from merginguriel.quickstart import run_quickstart as quickstart
    from merginguriel.configs import config_path, shipped
    from merginguriel.experiments.runner import Sweep

    names = shipped()
    assert {"fit-embedded", "fit-xlmr-base", "quickstart", "quickstart_sweep", "ablations/uriel_vs_real",
            "ablations/uriel_vs_real_embedded", "ablations/dare", "ablations/consensus_neuromerging"} <= set(names)
    for name in names:
        text = yaml.safe_load(config_path(name).read_text())
        if name.startswith("fit-"):
            # the fit parser itself reads the recipe (--print_config stops before anything is built)
            proc = subprocess.run([sys.executable, "-m", "merginguriel.cli.main", "fit", "--config", name, "--print_config"],
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
            printed = yaml.safe_load(proc.stdout)
            assert printed["model"]["backbone"] == text["model"]["backbone"]
            assert printed["model"]["learning_rate"] == pytest.approx(text["model"]["learning_rate"])
        elif name.split("/")[-1].startswith("study"):
            from merginguriel.cli.study import study
            from merginguriel.experiments.study import Study

            kwargs = parse_function_args(study, ["--config", str(config_path(name))], "s")
            kwargs.pop("dry_run")
            plan = Study(**kwargs)
            assert plan.recipe() and config_path(plan.recipe()) and plan.sweep_plan().points(), name
            assert all(p.job.backbone == plan.backbone and p.selection.candidates == plan.locales
                       for p in plan.sweep_plan().points()), name
        elif name == "quickstart":
            kwargs = parse_function_args(quickstart, ["--config", str(config_path(name))], "q")
            assert config_path(kwargs["sweep"]) and config_path(kwargs["fit_config"])
            assert len(kwargs["locales"]) == 8 and kwargs["targets_per_end"] == 1
        elif name == "quickstart_sweep":  # its targets come from the quick start's rule: each would make these points
            kwargs = parse_function_args(experiment, ["--config", str(config_path(name))], "e")
            kwargs.pop("dry_run")
            assert "target" not in kwargs["grid"] and "target" not in kwargs["fixed"]
            kwargs["grid"] = {"target": ["sw-KE"], **kwargs["grid"]}
            kwargs["fixed"]["selection"]["candidates"] = ["sw-KE", "sq-AL", "vi-VN", "th-TH"]
            points = Sweep(**kwargs).points()
            assert len(points) == 8 and all(p.job.backbone == "embedded" for p in points)
        else:
            kwargs = parse_function_args(experiment, ["--config", str(config_path(name))], "e")
            kwargs.pop("dry_run")
            points = Sweep(**kwargs).points()
            assert points, name
            embedded = name.endswith("_embedded")
            assert all((p.job.backbone == "embedded") == embedded for p in points), name
            if name.startswith("ablations/") and not embedded:
                assert f"{name}_embedded" in names
                assert all(p.job.data.source == "hub" and p.job.backbone == "FacebookAI/xlm-roberta-base" for p in points)
    pts = Sweep(**{k: v for k, v in yaml.safe_load(config_path("ablations/uriel_vs_real").read_text()).items()}).points()
    assert {p.target for p in pts} == {"sq-AL", "sw-KE", "vi-VN", "th-TH", "fi-FI", "tr-TR"}
    assert {(p.selection.similarity, p.selection.include_target) for p in pts} == {
        ("uriel", False), ("uriel", True), ("real", False), ("real", True)}


def test_bad_sweep_fails_early_and_writes_nothing(tmp_path, capsys):
    from merginguriel.cli.main import main

    cfg = tmp_path / "bad.yaml"
    db = tmp_path / "r.sqlite"
    cfg.write_text(f"name: bad\ndb: {db}\ngrid:\n  target: [sw-KE]\n  selection.num_source: [3]\n")
    assert main(["experiment", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown selection option(s) num_source" in err and "num_sources" in err and "Traceback" not in err
    assert not db.exists()


def test_a_full_disk_under_the_database_is_named(tmp_path):
    from conftest import small_disk

    from merginguriel.errors import DiskFullError

    with small_disk(tmp_path / "disk", 256 * 1024) as disk:
        db = ResultsDB(disk / "results.sqlite")
        with pytest.raises(DiskFullError, match=f"no space left on the device while writing {disk / 'results.sqlite'}"):
            for i in range(100):
                db.plan("full", [(f"k{i}-{j}", {"target": "sw-KE", "pad": "x" * 4000}) for j in range(10)])
        db.close()
