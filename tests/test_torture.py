"""The torture suite: every command given bad input as a new user would, in real `merginguriel` subprocesses. Each case
must end in a clear error (exit 2, the file or option named, no traceback) and leave no partial output and no broken
cache; a split without rows is never turned into a number. The kills (fit, merge, sweep at several moments) are in the
slow part (`pytest -m slow`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import (assert_clear_error, files_under, make_base, make_family, make_finetuned, page_bytes, run_command,
                      small_disk, write_jsonl, write_release_data)

FAMILY = ["de-DE", "fr-FR", "sw-KE", "es-ES", "sv-SE", "da-DK"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A tiny family under ``<ws>/tiny`` and release data under ``<ws>/data`` for es-ES (complete), sv-SE (no dev
    rows), da-DK (no test rows) and the broken files pt-PT (empty), nl-NL (blank lines only), pl-PL (a non-UTF-8 byte
    on line 7)."""
    root = tmp_path_factory.mktemp("torture")
    make_family(root, FAMILY)
    write_release_data(root / "data", ["es-ES", "sv-SE", "da-DK", "pl-PL"], per_intent=(2, 1, 1))
    folder = root / "data" / "1.1" / "data"
    for loc, partition in (("sv-SE", "dev"), ("da-DK", "test")):
        rows = [json.loads(line) for line in (folder / f"{loc}.jsonl").read_text().splitlines()]
        write_jsonl(folder / f"{loc}.jsonl", [r for r in rows if r["partition"] != partition])
    (folder / "pt-PT.jsonl").write_text("")
    (folder / "nl-NL.jsonl").write_text("\n   \n\n")
    lines = (folder / "pl-PL.jsonl").read_bytes().splitlines(keepends=True)
    lines[6] = lines[6].replace(b'"utt": "', b'"utt": "\xe9t\xe9 ', 1)  # Latin-1, not UTF-8
    (folder / "pl-PL.jsonl").write_bytes(b"".join(lines))
    return root


def data_args(ws: Path) -> list[str]:
    return ["--data.source", "release", "--data.data_path", str(ws / "data")]


def cache_is_sound(ws: Path) -> None:
    """Every tokenisation cache entry loads, and none belongs to a file that could not be read."""
    entries = list((ws / "cache").rglob("*")) if (ws / "cache").exists() else []
    assert not [p for p in entries if ".tmp-" in p.name], entries
    for p in entries:
        if p.suffix == ".pt":
            torch.load(p, weights_only=True)
            assert not p.name.startswith(("pt-PT", "nl-NL", "pl-PL")), p


# --- fit / test / nxn on bad data --------------------------------------------------------------------------------------
def fit_args(ws: Path, locale: str) -> list[str]:
    return ["fit", "--model.backbone", ws / "tiny" / "base", "--model.root", ws, "--model.base_seed", "0",
            "--data.locales", locale, *data_args(ws), "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
            "--torch_threads", "1"]


@pytest.mark.parametrize("locale, needles", [
    ("nl-NL", ["nl-NL.jsonl holds no MASSIVE rows (the file is empty or blank)", "restore the file"]),
    ("pl-PL", ["pl-PL.jsonl, line 7: not UTF-8 text (byte 0xe9", "re-encode the file"]),
    ("sv-SE", ["sv-SE has no validation rows (partition 'dev') in", "sv-SE.jsonl", '"partition": "dev"']),
])
def test_fit_on_bad_data(ws, locale, needles):
    before = files_under(ws / "tiny")
    out = ws / "fits" / locale
    proc = run_command(*fit_args(ws, locale), "--output", out, cwd=ws)
    assert_clear_error(proc, *needles)
    assert "EarlyStopping" not in proc.stderr and "val/accuracy" not in proc.stderr
    assert files_under(ws / "tiny") == before and not (ws / "fits").exists()  # no fine-tune, no .lightning folder
    assert not (ws / "lightning_logs").exists()
    cache_is_sound(ws)


@pytest.mark.parametrize("locales, needles", [
    ("[es-ES, da-DK]", ["da-DK has no test rows (partition 'test') in", "da-DK.jsonl"]),
    ("pt-PT", ["pt-PT.jsonl holds no MASSIVE rows (the file is empty or blank)"]),
    ("pl-PL", ["pl-PL.jsonl, line 7: not UTF-8 text"]),
])
def test_test_on_bad_data(ws, locales, needles):
    model = ws / "tiny" / "finetuned" / "es-ES"
    before = files_under(model)
    proc = run_command("test", "--model.checkpoint", model, "--model.root", ws, "--model.backbone", ws / "tiny" / "base",
                       "--model.base_seed", "0", "--data.locales", locales, *data_args(ws), "--trainer.enable_progress_bar",
                       "false", cwd=ws)
    assert_clear_error(proc, *needles)
    assert "accuracy" not in proc.stdout and files_under(model) == before  # no metrics JSON, empty or not
    cache_is_sound(ws)


@pytest.mark.parametrize("models", [["sv-SE"], ["es-ES", "sv-SE"]])
def test_nxn_never_writes_a_cell_for_a_split_without_rows(ws, models):
    proc = run_command("nxn", "--root", ws, "--backbone", "tiny", "--models", *models, "--split", "validation",
                       *data_args(ws), "--progress", "false", "--output", ws / "nxn-empty", cwd=ws)
    assert_clear_error(proc, "sv-SE has no validation rows (partition 'dev') in", "sv-SE.jsonl")
    assert "KeyError" not in proc.stderr
    cells = ws / "nxn-empty" / "cells.jsonl"
    written = [json.loads(line) for line in cells.read_text().splitlines()] if cells.exists() else []
    assert not [c for c in written if c["target"] == "sv-SE"]  # never a 0.0 for the empty locale
    assert not (ws / "nxn-empty" / "evaluation_matrix.csv").exists()


def test_a_model_folder_with_a_malformed_config_is_named(ws, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(ws / "tiny" / "finetuned" / "es-ES", broken)
    (broken / "config.json").write_text('{\n  "architectures": ["XLMRobertaForSequenceClassification"],\n  "hidden_size": 32,,\n}\n')
    proc = run_command("test", "--model.checkpoint", broken, "--model.root", ws, "--model.backbone", ws / "tiny" / "base",
                       "--model.base_seed", "0", "--data.locales", "es-ES", *data_args(ws), cwd=ws)
    assert_clear_error(proc, f"{broken / 'config.json'}, line 3 column 21: invalid JSON", "export the model again")
    assert not (broken / "eval").exists()


# --- merge: bad sources, options, outputs ------------------------------------------------------------------------------
def merge_args(ws: Path, out: Path, *sources, method: str = "linear", extra=()) -> list[str]:
    return ["merge", "--root", ws, "--backbone", "tiny", "--target", "sw-KE", "--progress", "false", "--evaluate.splits",
            "[]", "--selection.sources", *sources, "--merge.method", method, "--output", out, *extra]


def outside_copy(ws: Path, dest: Path, locale: str = "fr-FR") -> Path:
    """A copy of a fine-tune without its manifest (so its architecture, vocabulary, labels and dtypes are checked)."""
    shutil.copytree(ws / "tiny" / "finetuned" / locale, dest)
    (dest / "manifest.json").unlink()
    return dest


def _config(folder: Path, change) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    change(cfg)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))


def _state(folder: Path, change) -> None:
    state = load_file(str(folder / "model.safetensors"))
    state = change(state) or state
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _other_architecture(ws: Path, dest: Path, **config) -> None:
    other = dest.parent / f"{dest.name}-family"
    make_base(other, "tiny", seed=0, **config)
    make_finetuned(other, "it-IT")
    shutil.copytree(other / "tiny" / "finetuned" / "it-IT", dest)
    (dest / "manifest.json").unlink()


def _swap_labels(cfg: dict) -> None:
    cfg["id2label"]["0"], cfg["id2label"]["1"] = cfg["id2label"]["1"], cfg["id2label"]["0"]


def _nan(state: dict) -> None:
    state[max(state)].view(-1)[-1] = float("nan")


BROKEN_SOURCES = {
    "malformed config.json": (lambda ws, d: (outside_copy(ws, d), (d / "config.json").write_text('{"hidden_size": 32,\n  oops\n}')),
                              ["config.json, line 2 column 3: invalid JSON", "export the source"]),
    "truncated weights": (lambda ws, d: (outside_copy(ws, d), (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-999])),
                          ["model.safetensors is truncated", "re-export or re-copy it"]),
    "garbled weights": (lambda ws, d: (outside_copy(ws, d), (d / "model.safetensors").write_bytes(b"\x07garbage" * 40)),
                        ["model.safetensors is not a readable safetensors file", "corrupt or truncated"]),
    "another hidden size": (lambda ws, d: _other_architecture(ws, d, hidden=48), ["has shape [48], the base [32] (shape mismatch)"]),
    "another vocabulary": (lambda ws, d: _other_architecture(ws, d, vocab_size=300), ["has shape [300, 32], the base [205, 32] (vocabulary size mismatch)"]),
    "another label order": (lambda ws, d: (outside_copy(ws, d), _config(d, _swap_labels)), ["label order differs"]),
    "another dtype": (lambda ws, d: (outside_copy(ws, d), _state(d, lambda s: {k: v.half() for k, v in s.items()})),
                      ["is F16, the base's is F32", "re-export it in the base's dtype"]),
    "NaN in a tensor": (lambda ws, d: (outside_copy(ws, d), _state(d, _nan)), ["NaN/inf"]),
}


@pytest.mark.parametrize("case", list(BROKEN_SOURCES))
def test_merge_refuses_a_broken_source(ws, tmp_path, case):
    make, needles = BROKEN_SOURCES[case]
    make(ws, tmp_path / "src")
    out = tmp_path / "out"
    proc = run_command(*merge_args(ws, out, "de-DE", tmp_path / "src", method="task_arithmetic"))
    assert_clear_error(proc, *needles)
    assert {p for p in files_under(tmp_path) if not p.startswith("src")} <= {".out.lock"}  # nothing but the lock


@pytest.mark.parametrize("extra, needles", [
    (["--selection.weights", "[abc, 1]"], ['Parser key "selection.weights"', "Expected a <class 'float'>. Got value: abc"]),
    (["--selection.weights", "1", "-1"], ["weights must be finite and >= 0"]),
    (["--selection.weights", "0", "0"], ["sum to zero"]),
    (["--merge.method", "frankenmerge"], ["unknown merge method 'frankenmerge'"]),
    (["--merge.method", "ties", "--merge.params.density", "1.5"], ["density=1.5 is outside (0, 1]"]),
    (["--merge.method", "ties", "--merge.params.density", "lots"], ["not a valid float"]),
    (["--merge.exclude", "*no_such_tensor*"], ["matches no tensor"]),
])
def test_merge_refuses_bad_options(ws, tmp_path, extra, needles):
    proc = run_command(*merge_args(ws, tmp_path / "out", "de-DE", "fr-FR", extra=extra))
    assert_clear_error(proc, *needles)
    assert files_under(tmp_path) <= {".out.lock"}


def test_merge_keeps_an_existing_output(ws, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert_clear_error(run_command(*merge_args(ws, out, "de-DE", "fr-FR")), "exists but is not a finished merged model")
    assert files_under(out) == {"mine.txt"}
    made = run_command(*merge_args(ws, tmp_path / "done", "de-DE", "fr-FR"))
    assert made.returncode == 0, made.stderr
    weights = (tmp_path / "done" / "model.safetensors").read_bytes()
    other = run_command(*merge_args(ws, tmp_path / "done", "de-DE", "fr-FR", method="task_arithmetic"))
    assert_clear_error(other, "already holds a merged model", "made by another merge job", "--overwrite true")
    assert (tmp_path / "done" / "model.safetensors").read_bytes() == weights


# --- a full disk -------------------------------------------------------------------------------------------------------
def _merge_sizes(ws: Path) -> dict[str, int]:
    """tmpfs sizes at which a merge into it runs out of space at each stage: while writing the weights, the side files
    (tokenizer, config), the manifest; and the size at which it fits."""
    base = ws / "tiny" / "base"
    weights = page_bytes(base / "model.safetensors")
    side = page_bytes(*[f for f in base.iterdir() if f.name not in ("model.safetensors", "manifest.json")])
    page = os.sysconf("SC_PAGE_SIZE")
    return {"weights": weights // 2, "side files": weights + page, "manifest": weights + side,
            "fits": weights + side + 4 * page}


@pytest.mark.parametrize("stage", ["weights", "side files", "manifest"])
def test_merge_into_a_full_disk(ws, tmp_path, stage):
    with small_disk(tmp_path / "disk", _merge_sizes(ws)[stage]) as disk:
        proc = run_command(*merge_args(ws, disk / "out", "de-DE", "fr-FR"))
        assert_clear_error(proc, f"no space left on the device while writing {disk / 'out'}", "free some space")
        assert files_under(disk) <= {".out.lock"}  # no output, no hidden temporary


def test_merge_past_the_file_size_limit(ws, tmp_path):
    """The same without mounting anything: a file-size limit (ulimit -f) smaller than the weights."""
    import resource

    limit = (ws / "tiny" / "base" / "model.safetensors").stat().st_size // 2
    cmd = [str(Path(sys.executable).with_name("merginguriel")), *map(str, merge_args(ws, tmp_path / "out", "de-DE", "fr-FR"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert_clear_error(proc, f"the file-size limit (ulimit -f) is reached while writing {tmp_path / 'out'}")
    assert files_under(tmp_path) <= {".out.lock"}


def test_full_disk_stages_are_the_ones_aimed_at(ws, tmp_path):
    """In-process: the write that fails at each size is the one the stage names (so the command-line test covers the
    weights, the side files and the manifest), and with a little room to spare the same merge succeeds."""
    import traceback

    from merginguriel.errors import DiskFullError
    from merginguriel.merging import MergeSpec, Source, merge

    sizes = _merge_sizes(ws)
    where = {"weights": "_write_now", "side files": "copyfile", "manifest": "atomic_write_text", "fits": None}
    for stage, function in where.items():
        with small_disk(tmp_path / stage.replace(" ", "-"), sizes[stage]) as disk:
            spec = MergeSpec(ws / "tiny" / "base", [Source(ws / "tiny" / "finetuned" / loc, loc) for loc in ("de-DE", "fr-FR")],
                             "linear", {}, disk / "out", progress=False)
            if function is None:
                merge(spec)
                continue
            with pytest.raises(DiskFullError) as info:
                merge(spec)
            frames = [f.name for e in (info.value.__cause__, info.value.__cause__.__context__) if e is not None
                      for f in traceback.extract_tb(e.__traceback__)]
            assert function in frames, (stage, frames)
            assert not files_under(disk)


def test_fit_into_a_full_disk(ws, tmp_path):
    """Lightning's own checkpoint writes on a full disk: a clear error naming the resume point, and no checkpoint cut
    short is left for a rerun to trip over."""
    with small_disk(tmp_path / "disk", 256 * 1024) as disk:
        proc = run_command(*fit_args(ws, "es-ES"), "--output", disk / "es-ES", cwd=ws)
        assert_clear_error(proc, "no space left on the device while writing", f"{disk / 'es-ES.lightning'}", "free some space")
        assert not (disk / "es-ES").exists()
        for ckpt in (disk / "es-ES.lightning").rglob("*.ckpt"):
            torch.load(ckpt, map_location="cpu", weights_only=False)  # whole, or not there


def test_a_full_disk_met_anywhere_reads_clearly(tmp_path):
    """The command line's last resort for a full disk that no writer translated: the message names the file."""
    from merginguriel.io.diskfull import full_disk_message

    with small_disk(tmp_path / "disk", 8192) as disk:
        with pytest.raises(OSError) as info:
            shutil.copyfile(__file__, disk / "copy.py")  # larger than the disk
    message = full_disk_message(info.value)
    assert message.startswith(f"no space left on the device while writing {disk / 'copy.py'}") and "free some space" in message
    assert full_disk_message(ValueError("something else")) is None


def test_a_full_disk_under_a_cache_write_is_named(ws, tmp_path):
    """torch.save reports a full disk as an unrelated RuntimeError; the cache write still says what happened."""
    from merginguriel.data.config import DataConfig
    from merginguriel.data.tokenized import clear_memo, tokenized_locale
    from merginguriel.errors import DiskFullError
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ws / "tiny" / "base")
    with small_disk(tmp_path / "disk", 8192) as disk:
        data = DataConfig(source="release", data_path=str(ws / "data"), root=str(disk), max_length=32)
        clear_memo()
        with pytest.raises(DiskFullError, match=f"no space left on the device while writing {disk}/cache/tokenized/"):
            tokenized_locale(data, tok, "es-ES")
        assert not [p for p in files_under(disk) if p.endswith(".pt") or ".tmp-" in p]


# --- provenance and leftovers ------------------------------------------------------------------------------------------
def test_a_source_edited_after_its_manifest_records_the_bytes_read(tiny_family_factory, tmp_path):
    from merginguriel.io import checkpoint_hash, read_manifest

    fam = tiny_family_factory(["de-DE", "fr-FR", "sw-KE"], root=tmp_path / "fam")
    source = fam.finetuned("fr-FR")
    stale = read_manifest(source)["hash"]
    _state(source, lambda s: {k: v + 0.01 if k.startswith("classifier") else v for k, v in s.items()})  # same size
    assert read_manifest(source)["hash"] == stale != checkpoint_hash(source)
    proc = run_command("merge", "--root", fam.root, "--backbone", "tiny", "--target", "sw-KE", "--progress", "false",
                       "--evaluate.splits", "[]", "--selection.sources", "de-DE", "fr-FR", "--merge.method", "average",
                       "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    recorded = {s["locale"]: s["hash"] for s in read_manifest(tmp_path / "out")["sources"]}
    assert recorded["fr-FR"] == checkpoint_hash(source)
    assert recorded["de-DE"] == read_manifest(fam.finetuned("de-DE"))["hash"]  # an unchanged source keeps its record


def _dead_pids() -> tuple[int, subprocess.Popen]:
    """The pid of a process that ended and was reaped, and a process that ended but is not reaped (a zombie)."""
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    import psutil

    zombie = subprocess.Popen(["true"])
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:  # ended; not reaped while we hold it
        time.sleep(0.01)
    return reaped.pid, zombie


def test_reruns_remove_dead_temporaries_only(tiny_family_factory, tmp_path):
    import socket

    fam = tiny_family_factory(["de-DE", "fr-FR", "sw-KE"], root=tmp_path / "fam")
    merged = fam.home / "merged" / "sw-KE"
    merged.mkdir(parents=True)
    host = socket.gethostname()
    reaped, zombie = _dead_pids()
    names = {"dead": f".run.tmp-{host}-{reaped}-0000dead", "zombie": f".run.tmp-{host}-{zombie.pid}-0000zomb",
             "live": f".run.tmp-{host}-{os.getpid()}-0000live", "other host": f".run.tmp-elsewhere-{reaped}-000other"}
    for name in names.values():
        (merged / name).mkdir()
        (merged / name / "model.safetensors").write_bytes(b"half a model")
    proc = run_command("merge", "--root", fam.root, "--backbone", "tiny", "--target", "sw-KE", "--progress", "false",
                       "--evaluate.splits", "[]", "--selection.sources", "de-DE", "fr-FR", "--merge.method", "average",
                       "--run", "run")
    zombie.wait()
    assert proc.returncode == 0, proc.stderr
    left = {p.name for p in merged.iterdir()}
    assert left == {"run", names["live"], names["other host"]}  # a live run's and another host's stay


@pytest.mark.parametrize("remove", ["model.safetensors", "manifest.json"])
def test_a_jobs_own_unfinished_output_is_redone(tiny_family_factory, tmp_path, remove):
    """A merged folder left with a manifest but no weights (a sweep killed while removing it), or weights but no
    manifest, is not finished: a rerun of the same job merges it again instead of failing or reusing it."""
    fam = tiny_family_factory(["de-DE", "fr-FR", "sw-KE"], root=tmp_path / "fam")
    args = ["merge", "--root", fam.root, "--backbone", "tiny", "--target", "sw-KE", "--progress", "false",
            "--evaluate.splits", "[]", "--selection.sources", "de-DE", "fr-FR", "--merge.method", "average", "--run", "run"]
    assert run_command(*args).returncode == 0
    out = fam.merged("sw-KE", "run")
    weights = (out / "model.safetensors").read_bytes()
    (out / remove).unlink()
    again = run_command(*args)
    assert again.returncode == 0, again.stderr
    assert "reused" not in again.stdout
    assert (out / "model.safetensors").read_bytes() == weights and (out / "manifest.json").is_file()
    assert run_command(*args).stdout.count("reused") == 1  # and now it is finished


# --- kills (slow) ------------------------------------------------------------------------------------------------------
def _popen(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("merginguriel")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(exe), *map(str, args)], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (checked every millisecond); it must still be running then."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, "the process ended before the moment to kill it"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["training ended", "exporting"])
def test_fit_killed_after_training_goes_straight_to_the_export(tmp_path, moment):
    make_base(tmp_path, "tiny", seed=0, hidden=32)
    write_release_data(tmp_path / "data", ["es-ES"], per_intent=(8, 2, 2))
    args = ["fit", "--model.backbone", tmp_path / "tiny" / "base", "--model.root", tmp_path, "--model.base_seed", "0",
            "--model.learning_rate", "3e-3", "--data.locales", "es-ES", "--data.source", "release", "--data.data_path",
            tmp_path / "data", "--data.batch_size", "16", "--trainer.max_epochs", "4", "--trainer.enable_progress_bar",
            "false", "--torch_threads", "1"]
    whole = run_command(*args, "--output", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "tiny" / "finetuned" / "es-ES"
    final = tmp_path / "tiny" / "runs" / "es-ES" / "checkpoints" / "final.ckpt"
    ready = final.is_file if moment == "training ended" else lambda: any(out.parent.glob(".es-ES.tmp-*"))
    _kill_when(_popen(*args), ready)
    assert not (out / "manifest.json").exists()
    again = run_command(*args)
    assert again.returncode == 0, again.stderr
    assert "training had finished" in again.stdout and "resuming" not in again.stdout
    assert load_file(out / "model.safetensors").keys() == load_file(tmp_path / "whole" / "model.safetensors").keys()
    for name, tensor in load_file(tmp_path / "whole" / "model.safetensors").items():
        assert torch.equal(load_file(out / "model.safetensors")[name], tensor), name
    assert not list(out.parent.glob(".es-ES.tmp-*"))  # the killed export's temporary is gone


@pytest.mark.slow
def test_merge_killed_midway_leaves_nothing_and_the_rerun_cleans_up(tmp_path):
    fam = make_family(tmp_path / "fam", ["de-DE", "fr-FR", "it-IT"], hidden=256, layers=4, heads=4, intermediate=1024)
    args = ["merge", "--root", fam.root, "--backbone", "tiny", "--target", "it-IT", "--progress", "false", "--evaluate.splits",
            "[]", "--selection.sources", "de-DE", "fr-FR", "--merge.method", "ties", "--memory_mb", "0.05"]
    whole = run_command(*args, "--output", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    merged = fam.home / "merged" / "it-IT"
    _kill_when(_popen(*args, "--run", "run"), lambda: any(merged.glob(".run.tmp-*/model.safetensors")))
    assert not (merged / "run").exists() and list(merged.glob(".run.tmp-*"))  # absent, and a dead temporary left
    again = run_command(*args, "--run", "run")
    assert again.returncode == 0, again.stderr
    assert {p.name for p in merged.iterdir()} == {"run"}
    assert (merged / "run" / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()


def test_merge_judged_on_a_split_without_rows_is_refused_before_merging(ws, tmp_path):
    proc = run_command("merge", "--root", ws, "--backbone", "tiny", "--target", "da-DK", "--progress", "false",
                       "--selection.sources", "de-DE", "fr-FR", "--merge.method", "average", *data_args(ws),
                       "--output", tmp_path / "out")
    assert_clear_error(proc, "da-DK has no test rows (partition 'test') in", "da-DK.jsonl")
    assert files_under(tmp_path) <= {".out.lock"}  # no merged model that could not be judged


def test_a_damaged_base_tokenizer_is_named(tiny_family_factory, tmp_path):
    fam = tiny_family_factory(["de-DE", "fr-FR", "sw-KE"], root=tmp_path / "fam")
    (fam.base / "tokenizer.json").write_text('{"version": "1.0",\n "model": }')
    proc = run_command("merge", "--root", fam.root, "--backbone", "tiny", "--target", "sw-KE", "--progress", "false",
                       "--selection.sources", "de-DE", "fr-FR", "--merge.method", "average", "--output", tmp_path / "out")
    assert_clear_error(proc, f"{fam.base / 'tokenizer.json'}, line 2 column 11: invalid JSON", "the base folder")
    assert not (tmp_path / "out").exists()
