"""A method parameter given as a list is chosen on validation inside one job: each value is merged and scored on the
target's validation split, the best is kept, and the choice and the number of candidates are recorded; test data never
decides (the test split is relabelled so that a choice that read it would pick another value). Bad lists are refused
before any merge, naming the value."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import WORLD_TARGET as TARGET, assert_clear_error, make_teacher_world, one_thread, run_command
from merginguriel.locales import INTENTS

_one_thread = pytest.fixture(autouse=True)(one_thread)
LAMS = [0.2, 0.6, 1.0]
SOURCES = ["de-DE", "fr-FR"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_teacher_world(tmp_path_factory.mktemp("lists"))


def config(world, data_path, lam, output) -> dict:
    return {"target": TARGET, "backbone": world.layout.backbone, "root": str(world.root), "device": "cpu",
            "data": {"source": "release", "data_path": str(data_path), "max_length": 32},
            "selection": {"sources": SOURCES}, "merge": {"method": "task_arithmetic", "params": {"weighted": False, "lam": lam}},
            "evaluate": {"splits": ["validation", "test"], "batch_size": 64, "features": False},
            "output": str(output), "progress": False}


def merge(world, tmp, cfg: dict, name: str):
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return run_command("merge", "-c", path)


def relabel_test(src: Path, dest: Path, predictions: list[int]) -> None:
    """A copy of the release data whose target test labels are ``predictions`` (validation and every other locale
    unchanged)."""
    shutil.copytree(src, dest)
    file = dest / "1.1" / "data" / f"{TARGET}.jsonl"
    rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    test = [r for r in rows if r["partition"] == "test"]
    assert len(test) == len(predictions)
    for r, y in zip(test, predictions):
        r["intent"] = INTENTS[y]
    file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_lambda_list_is_chosen_on_validation_and_test_never_decides(world, tmp_path):
    from merginguriel.data.config import DataConfig
    from merginguriel.evaluation.outputs import checkpoint_outputs
    from merginguriel.io import checkpoint_hash
    from merginguriel.jobs import job_from_dict, plan_job, run_job

    def job(data_path, lam):
        return job_from_dict({k: v for k, v in config(world, data_path, lam, None).items() if k not in ("output", "progress")})

    # each value as a job of its own: its validation accuracy, its weights' hash, its test predictions
    single = {}
    for lam in LAMS:
        out = run_job(plan_job(job(world.data.data_path, lam), output=tmp_path / f"lam{lam}")).output
        manifest = json.loads((out / "manifest.json").read_text())
        test = checkpoint_outputs(out, TARGET, "test", world.data, 64, "cpu", cache=False)
        single[lam] = (manifest["evaluation"]["validation"]["accuracy"], checkpoint_hash(out), test.predictions.tolist())
    val = {lam: s[0] for lam, s in single.items()}
    assert len(set(val.values())) == len(LAMS), val  # the values differ on validation: the choice means something
    best, worst = max(val, key=val.get), min(val, key=val.get)
    # the test split relabelled so that the validation-WORST value is right on every test row
    leak = tmp_path / "leak"
    relabel_test(Path(world.data.data_path), leak, single[worst][2])
    leak_data = DataConfig(source="release", data_path=str(leak), root=str(world.root), max_length=32)
    worst_test = float(checkpoint_outputs(tmp_path / f"lam{worst}", TARGET, "test", leak_data, 64, "cpu", cache=False)
                       .correct.float().mean())
    assert worst_test == 1.0

    cfg = config(world, leak, LAMS, tmp_path / "chosen")
    res = merge(world, tmp_path, cfg, "list")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "chosen"
    manifest = json.loads((out / "manifest.json").read_text())
    choice = manifest["choice"]
    assert choice["split"] == "validation" and choice["count"] == len(LAMS) and choice["chosen"] == {"lam": best}
    assert [c["values"]["lam"] for c in choice["candidates"]] == LAMS
    assert [c["validation_accuracy"] for c in choice["candidates"]] == pytest.approx([val[lam] for lam in LAMS], abs=1e-9)
    assert [c["hash"] for c in choice["candidates"]] == [single[lam][1] for lam in LAMS]
    assert manifest["params"]["lam"] == best and manifest["hash"] == single[best][1] == checkpoint_hash(out)
    assert manifest["evaluation"]["test"]["accuracy"] < worst_test  # a choice that read test would have kept `worst`
    assert f"chosen on validation: lam={best}, the best of {len(LAMS)} candidates" in res.stdout
    # one job, one key (the list is its identity), no candidate left on disk
    listed = job(leak, LAMS)
    assert manifest["job"]["key"] == listed.key() == listed.check().key()
    assert manifest["job"]["config"]["merge"]["params"] == {"lam": LAMS, "weighted": False}
    assert not list(tmp_path.glob(".chosen.tmp-*"))
    # a rerun reuses the kept merge and its recorded choice
    again = run_job(plan_job(listed, output=out))
    assert again.reused and again.manifest["choice"] == choice


def test_a_bad_list_is_refused_before_any_merge_naming_the_value(world, tmp_path):
    from merginguriel.errors import InputError
    from merginguriel.jobs import job_from_dict

    cfg = config(world, world.data.data_path, [], tmp_path / "bad")
    assert_clear_error(merge(world, tmp_path, cfg, "bad"), "merge.params.lam is an empty list")
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))
    for lam, needle in (([0.3, "big"], "lam='big'"), ([0.5, "0.5"], "the same setting twice")):
        job = job_from_dict({k: v for k, v in config(world, world.data.data_path, lam, None).items()
                             if k not in ("output", "progress")})
        with pytest.raises(InputError, match=needle):
            job.check()
    untargeted = job_from_dict({"root": str(world.root), "backbone": world.layout.backbone, "selection": {"sources": SOURCES},
                                "merge": {"method": "ties", "params": {"density": [0.2, 0.4]}}})
    with pytest.raises(InputError, match="each value is tried on the target's validation split"):
        untargeted.check()


def test_a_density_list_names_its_bad_value_in_a_sweep():
    from merginguriel.errors import InputError
    from merginguriel.experiments.grid import expand

    fixed = {"target": TARGET, "root": "unused", "selection": {"sources": SOURCES},
             "merge": {"method": "ties", "params": {"density": [0.1, 0.2, 1.5]}}}
    with pytest.raises(InputError, match=r"density=1.5"):
        expand(fixed, {})
    fixed["merge"]["params"] = {"density": [0.1, 0.2, 0.4], "lam": [0.5, 1.0]}
    (point,) = expand(fixed, {})  # several lists: their product, one point
    assert [o.values for o in point.options] == [{"density": d, "lam": lam} for d in (0.1, 0.2, 0.4) for lam in (0.5, 1.0)]


def test_a_sweep_records_the_choice_and_the_report_counts_every_merge_and_each_model_once(world, tmp_path):
    """Three points for one target: TIES, the same merge spelt as task_vectors parts (identical weights: one model),
    and the paper's task arithmetic with lam chosen from two values. The report shows four merges, three models."""
    from merginguriel.cli.main import main
    from merginguriel.experiments.db import ResultsDB
    from merginguriel.experiments.runner import Sweep, run_sweep

    from transformers import AutoModelForSequenceClassification

    from conftest import save_finetuned
    from merginguriel.evaluation.outputs import checkpoint_outputs

    # the target gets a model of its own (fr-FR's weights under sw-KE's name)
    save_finetuned(world.layout, AutoModelForSequenceClassification.from_pretrained(world.layout.finetuned("fr-FR")), TARGET)
    own_test = float(checkpoint_outputs(world.layout.finetuned(TARGET), TARGET, "test", world.data, 64, "cpu", cache=False)
                     .correct.float().mean())
    fixed = {k: v for k, v in config(world, world.data.data_path, 0.5, None).items() if k not in ("output", "progress")}
    fixed.pop("merge")
    db = tmp_path / "r.sqlite"
    sweep = Sweep(name="lists", db=str(db), fixed=fixed, zip=[{
        "merge.method": ["ties", "task_vectors", "task_arithmetic"],
        "merge.params": [{}, {"sparsify": "magnitude", "consensus": "ties"}, {"weighted": False, "lam": [0.5, 1.0]}]}])
    run_sweep(sweep)
    with ResultsDB(db, readonly=True) as rdb:
        metrics = {r["method"]: r["metrics"] for r in rdb.rows()}
    assert metrics["ties"]["hash"] == metrics["task_vectors"]["hash"]  # the same model under two names
    choice = metrics["task_arithmetic"]["choice"]
    best = max(choice["candidates"], key=lambda c: c["validation_accuracy"])
    assert choice["count"] == 2 and choice["chosen"] == best["values"] and metrics["task_arithmetic"]["hash"] == best["hash"]
    hashes = {metrics["ties"]["hash"], *(c["hash"] for c in choice["candidates"])}
    assert len(hashes) == 3
    assert main(["report", "sweep", "--db", str(db), "--output", str(tmp_path / "rep")]) == 0
    summary = (tmp_path / "rep" / "summary.md").read_text()
    verdict = next(line for line in summary.splitlines() if line.startswith(f"{TARGET}:"))
    assert "best of 4 merges (3 distinct models), chosen on validation" in verdict
    assert "chosen from 4 merge(s) tried on validation, 3 distinct model(s)" in summary
    table = [line for line in summary.splitlines() if line.startswith("| ties") or line.startswith("| task_")]
    assert len(table) == 2 and any("the same weights" in line for line in table)
    assert f'"lam": {choice["chosen"]["lam"]}' in summary and "(chosen on validation from 2)" in summary
    assert verdict.endswith(f"the target's own model scores {own_test:.3f} test")  # beside the verdict


def test_the_demo_and_the_shipped_ablations_run_the_papers_task_arithmetic_with_lam_chosen_on_validation():
    import yaml

    from merginguriel.configs import config_path
    from merginguriel.experiments.runner import Sweep

    for name in ("quickstart_sweep", "ablations/dare", "ablations/dare_embedded", "ablations/consensus_neuromerging",
                 "ablations/consensus_neuromerging_embedded"):
        spec = yaml.safe_load(config_path(name).read_text(encoding="utf-8"))
        spec.setdefault("grid", {}).setdefault("target", ["sw-KE"])
        points = [p for p in Sweep.from_dict(spec).points() if p.merge.method.endswith("task_arithmetic")]
        assert points, name
        for p in points:
            assert p.canonical["weighted"] is False and len(p.options) >= 4, (name, p.canonical)
