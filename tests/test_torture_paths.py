"""The torture suite, round 2: paths that cannot be written, files that are not what their name claims, runs that did
nothing, locks, and stops by SIGTERM / SIGINT. Each bad input ends in one clear line (exit 2, the path named, no
traceback) and leaves nothing behind; each stop ends with 128 + the signal and one line that says how to resume, with
nothing left behind and a rerun equal to an uninterrupted run. The stops are in the slow part (`pytest -m slow`)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_clear_error, files_under, make_family, run_command, small_disk, write_release_data

FAMILY = ["de-DE", "fr-FR", "sw-KE"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A tiny family under ``<ws>/tiny`` and release data for its locales under ``<ws>/data``."""
    root = tmp_path_factory.mktemp("paths")
    make_family(root, FAMILY)
    write_release_data(root / "data", FAMILY, per_intent=(2, 1, 1))
    return root


def merge_args(ws: Path, out: Path, *sources: str, extra=()) -> list:
    return ["merge", "--root", ws, "--backbone", "tiny", "--target", "sw-KE", "--progress", "false", "--evaluate.splits",
            "[]", "--selection.sources", *(sources or ("de-DE", "fr-FR")), "--merge.method", "average", "--output", out,
            *extra]


def sweep_args(ws: Path, db, *extra: str) -> list:
    fixed = (f"{{root: {ws}, backbone: tiny, data: {{source: release, data_path: {ws / 'data'}}}, "
             "selection: {sources: [de-DE, fr-FR]}, evaluate: {splits: [validation], features: false}}")
    return ["experiment", "--db", db, "--fixed", fixed, "--grid", "{target: [sw-KE], merge.method: [average, ties]}", *extra]


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """``merginguriel <args>`` in this process (the same entry point, without a new interpreter's start-up: the many
    variants of one case run here, one of each class also as a real subprocess); returns (exit status, stderr)."""
    from merginguriel.cli.main import main

    monkeypatch.chdir(tmp_path)

    def run(*args) -> tuple[int, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err

    return run


def refused(result: tuple[int, str], *needles: str) -> None:
    code, err = result
    assert code == 2, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert len(err.strip().splitlines()) == 1, err  # one line


@pytest.fixture
def read_only(tmp_path):
    """A read-only filesystem (skipped where this machine cannot mount one)."""
    with small_disk(tmp_path / "ro", 65536, "ro") as folder:
        yield folder


# --- output paths that cannot be written ---------------------------------------------------------------------------------
def test_merge_output_under_a_file(ws, tmp_path):
    (tmp_path / "afile").write_text("mine")
    proc = run_command(*merge_args(ws, tmp_path / "afile" / "deeper" / "out"))
    assert_clear_error(proc, f"{tmp_path / 'afile'} is a file, not a folder", "remove or rename that file")
    assert files_under(tmp_path) == {"afile"} and (tmp_path / "afile").read_text() == "mine"


def test_merge_output_on_a_read_only_filesystem(ws, read_only):
    proc = run_command(*merge_args(ws, read_only / "out"))
    assert_clear_error(proc, f"{read_only}", "is on a read-only filesystem", "write elsewhere")
    assert not files_under(read_only)


@pytest.mark.parametrize("command", ["nxn", "report"])
def test_other_outputs_under_a_file(ws, tmp_path, cli, command):
    (tmp_path / "afile").write_text("mine")
    out = tmp_path / "afile" / "out"
    args = {"nxn": ["nxn", "--root", ws, "--backbone", "tiny", "--models", "de-DE", "--locales", "de-DE", "--data.source",
                    "release", "--data.data_path", ws / "data", "--progress", "false", "--output", out],
            "report": ["report", "models", "--merged", ws / "tiny" / "finetuned" / "de-DE", "--output", out]}[command]
    result = cli(*args)
    if command == "report":  # a fine-tune is no merged model: refused before the output is looked at
        refused(result)
    else:
        refused(result, f"{tmp_path / 'afile'} is a file, not a folder")
    assert files_under(tmp_path) <= {"afile", "checkpoints", *(str(p.relative_to(tmp_path)) for p in (tmp_path / "checkpoints").rglob("*"))}
    assert (tmp_path / "afile").read_text() == "mine"


def test_predict_into_an_existing_directory(ws, tmp_path):
    (tmp_path / "preds").mkdir()
    proc = run_command("predict", "--checkpoint", ws / "tiny" / "finetuned" / "de-DE", "--locale", "de-DE", "--split",
                       "validation", "--root", ws, "--data.source", "release", "--data.data_path", ws / "data",
                       "--output", tmp_path / "preds")
    assert_clear_error(proc, f"--output {tmp_path / 'preds'} is a directory", "give a file path")
    assert not files_under(tmp_path / "preds")


@pytest.mark.slow
def test_test_metrics_into_an_existing_directory(ws, tmp_path):
    (tmp_path / "metrics").mkdir()
    proc = run_command("test", "--model.checkpoint", ws / "tiny" / "finetuned" / "de-DE", "--model.root", ws,
                       "--model.backbone", ws / "tiny" / "base", "--model.base_seed", "0", "--data.locales", "de-DE",
                       "--data.source", "release", "--data.data_path", ws / "data", "--trainer.enable_progress_bar",
                       "false", "--output", tmp_path / "metrics")
    assert_clear_error(proc, f"{tmp_path / 'metrics'} is a directory, not a file")
    assert not files_under(tmp_path / "metrics")


def test_each_os_error_reads_as_what_is_wrong(tmp_path):
    """A failed move onto a directory names the directory (the destination), not the temporary it moved."""
    import errno

    from merginguriel.cli.errors import message_for

    (tmp_path / "adir").mkdir()
    (tmp_path / "x.tmp").write_text("x")
    with pytest.raises(IsADirectoryError) as info:
        os.replace(tmp_path / "x.tmp", tmp_path / "adir")
    assert message_for(info.value).startswith(f"{tmp_path / 'adir'} is a directory, not a file")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError) as info:
        (tmp_path / "afile" / "sub").mkdir(parents=True)
    assert message_for(info.value).startswith(f"{tmp_path / 'afile'} is a file, not a folder")
    assert "read-only filesystem" in message_for(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out"))
    assert message_for(OSError(errno.EEXIST, "File exists", str(tmp_path / "adir"))) is None  # a folder: not this case


def test_os_errors_without_a_users_path_stay_bugs():
    """The boundary maps only what names a path the user gave; other errors keep their traceback."""
    import errno

    from merginguriel.cli.errors import message_for

    assert message_for(OSError(errno.EACCES, "Permission denied")) is None  # no path: a bug
    assert message_for(KeyError("x")) is None and message_for(sqlite3.OperationalError("no such table: t")) is None
    assert "permission denied" in message_for(PermissionError(errno.EACCES, "Permission denied", "/x/out"))
    during = RuntimeError("a bug while handling")
    during.__context__ = PermissionError(errno.EACCES, "Permission denied", "/x/out")
    assert message_for(during) is None  # raised while handling a user's error: still a bug


# --- files that are not what their name claims ---------------------------------------------------------------------------
CONFIGS = {
    "a list": (b"- target: sw-KE\n- target: de-DE\n", "is a list, not a mapping"),
    "a scalar": (b"42\n", "is a number, not a mapping"),
    "text": (b"just some words\n", "is a single text value, not a mapping"),
    "empty": (b"", "is empty"),
    "comments only": (b"# nothing here\n", "is empty"),
    "binary": (bytes(range(256)) * 4, "is not UTF-8 text (byte 0x80 at offset 128)"),
    "invalid YAML": (b"grid: {target: [sw-KE\n", "line 2 column 1: invalid YAML"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_a_config_that_is_not_a_mapping(tmp_path, cli, case):
    content, needle = CONFIGS[case]
    (tmp_path / "sweep.yaml").write_bytes(content)
    refused(cli("experiment", "-c", tmp_path / "sweep.yaml"), f"config {tmp_path / 'sweep.yaml'}", needle)
    assert files_under(tmp_path) == {"sweep.yaml"}


def test_a_binary_config_through_the_command_line(tmp_path):
    (tmp_path / "sweep.yaml").write_bytes(CONFIGS["binary"][0])
    proc = run_command("experiment", "-c", tmp_path / "sweep.yaml", cwd=tmp_path)
    assert_clear_error(proc, f"config {tmp_path / 'sweep.yaml'} is not UTF-8 text", "save it as UTF-8 YAML")
    assert "UnicodeDecodeError" not in proc.stderr and files_under(tmp_path) == {"sweep.yaml"}


@pytest.mark.parametrize("case", ["a list", "binary", "empty"])
def test_a_mergekit_config_that_is_not_a_mapping(ws, tmp_path, cli, case):
    content, needle = CONFIGS[case]
    (tmp_path / "mergekit.yml").write_bytes(content)
    refused(cli("merge", "--root", ws, "--backbone", "tiny", "--target", "sw-KE", "--mergekit", tmp_path / "mergekit.yml",
                "--output", tmp_path / "out"), f"mergekit config {tmp_path / 'mergekit.yml'}", needle)
    assert files_under(tmp_path) == {"mergekit.yml"}


@pytest.mark.parametrize("command", ["merge", "fit", "study", "nxn"])
def test_every_command_checks_its_config(tmp_path, cli, command):
    (tmp_path / "c.yaml").write_bytes(b"- a\n")
    refused(cli(command, "--config", tmp_path / "c.yaml"), "is a list, not a mapping")
    refused(cli(command, "-c", tmp_path), f"config {tmp_path} is a directory")
    assert files_under(tmp_path) == {"c.yaml"}


def _not_results(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")


DATABASES = {
    "a directory": (lambda p: p.mkdir(), "is a directory, not a SQLite file"),
    "a text file": (lambda p: p.write_text("key,accuracy\nabc,0.5\n" * 20), "is not a SQLite database"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(4096)), "is not a SQLite database"),
}


@pytest.mark.parametrize("case", list(DATABASES))
@pytest.mark.parametrize("command", ["experiment", "report"])
def test_a_results_database_that_is_not_one(ws, tmp_path, cli, case, command):
    make, needle = DATABASES[case]
    db = tmp_path / "results.sqlite"
    make(db)
    before = files_under(tmp_path)
    args = sweep_args(ws, db) if command == "experiment" else ["report", "sweep", "--db", db]
    refused(cli(*args), f"results database {db} {needle}", "--db")
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("command", ["experiment", "report"])
def test_a_results_database_that_is_not_one_through_the_command_line(ws, tmp_path, command):
    db = tmp_path / "results.sqlite"
    if command == "experiment":
        db.mkdir()
    else:
        db.write_text("key,accuracy\n")
    args = sweep_args(ws, db) if command == "experiment" else ["report", "sweep", "--db", db]
    needle = "is a directory, not a SQLite file" if command == "experiment" else "is not a SQLite database"
    assert_clear_error(run_command(*args, cwd=tmp_path), f"results database {db} {needle}")
    assert files_under(tmp_path) == {"results.sqlite"}


def test_report_of_a_sqlite_file_that_holds_no_sweep(tmp_path, cli):
    _not_results(tmp_path / "other.sqlite")
    refused(cli("report", "sweep", "--db", tmp_path / "other.sqlite"),
            f"{tmp_path / 'other.sqlite'} is a SQLite database but not a sweep's results database")
    assert files_under(tmp_path) == {"other.sqlite"}


def test_sweep_database_under_a_file(ws, tmp_path, cli):
    (tmp_path / "afile").write_text("mine")
    refused(cli(*sweep_args(ws, tmp_path / "afile" / "results.sqlite")), f"{tmp_path / 'afile'} is a file, not a folder")
    assert files_under(tmp_path) == {"afile"}


@pytest.mark.parametrize("params, needle", [
    ('["density=0.2"]', "must be a mapping of name: value, not 'density=0.2'"),
    ("[[0.2]]", "must be a mapping of name: value, not [0.2]"),
    ("[0.2]", "must be a mapping of name: value, not 0.2"),
])
def test_sweep_grid_params_that_are_not_mappings(ws, tmp_path, cli, params, needle):
    args = sweep_args(ws, tmp_path / "r.sqlite")
    args[args.index("--grid") + 1] = f"{{target: [sw-KE], merge.method: [ties], merge.params: {params}}}"
    if params.startswith('["'):  # the case the issue met, as a user meets it
        assert_clear_error(run_command(*args, cwd=tmp_path), needle, "merge.params: [{density: 0.2}]")
    else:
        refused(cli(*args), needle, "merge.params: [{density: 0.2}]")
    assert not files_under(tmp_path)


# --- sharded weights read through their index ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sharded(ws, tmp_path_factory) -> Path:
    """fr-FR's fine-tune saved as 7 shards with model.safetensors.index.json (as save_pretrained shards a model)."""
    from transformers import AutoModelForSequenceClassification

    src, out = ws / "tiny" / "finetuned" / "fr-FR", tmp_path_factory.mktemp("sharded") / "fr-FR"
    AutoModelForSequenceClassification.from_pretrained(src).save_pretrained(out, max_shard_size="20KB")
    for f in src.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "config.json", "manifest.json"):
            shutil.copy(f, out)
    assert len(list(out.glob("*.safetensors"))) > 3
    return out


def _shard(folder: Path, i: int) -> Path:
    return sorted(folder.glob("model-*.safetensors"))[i]


def _index(folder: Path, change) -> None:
    path = folder / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    change(index["weight_map"])
    path.write_text(json.dumps(index))


def _swap_shards(weight_map: dict) -> None:
    a, b = sorted(weight_map)[:2]
    if weight_map[a] == weight_map[b]:
        b = next(t for t in weight_map if weight_map[t] != weight_map[a])
    weight_map[a], weight_map[b] = weight_map[b], weight_map[a]


SHARDS = {
    "a missing shard": (lambda d: _shard(d, 2).unlink(), ["model-00003-of-", "named by model.safetensors.index.json are missing", "6 of 7 present"]),
    "a truncated shard": (lambda d: _shard(d, 1).write_bytes(_shard(d, 1).read_bytes()[:-64]), ["model-00002-of-", "is truncated"]),
    "an unlisted shard": (lambda d: shutil.copy(_shard(d, 0), d / "model-00009-of-00009.safetensors"),
                          ["model-00009-of-00009.safetensors is not listed in model.safetensors.index.json"]),
    "an index from another save": (lambda d: _index(d, _swap_shards), ["model.safetensors.index.json puts tensor", "but it is in"]),
    "an index missing a tensor": (lambda d: _index(d, lambda m: m.pop(sorted(m)[0])), ["does not list"]),
    "an index that is not JSON": (lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": '),
                                  ["model.safetensors.index.json, line 1 column 16: invalid JSON"]),
    "an index without a weight map": (lambda d: (d / "model.safetensors.index.json").write_text("[1, 2]"), ["has no weight_map"]),
}


def test_a_sharded_source_reads_as_its_single_file_original(ws, sharded):
    from merginguriel.merging.checkpoint import Checkpoint, Item

    one, many = Checkpoint(ws / "tiny" / "finetuned" / "fr-FR", "one"), Checkpoint(sharded, "many")
    assert len(many.files) > 3 and set(one.tensors) == set(many.tensors)
    items = [Item(n, 0, t.shape[0] if t.shape else 1) for n, t in one.tensors.items()]
    a, b = one.read(items), many.read(items)
    assert all(a[i].equal(b[i]) for i in items)


@pytest.mark.slow
def test_a_sharded_source_is_read_through_its_index(ws, sharded, tmp_path):
    """The intact sharded copy merges to the same bytes as the single-file original."""
    one = run_command(*merge_args(ws, tmp_path / "one", "de-DE", str(ws / "tiny" / "finetuned" / "fr-FR")))
    many = run_command(*merge_args(ws, tmp_path / "many", "de-DE", str(sharded)))
    assert one.returncode == 0 and many.returncode == 0, one.stderr + many.stderr
    assert (tmp_path / "one" / "model.safetensors").read_bytes() == (tmp_path / "many" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("case", list(SHARDS))
def test_a_broken_sharded_source_is_named(sharded, tmp_path, case):
    from merginguriel.errors import InputError
    from merginguriel.merging.checkpoint import Checkpoint

    make, needles = SHARDS[case]
    broken = tmp_path / "fr-FR"
    shutil.copytree(sharded, broken)
    make(broken)
    with pytest.raises(InputError) as info:
        Checkpoint(broken, "source fr-FR")
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert "architecture" not in str(info.value)


def test_a_missing_shard_through_the_command_line(ws, sharded, tmp_path):
    shutil.copytree(sharded, tmp_path / "src")
    _shard(tmp_path / "src", 4).unlink()
    proc = run_command(*merge_args(ws, tmp_path / "out", "de-DE", str(tmp_path / "src")))
    assert_clear_error(proc, "model-00005-of-", "are missing", "re-copy the folder")
    assert "architecture" not in proc.stderr and not (tmp_path / "out").exists()


# --- runs that did nothing -----------------------------------------------------------------------------------------------
def fit_args(ws: Path, out: Path) -> list:
    return ["fit", "--model.backbone", ws / "tiny" / "base", "--model.root", ws, "--model.base_seed", "0",
            "--data.locales", "de-DE", "--data.source", "release", "--data.data_path", ws / "data",
            "--trainer.enable_progress_bar", "false", "--torch_threads", "1", "--output", out]


FIT_LIMITS = {"max_epochs 0": ["--trainer.max_epochs", "0"], "max_steps 0": ["--trainer.max_steps", "0"],
              "limit_train_batches 0": ["--trainer.limit_train_batches", "0"],
              "max_time 0": ["--trainer.max_epochs", "1", "--trainer.max_time", "00:00:00:00"]}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FIT_LIMITS))
def test_a_fit_that_trains_nothing_exports_nothing(ws, tmp_path, case):
    limit = FIT_LIMITS[case]
    proc = run_command(*fit_args(ws, tmp_path / "de-DE"), *limit, cwd=tmp_path)
    if case == "max_time 0":  # stopped by Lightning before the first step: found after the fit
        assert_clear_error(proc, "fit ran no optimisation step", "nothing was exported", "max_time")
    else:
        assert_clear_error(proc, f"{limit[0]} 0 trains nothing", f"give {limit[0]} >= 1")
    assert not files_under(tmp_path)  # no fine-tune, no .lightning folder, no logs


def test_no_training_limits_are_refused_before_anything_runs():
    from merginguriel.errors import InputError
    from merginguriel.models.finetune import refuse_no_training

    for option in ("max_epochs", "max_steps", "limit_train_batches"):
        with pytest.raises(InputError, match=f"--trainer.{option} 0 trains nothing"):
            refuse_no_training({"max_epochs": 3, option: 0})
    refuse_no_training({"max_epochs": 1, "max_steps": -1, "limit_train_batches": 1.0})  # a real fit is let through
    refuse_no_training({"max_epochs": None, "max_steps": -1, "limit_train_batches": None})


def test_adamerging_with_zero_steps_is_refused(ws, tmp_path):
    proc = run_command(*merge_args(ws, tmp_path / "out", extra=["--merge.method", "adamerging", "--adamerging.steps", "0"]))
    assert_clear_error(proc, "adamerging.steps=0", "at least one optimisation step")
    assert not files_under(tmp_path)


@pytest.mark.parametrize("change, needle", [
    (("splits: [validation]", "splits: []"), "evaluates nothing (no target, or evaluate.splits [])"),
    (("{target: [sw-KE], ", "{"), "evaluates nothing (no target, or evaluate.splits [])"),
    (("{target: [sw-KE], merge.method: [average, ties]}", "{target: []}"), "must map to a non-empty list"),
])
def test_a_sweep_that_would_evaluate_nothing(ws, tmp_path, cli, change, needle):
    args = [a.replace(*change) if isinstance(a, str) else a for a in sweep_args(ws, tmp_path / "r.sqlite")]
    refused(cli(*args), needle)
    assert not files_under(tmp_path)


@pytest.mark.parametrize("extra, needle", [(["--models", "[]"], "no locales to evaluate"),
                                           (["--models", "de-DE", "--locales", "[]"], "no locales to evaluate")])
def test_an_nxn_that_would_evaluate_nothing(ws, tmp_path, cli, extra, needle):
    refused(cli("nxn", "--root", ws, "--backbone", "tiny", "--data.source", "release", "--data.data_path", ws / "data",
                "--progress", "false", "--output", tmp_path / "nxn", *extra), needle)
    assert not files_under(tmp_path)


# --- locks -------------------------------------------------------------------------------------------------------------
def test_a_merge_leaves_no_lock_and_a_refused_one_no_folder(ws, cli):
    proc = run_command("merge", "--root", ws, "--backbone", "tiny", "--target", "sw-KE", "--progress", "false",
                       "--evaluate.splits", "[]", "--selection.sources", "de-DE", "fr-FR", "--merge.method", "average",
                       "--run", "lockless")
    assert proc.returncode == 0, proc.stderr
    merged = ws / "tiny" / "merged" / "sw-KE"
    assert {p.name for p in merged.iterdir()} == {"lockless"}
    shutil.rmtree(ws / "tiny" / "merged")
    refused(cli("merge", "--root", ws, "--backbone", "tiny", "--target", "sw-KE", "--progress", "false",
                "--evaluate.splits", "[]", "--selection.sources", "de-DE", "fr-FR", "--merge.method", "ties",
                "--merge.params.density", "1.5"), "density=1.5")
    assert not (ws / "tiny" / "merged").exists()  # no empty merged/sw-KE/ left by its lock


def _count_under_lock(path: str, counter: str, rounds: int) -> None:
    from merginguriel.io.lock import file_lock

    for _ in range(rounds):
        with file_lock(path):
            n = int(Path(counter).read_text())
            time.sleep(0.0005)  # a window in which an unlocked reader would lose an update
            Path(counter).write_text(str(n + 1))


def test_a_self_removing_lock_still_excludes(tmp_path):
    """Four processes take turns on one lock file that every holder removes on release: no update is lost (a waiter
    that won the removed file tries again), and no lock file is left."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    lock = tmp_path / "locks" / "deep" / ".x.lock"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_count_under_lock, args=(str(lock), str(counter), 60)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert counter.read_text() == "240"
    assert not [p for p in files_under(tmp_path) if p.endswith(".lock")]


def test_a_released_point_goes_back_to_planned(tmp_path):
    from merginguriel.experiments.db import ResultsDB

    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.plan("s", [("k1", {"target": "sw-KE"}), ("k2", {"target": "de-DE"})])
        assert db.claim("k1") is not None and db.claim("k2") is not None
        assert db.release("k1") and not db.release("k1")  # only the holder's running point
        rows = {r["key"]: r for r in db.rows()}
        assert rows["k1"]["status"] == "planned" and rows["k1"]["pid"] is None and rows["k1"]["heartbeat"] is None
        assert rows["k2"]["status"] == "running"
        assert db.claim("k1") is not None  # taken at once, no stale_after wait


# --- stops: SIGTERM and SIGINT (slow) -------------------------------------------------------------------------------------
def _popen(args, cwd: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("merginguriel")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(exe), *map(str, args)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 300) -> tuple[int, str]:
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, "the process ended before the moment to stop it"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _one_stop_line(code: int, err: str, sig: int, command: str, resume: str) -> None:
    assert code == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.rstrip().splitlines()[-1]
    assert last.startswith(f"merginguriel {command}: stopped by {signal.Signals(sig).name}; ") and resume in last, last


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A family large enough that a merge in tiny blocks takes seconds, with release data for the judged sweeps."""
    root = tmp_path_factory.mktemp("big")
    make_family(root, ["de-DE", "fr-FR", "it-IT"], hidden=256, layers=4, heads=4, intermediate=1024)
    write_release_data(root / "data", ["de-DE", "fr-FR", "it-IT"], per_intent=(2, 1, 1))
    return root


def _merge(big: Path) -> list:
    return ["merge", "--root", big, "--backbone", "tiny", "--target", "it-IT", "--progress", "false", "--evaluate.splits",
            "[]", "--selection.sources", "de-DE", "fr-FR", "--merge.method", "ties", "--memory_mb", "0.05"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("moment", ["starting", "temporary made", "weights being written"])
def test_a_stopped_merge_leaves_nothing_and_resumes(big, tmp_path, sig, moment):
    whole = tmp_path / "whole"
    if not whole.exists():
        assert run_command(*_merge(big), "--output", whole).returncode == 0
    merged = big / "tiny" / "merged" / "it-IT"
    shutil.rmtree(merged, ignore_errors=True)
    started = time.time()
    ready = {"starting": lambda: time.time() - started > 1.0,
             "temporary made": lambda: any(merged.glob(".run.tmp-*")),
             "weights being written": lambda: any(merged.glob(".run.tmp-*/model.safetensors"))}[moment]
    code, err = _stop_when(_popen([*_merge(big), "--run", "run"], big), ready, sig)
    _one_stop_line(code, err, sig, "merge", "run the same command again")
    assert not (big / "tiny" / "merged").exists() or not files_under(big / "tiny" / "merged"), files_under(merged)
    again = run_command(*_merge(big), "--run", "run")
    assert again.returncode == 0, again.stderr
    assert {p.name for p in merged.iterdir()} == {"run"}
    assert (merged / "run" / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def _sweep(big: Path, db: Path) -> list:
    fixed = (f"{{root: {big}, backbone: tiny, target: it-IT, data: {{source: release, data_path: {big / 'data'}}}, "
             "selection: {sources: [de-DE, fr-FR]}, evaluate: {splits: [validation], features: false}}")
    return ["experiment", "--db", db, "--fixed", fixed, "--grid", "{merge.method: [average, ties, task_arithmetic]}"]


def _rows(db: Path) -> dict:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:  # never creates it
        conn.row_factory = sqlite3.Row
        return {r["key"]: dict(r) for r in conn.execute("SELECT * FROM points")}


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["first point merging", "second point merging", "between points"])
def test_a_stopped_sweep_gives_its_point_back_and_resumes(big, tmp_path, moment):
    whole = tmp_path / "whole.sqlite"
    assert run_command(*_sweep(big, whole), cwd=tmp_path).returncode == 0
    reference = {k: json.loads(r["metrics"]) for k, r in _rows(whole).items()}
    assert len(reference) == 3 and all(reference.values())
    shutil.rmtree(big / "tiny" / "merged", ignore_errors=True)

    db = tmp_path / "stopped.sqlite"
    merged = big / "tiny" / "merged" / "it-IT"

    def done() -> int:
        try:
            return sum(r["status"] == "done" for r in _rows(db).values())
        except sqlite3.OperationalError:  # not made yet, or its schema not yet written
            return 0

    ready = {"first point merging": lambda: any(merged.glob(".*.tmp-*/model.safetensors")),
             "second point merging": lambda: done() == 1 and any(merged.glob(".*.tmp-*/model.safetensors")),
             "between points": lambda: done() == 1}[moment]
    code, err = _stop_when(_popen(_sweep(big, db), tmp_path), ready, signal.SIGTERM)
    _one_stop_line(code, err, signal.SIGTERM, "experiment", "finished points are kept")
    rows = _rows(db)
    assert not [r for r in rows.values() if r["status"] == "running"], rows
    assert {r["status"] for r in rows.values()} <= {"done", "planned"}
    assert not [p for p in files_under(big / "tiny") if ".tmp-" in p or p.endswith(".lock")]
    again = run_command(*_sweep(big, db), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    after = _rows(db)
    assert {r["status"] for r in after.values()} == {"done"}
    assert {k: json.loads(r["metrics"]) for k, r in after.items()} == reference  # the same numbers, to the last bit


@pytest.mark.slow
def test_a_stopped_nxn_keeps_its_cells_and_resumes(big, tmp_path):
    args = ["nxn", "--root", big, "--backbone", "tiny", "--split", "validation", "--data.source", "release",
            "--data.data_path", big / "data", "--progress", "false", "--chunk", "1"]
    whole = run_command(*args, "--output", tmp_path / "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "stopped"
    cells = out / "cells.jsonl"
    code, err = _stop_when(_popen([*args, "--output", out], tmp_path),
                           lambda: cells.is_file() and cells.read_text().count("\n") >= 1, signal.SIGTERM)
    _one_stop_line(code, err, signal.SIGTERM, "nxn", "evaluated cells are kept")
    assert not [p for p in files_under(tmp_path) if ".tmp-" in p]
    assert not (out / "evaluation_matrix.csv").exists()  # no matrix from part of the cells
    again = run_command(*args, "--output", out, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (out / "evaluation_matrix.csv").read_bytes() == (tmp_path / "whole" / "evaluation_matrix.csv").read_bytes()


@pytest.mark.slow
def test_a_point_run_as_a_cluster_job_gives_itself_back_on_sigterm(big, tmp_path):
    """A submitit worker runs execute_point with no CLI around it: the cluster's SIGTERM must still give the point back
    (planned, not running) and leave no temporary, and the point then runs to the uninterrupted numbers."""
    db = tmp_path / "points.sqlite"
    assert run_command(*_sweep(big, db), cwd=tmp_path).returncode == 0
    reference = {k: json.loads(r["metrics"]) for k, r in _rows(db).items()}
    with sqlite3.connect(db) as conn:  # the same points, planned again (as a cluster array sees them)
        conn.execute("UPDATE points SET status = 'planned', metrics = NULL")
    shutil.rmtree(big / "tiny" / "merged", ignore_errors=True)
    key = sorted(reference)[0]
    merged = big / "tiny" / "merged" / "it-IT"
    worker = [sys.executable, "-c", f"from merginguriel.experiments.runner import execute_point; "
              f"print(execute_point({str(db)!r}, {key!r}))"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(worker, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _stop_when(proc, lambda: any(merged.glob(".*.tmp-*/model.safetensors")), signal.SIGTERM)
    assert _rows(db)[key]["status"] == "planned"
    assert not [p for p in files_under(big / "tiny") if ".tmp-" in p or p.endswith(".lock")]
    again = subprocess.run(worker, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.stdout.strip() == "done", again.stderr[-2000:]
    assert json.loads(_rows(db)[key]["metrics"]) == reference[key]
