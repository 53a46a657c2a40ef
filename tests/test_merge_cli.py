"""`merginguriel merge` from the command line and from YAML (real subprocesses), --list, --print_config, the
run-name hash, IncTar/ExcTar, and the similarity-selection seam."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import merge_refs as ref
from merginguriel.merging.cli import main
from tiny import make_family

LOCALES = ["de-DE", "fr-FR", "sw-KE", "it-IT"]
EXE = Path(sys.executable).parent / "merginguriel"


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    return make_family(root, LOCALES)


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "merginguriel.cli.main"]
    return subprocess.run([*cmd, "merge", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def common(layout) -> list[str]:
    return ["--root", str(layout.root), "--backbone", layout.backbone, "--progress", "false"]


def test_command_line_merge_writes_the_expected_model(family):
    res = cli(*common(family), "--target", "sw-KE", "--sources", "de-DE", "fr-FR", "--weights", "0.75", "0.25",
              "--method", "ties", "--method_params.density", "0.4", "--method_params.scope", "tensor")
    assert res.returncode == 0, res.stderr
    runs = list((family.root / family.backbone / "merged" / "sw-KE").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("ties-")
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["params"]["density"] == 0.4 and manifest["params"]["scope"] == "tensor"
    base = ref.load(family.base)
    want = ref.ties(base, [ref.load(family.finetuned(l)) for l in ("de-DE", "fr-FR")], [0.75, 0.25], 0.4, "tensor", rounding="floor")
    got = ref.load(runs[0])
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=2e-6, rtol=1e-5)


def test_yaml_config_with_override_and_print_config(family, tmp_path):
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(
        f"root: {family.root}\nbackbone: {family.backbone}\ntarget: it-IT\nsources: [de-DE, sw-KE]\nweights: [1, 3]\n"
        "method: task_arithmetic\nmethod_params:\n  lam: 0.5\nexclude: ['*embeddings*']\nprogress: false\n"
        f"output: {tmp_path / 'out'}\n"
    )
    shown = cli("--config", str(cfg), "--method_params.lam", "0.25", "--print_config")
    assert shown.returncode == 0, shown.stderr
    assert "lam: 0.25" in shown.stdout and "task_arithmetic" in shown.stdout
    assert not (tmp_path / "out").exists()
    res = cli("--config", str(cfg), "--method_params.lam", "0.25")
    assert res.returncode == 0, res.stderr
    base = ref.load(family.base)
    want = ref.task_arithmetic(base, [ref.load(family.finetuned(l)) for l in ("de-DE", "sw-KE")], [1, 3], 0.25)
    got = ref.load(tmp_path / "out")
    for n in want:
        expected = base[n] if "embeddings" in n else want[n]
        torch.testing.assert_close(got[n], expected, atol=2e-6, rtol=1e-5)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["params"] == {"lam": 0.25, "weighted": True}
    assert manifest["exclude"]["patterns"] == ["*embeddings*"]


def test_bad_input_exits_2_with_the_message_and_writes_nothing(family, tmp_path):
    res = cli(*common(family), "--target", "sw-KE", "--sources", "de-DE", "fr-FR", "--weights", "1", "-1",
              "--output", str(tmp_path / "bad"))
    assert res.returncode == 2
    assert "weights must be finite and >= 0" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "bad").exists()


def test_list_shows_every_method_with_parameters(capsys):
    assert main(["--list"]) == 0
    text = capsys.readouterr().out
    for name in ("linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs", "directional_consensus", "neuromerging", "slerp"):
        assert f"\n{name}: " in "\n" + text
    assert "density (float, default 0.2)" in text and "adamerging" in text


def test_run_name_is_a_hash_of_the_config(family, tmp_path, capsys):
    args = [*common(family), "--target", "de-DE", "--sources", "[fr-FR,it-IT]", "--method", "linear"]
    assert main(args) == 0
    assert main([*args, "--method_params.normalise", "false"]) == 0
    runs = sorted(p.name for p in (family.root / family.backbone / "merged" / "de-DE").iterdir())
    assert len(runs) == 2 and all(r.startswith("linear-") for r in runs)
    from merginguriel.errors import InputError

    with pytest.raises(InputError, match="already exists"):
        main(args)  # the same config again: same run name, refused instead of overwritten
    manifest = json.loads((family.root / family.backbone / "merged" / "de-DE" / runs[0] / "manifest.json").read_text())
    assert manifest["params"]["weighting"] == "average"


def test_include_target_checks(family, tmp_path):
    from merginguriel.errors import InputError

    base_args = [*common(family), "--target", "sw-KE", "--output", str(tmp_path / "o")]
    with pytest.raises(InputError, match="IncTar"):
        main([*base_args, "--sources", "[de-DE,fr-FR]", "--include_target", "true"])
    with pytest.raises(InputError, match="ExcTar"):
        main([*base_args, "--sources", "[de-DE,sw-KE]", "--include_target", "false"])
    assert main([*base_args, "--sources", "[de-DE,sw-KE]", "--include_target", "true"]) == 0
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["include_target"] is True


def test_linear_weighting_must_match_where_weights_come_from(family, tmp_path):
    from merginguriel.errors import InputError

    with pytest.raises(InputError, match="needs --weights"):
        main([*common(family), "--sources", "[de-DE,fr-FR]", "--method_params.weighting", "manual", "--output", str(tmp_path / "o")])
    with pytest.raises(InputError, match="needs --similarity"):
        main([*common(family), "--sources", "[de-DE,fr-FR]", "--weights", "[1,2]", "--method_params.weighting", "similarity",
              "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_selection_path_records_the_selection(family, tmp_path):
    try:
        from merginguriel.similarity import select_for_target
    except ImportError:
        pytest.skip("merginguriel.similarity.select_for_target is not available yet")
    out = tmp_path / "sel"
    assert main([*common(family), "--target", "sw-KE", "--similarity", "uriel", "--num_sources", "2",
                 "--method", "linear", "--output", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sel = select_for_target("sw-KE", "uriel", 2, False, "scores", ["de-DE", "fr-FR", "it-IT", "sw-KE"], root=str(family.root))
    assert manifest["selection"]["sources"] == sel.sources
    assert [s["locale"] for s in manifest["sources"]] == sel.sources
    assert [s["weight"] for s in manifest["sources"]] == pytest.approx(sel.weights)
    assert manifest["params"]["weighting"] == "similarity" and manifest["include_target"] is False
    assert "sw-KE" not in sel.sources


def test_evaluate_stores_the_target_metrics_in_the_manifest(family, tmp_path, capsys):
    from merginguriel.data.config import DataConfig
    from merginguriel.evaluation.evaluate import evaluate_checkpoint

    out = tmp_path / "evaluated"
    assert main([*common(family), "--target", "sw-KE", "--sources", "[de-DE,fr-FR]", "--evaluate", "true",
                 "--data.root", str(family.root), "--device", "cpu", "--output", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["evaluation"]["split"] == "validation"
    want = evaluate_checkpoint(out, ["sw-KE"], split="validation", data=DataConfig(root=str(family.root)), device="cpu")
    assert manifest["evaluation"]["metrics"]["sw-KE"] == pytest.approx(want["sw-KE"])
    assert f"accuracy {want['sw-KE']['accuracy']:.4f}" in capsys.readouterr().out
