"""`merginguriel merge` from the command line and from YAML (real subprocesses and in-process), --list, --dry-run,
--print_config, the run name, reruns, IncTar/ExcTar, method names, and the similarity-selection seam."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import torch

import merge_refs as ref
from merginguriel.cli.main import run
from merginguriel.errors import InputError

LOCALES = ["de-DE", "fr-FR", "sw-KE", "it-IT"]
EXE = Path(sys.executable).parent / "merginguriel"


@pytest.fixture(scope="module")
def family(tiny_family_factory):
    return tiny_family_factory(LOCALES)


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "merginguriel.cli.main"]
    return subprocess.run([*cmd, "merge", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def common(layout) -> list[str]:
    # no evaluation here: the tiny family has no data (evaluation is tested in test_experiment_sweep / test_report)
    return ["--root", str(layout.root), "--backbone", layout.backbone, "--progress", "false", "--evaluate.splits", "[]"]


def main(args: list[str]) -> int:
    """The command in-process (errors raise, as the command line prints them)."""
    return run("merge", args)


def test_command_line_merge_writes_the_expected_model(family):
    res = cli(*common(family), "--target", "sw-KE", "--selection.sources", "de-DE", "fr-FR", "--selection.weights", "0.75",
              "0.25", "--merge.method", "ties", "--merge.params.density", "0.4", "--merge.params.scope", "tensor")
    assert res.returncode == 0, res.stderr
    runs = [p for p in (family.root / family.backbone / "merged" / "sw-KE").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1 and runs[0].name.startswith("ties-")
    # merge prints the chosen sources and their weights
    assert "source de-DE    weight 0.7500" in res.stdout and "source fr-FR    weight 0.2500" in res.stdout
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["params"]["density"] == 0.4 and manifest["params"]["scope"] == "tensor"
    assert manifest["job"]["config"]["merge"]["method"] == "ties"
    base = ref.load(family.base)
    want = ref.ties(base, [ref.load(family.finetuned(l)) for l in ("de-DE", "fr-FR")], [0.75, 0.25], 0.4, "tensor", rounding="floor")
    got = ref.load(runs[0])
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=2e-6, rtol=1e-5)


def test_yaml_config_with_override_print_config_and_dry_run(family, tmp_path):
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(
        f"root: {family.root}\nbackbone: {family.backbone}\ntarget: it-IT\n"
        "selection: {sources: [de-DE, sw-KE], weights: [1, 3]}\n"
        "merge:\n  method: task_arithmetic\n  params: {lam: 0.5}\n  exclude: ['*embeddings*']\n"
        f"evaluate: {{splits: []}}\nprogress: false\noutput: {tmp_path / 'out'}\n"
    )
    shown = cli("-c", str(cfg), "--merge.params.lam", "0.25", "--print_config")
    assert shown.returncode == 0, shown.stderr
    assert "lam: 0.25" in shown.stdout and "task_arithmetic" in shown.stdout
    assert not (tmp_path / "out").exists()
    dry = cli("-c", str(cfg), "--merge.params.lam", "0.25", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "source sw-KE    weight 0.7500" in dry.stdout and "expected peak memory" in dry.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    res = cli("-c", str(cfg), "--merge.params.lam", "0.25")
    assert res.returncode == 0, res.stderr
    base = ref.load(family.base)
    want = ref.task_arithmetic(base, [ref.load(family.finetuned(l)) for l in ("de-DE", "sw-KE")], [1, 3], 0.25)
    got = ref.load(tmp_path / "out")
    for n in want:
        expected = base[n] if "embeddings" in n else want[n]
        torch.testing.assert_close(got[n], expected, atol=2e-6, rtol=1e-5)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["params"]["lam"] == 0.25
    assert manifest["exclude"]["patterns"] == ["*embeddings*"]


def test_bad_input_exits_2_with_the_message_and_writes_nothing(family, tmp_path):
    res = cli(*common(family), "--target", "sw-KE", "--selection.sources", "de-DE", "fr-FR", "--selection.weights", "1", "-1",
              "--merge.method", "linear", "--output", str(tmp_path / "bad"))
    assert res.returncode == 2
    assert "weights must be finite and >= 0" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "bad").exists()


def test_list_shows_every_method_with_parameters(capsys):
    assert main(["--list"]) == 0
    text = capsys.readouterr().out
    for name in ("linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs", "directional_consensus", "neuromerging",
                 "slerp", "fisher", "regmean", "similarity", "average", "adamerging"):
        assert f"\n{name}: " in "\n" + text
    assert "density (float, default 0.2)" in text


def test_run_name_is_a_hash_of_the_job_and_a_rerun_reuses(family, capsys):
    args = [*common(family), "--target", "de-DE", "--selection.sources", "[fr-FR,it-IT]", "--merge.method", "average"]
    assert main(args) == 0
    assert main([*args, "--merge.dtype", "float16"]) == 0
    folder = family.root / family.backbone / "merged" / "de-DE"
    runs = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert len(runs) == 2 and all(r.startswith("average-") for r in runs)
    capsys.readouterr()
    stamp = {r: (folder / r / "model.safetensors").stat().st_mtime_ns for r in runs}
    assert main(args) == 0  # the same job again: reused, not refused and not merged again
    assert "reused" in capsys.readouterr().out
    assert {r: (folder / r / "model.safetensors").stat().st_mtime_ns for r in runs} == stamp
    manifest = json.loads((folder / runs[0] / "manifest.json").read_text())
    assert manifest["params"]["weighting"] == "average" and manifest["weights_normalised"] == [0.5, 0.5]


def test_changed_inputs_need_overwrite(tiny_family_factory, tmp_path):
    from conftest import make_finetuned

    fam = tiny_family_factory(["de-DE", "fr-FR", "sw-KE"], root=tmp_path)
    args = [*common(fam), "--target", "sw-KE", "--selection.sources", "[de-DE,fr-FR]", "--merge.method", "average"]
    assert main(args) == 0
    make_finetuned(fam.root, "fr-FR", fam.backbone, seed=999)  # fr-FR fine-tuned again: the merge's input changed
    with pytest.raises(InputError, match="source fr-FR changed.*--overwrite true"):
        main(args)
    assert main([*args, "--overwrite", "true"]) == 0


def test_include_target_checks(family, tmp_path):
    base_args = [*common(family), "--target", "sw-KE", "--merge.method", "linear", "--output", str(tmp_path / "o")]
    with pytest.raises(InputError, match="IncTar"):
        main([*base_args, "--selection.sources", "[de-DE,fr-FR]", "--selection.include_target", "true"])
    with pytest.raises(InputError, match="ExcTar"):
        main([*base_args, "--selection.sources", "[de-DE,sw-KE]", "--selection.include_target", "false"])
    assert main([*base_args, "--selection.sources", "[de-DE,sw-KE]", "--selection.include_target", "true"]) == 0
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["include_target"] is True


def test_method_names_mean_the_same_everywhere(family, tmp_path):
    with pytest.raises(InputError, match="method similarity .* needs selection.similarity"):
        main([*common(family), "--selection.sources", "[de-DE,fr-FR]", "--merge.method", "similarity",
              "--output", str(tmp_path / "o")])
    with pytest.raises(InputError, match="needs selection.weights"):
        main([*common(family), "--selection.sources", "[de-DE,fr-FR]", "--merge.method", "linear",
              "--merge.params.weighting", "manual", "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_similarity_method_with_a_similarity_selection(family, tmp_path):
    from merginguriel.similarity import select_for_target

    out = tmp_path / "sel"
    assert main([*common(family), "--target", "sw-KE", "--selection.similarity", "uriel", "--selection.num_sources", "2",
                 "--merge.method", "similarity", "--output", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sel = select_for_target("sw-KE", "uriel", 2, False, "scores", ["de-DE", "fr-FR", "it-IT", "sw-KE"], root=str(family.root))
    assert manifest["selection"]["sources"] == sel.sources and manifest["selection"]["origin"] == "similarity"
    assert [s["locale"] for s in manifest["sources"]] == sel.sources
    assert [s["weight"] for s in manifest["sources"]] == pytest.approx(sel.weights)
    assert manifest["params"]["weighting"] == "similarity" and manifest["include_target"] is False
    assert "sw-KE" not in sel.sources
    want = ref.linear(ref.load(family.base), [ref.load(family.finetuned(l)) for l in sel.sources], sel.weights)
    got = ref.load(out)
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=2e-6, rtol=1e-5)


def test_softmax_weighting_separates_sources_that_scores_cannot(family, tmp_path):
    """URIEL's (cos+1)/2 scores renormalise to near-uniform weights; the softmax mapping (temperature) makes them differ."""
    from merginguriel.similarity import select_for_target

    cands = ["de-DE", "fr-FR", "it-IT", "sw-KE"]
    flat = select_for_target("sw-KE", "uriel", 3, False, "scores", cands, root=str(family.root))
    sharp = select_for_target("sw-KE", "uriel", 3, False, "softmax", cands, root=str(family.root), temperature=0.02)
    assert sharp.sources == flat.sources
    assert max(sharp.weights) - min(sharp.weights) > 3 * (max(flat.weights) - min(flat.weights))
    import numpy as np

    z = np.exp((np.array(flat.scores) - max(flat.scores)) / 0.02)
    assert sharp.weights == pytest.approx(list(z / z.sum()))


def test_minimal_recipe_holds_only_what_was_set_and_reproduces_the_merge(family, tmp_path):
    recipe = tmp_path / "ties.yaml"
    args = [*common(family), "--target", "sw-KE", "--selection.sources", "de-DE", "fr-FR", "--selection.weights", "3", "1",
            "--merge.method", "ties", "--merge.params.lambda", "0.8", "--merge.params.density", "0.3", "--run", "shared"]
    first = cli(*args, "--save_recipe", str(recipe))
    assert first.returncode == 0, first.stderr
    saved = yaml.safe_load(recipe.read_text())
    # only what was given (mergekit's `lambda` under its canonical name); no AdaMerging, trainer, data or device keys
    assert saved == {"target": "sw-KE", "backbone": family.backbone, "root": str(family.root),
                     "selection": {"sources": ["de-DE", "fr-FR"], "weights": [3.0, 1.0]},
                     "merge": {"method": "ties", "params": {"lam": 0.8, "density": 0.3}},
                     "evaluate": {"splits": []}, "run": "shared", "progress": False}
    out = family.root / family.backbone / "merged" / "sw-KE" / "shared"
    made = json.loads((out / "manifest.json").read_text())
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again = cli("-c", str(recipe))
    assert again.returncode == 0, again.stderr
    assert f"merged model: {out} (reused" in again.stdout  # the same job key, the same output: nothing merged again
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert made["job"]["key"].startswith(recipe.read_text().splitlines()[0].split()[-1])
    # the recipe through the parser again: the same recipe (a fixed point)
    assert cli("-c", str(recipe), "--print_recipe").stdout == recipe.read_text()


def test_adamerging_recipe_keeps_only_the_options_set(family, capsys):
    """AdaMerging's parameters are merge.params like every method's; its section spelling (`--adamerging.steps`)
    gives the same job; the recipe holds only what was set, the Trainer section because the method trains."""
    from merginguriel.jobs import job_from_dict

    args = [*common(family), "--target", "sw-KE", "--selection.sources", "[de-DE,fr-FR]", "--merge.method", "adamerging",
            "--trainer.devices", "2", "--print_recipe"]
    assert main([*args, "--adamerging.steps", "3"]) == 0
    text = capsys.readouterr().out
    recipe = yaml.safe_load(text)
    assert recipe["merge"] == {"method": "adamerging", "params": {"steps": 3}} and recipe["trainer"] == {"devices": 2}
    assert "adamerging" not in recipe
    job = job_from_dict({k: v for k, v in recipe.items() if k != "progress"})
    assert text.splitlines()[0].endswith(job.key()[:12])
    assert main([*args, "--merge.params.steps", "3"]) == 0
    assert capsys.readouterr().out == text
    with pytest.raises(InputError, match="steps given both in `adamerging` and in merge.params"):
        main([*args, "--merge.params.steps", "3", "--adamerging.steps", "4"])
    with pytest.raises(InputError, match="parameters of method adamerging, but the method is ties"):
        main([*common(family), "--target", "sw-KE", "--selection.sources", "[de-DE,fr-FR]", "--merge.method", "ties",
              "--adamerging.steps", "3", "--print_recipe"])


def test_a_bad_job_leaves_no_recipe(family, tmp_path):
    res = cli(*common(family), "--selection.sources", "de-DE", "xx-XX", "--merge.method", "linear",
              "--save_recipe", str(tmp_path / "r.yaml"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not (tmp_path / "r.yaml").exists()


def test_sharded_output_loads_with_transformers(family, tmp_path):
    from transformers import AutoModelForSequenceClassification

    args = [*common(family), "--target", "it-IT", "--selection.sources", "[de-DE,fr-FR]", "--merge.method", "average"]
    assert main([*args, "--output", str(tmp_path / "whole")]) == 0
    assert main([*args, "--output", str(tmp_path / "sharded"), "--shard_mb", "0.03"]) == 0
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 2 and sorted(set(index["weight_map"].values())) == shards
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "sharded").state_dict()
    whole = ref.load(tmp_path / "whole")
    assert set(index["weight_map"]) == set(whole)
    for name, tensor in whole.items():
        assert torch.equal(loaded[name], tensor), name
