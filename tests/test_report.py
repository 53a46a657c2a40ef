"""The report: baselines and merging effect against a hand computation, the CLI over merged manifests, bad inputs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tiny import make_base, make_finetuned, write_release_data

from merginguriel.checkpoints import Layout
from merginguriel.cli.main import main as cli_main
from merginguriel.data import DataConfig
from merginguriel.errors import InputError
from merginguriel.evaluation import evaluate as ev
from merginguriel.evaluation.nxn import compute_nxn
from merginguriel.report import RESULT_COLUMNS, compare, markdown, write_report

# row = source model, column = evaluated locale
NXN = pd.DataFrame(
    {"de-DE": [0.90, 0.60, 0.40, 0.50], "en-US": [0.70, 0.95, 0.55, 0.65],
     "es-ES": [0.30, 0.50, 0.85, 0.62], "fr-FR": [0.45, 0.52, 0.70, 0.88]},
    index=["de-DE", "en-US", "es-ES", "fr-FR"],
)


def result(target, sources, accuracy, include_target=False, run="r1", method="linear", similarity="real") -> dict:
    return {"target": target, "method": method, "similarity": similarity, "num_sources": len(sources),
            "include_target": include_target, "accuracy": accuracy, "sources": sources,
            "weights": [1 / len(sources)] * len(sources), "run": run, "manifest_path": None}


def test_compare_against_hand_computation(tmp_path) -> None:
    rows = pd.DataFrame([result("es-ES", ["fr-FR", "en-US"], 0.60), result("es-ES", ["es-ES", "fr-FR"], 0.80, True, "r2")])
    table = compare(rows, NXN, {"es-ES": 0.02})
    exc, inc = table.iloc[0], table.iloc[1]
    # ExcTar, sources fr-FR (0.62 on es-ES) and en-US (0.50 on es-ES)
    assert exc["self"] == 0.85
    assert exc["zs_avg"] == pytest.approx((0.62 + 0.50) / 2)
    assert exc["zs_best"] == 0.62 and exc["zs_best_source"] == "fr-FR"
    assert exc["best_overall"] == 0.62 and exc["best_overall_source"] == "fr-FR"  # max of de 0.30, en 0.50, fr 0.62
    assert exc["base"] == 0.02
    assert exc["effect"] == pytest.approx(0.60 - 0.56)
    assert exc["d_zs_best"] == pytest.approx(0.60 - 0.62) and exc["d_self"] == pytest.approx(0.60 - 0.85)
    assert (exc["beats_zs_avg"], exc["beats_zs_best"], exc["beats_base"], exc["beats_self"]) == (True, False, True, False)
    assert exc["mode"] == "ExcTar"
    # IncTar: the target's own model is a source, so zs_avg includes the diagonal (definition: mean over S)
    assert inc["zs_avg"] == pytest.approx((0.85 + 0.62) / 2) and inc["zs_best_source"] == "es-ES"
    assert inc["best_overall"] == 0.62 and inc["mode"] == "IncTar"
    assert inc["effect"] == pytest.approx(0.80 - 0.735)
    text = markdown(table)
    assert text.startswith("### es-ES") and "| linear | real | 2 | IncTar | 0.8000 |" in text
    paths = write_report(table, tmp_path)
    csv = pd.read_csv(paths["csv"])
    assert csv.loc[0, "sources"] == "fr-FR en-US" and csv.loc[0, "effect"] == pytest.approx(0.04)
    assert paths["chart:es-ES"].stat().st_size > 0


def test_compare_without_base_and_ties() -> None:
    nxn = NXN.copy()
    nxn.loc["de-DE", "fr-FR"] = 0.70  # ties es-ES (0.70) for best source on fr-FR: the name decides
    table = compare(pd.DataFrame([result("fr-FR", ["es-ES", "de-DE"], 0.5)]), nxn)
    assert table.loc[0, "zs_best_source"] == "de-DE" and table.loc[0, "best_overall_source"] == "de-DE"
    assert math.isnan(table.loc[0, "base"]) and not table.loc[0, "beats_base"]


def test_bad_result_inputs() -> None:
    gap = NXN.copy()
    gap.loc["fr-FR", "es-ES"] = float("nan")
    with pytest.raises(InputError, match=r"fr-FR->es-ES"):
        compare(pd.DataFrame([result("es-ES", ["fr-FR", "en-US"], 0.6)]), gap)
    with pytest.raises(InputError, match=r"sw-KE->es-ES"):
        compare(pd.DataFrame([result("es-ES", ["sw-KE"], 0.6)]), NXN)
    with pytest.raises(InputError, match="unknown locale"):
        compare(pd.DataFrame([result("xx-XX", ["fr-FR"], 0.6)]), NXN)
    with pytest.raises(InputError, match="lack column"):
        compare(pd.DataFrame([result("es-ES", ["fr-FR"], 0.6)]).drop(columns="accuracy"), NXN)
    with pytest.raises(InputError, match=r"accuracy in \[0, 1\]"):
        compare(pd.DataFrame([result("es-ES", ["fr-FR"], 1.7)]), NXN)
    assert set(RESULT_COLUMNS) == set(result("es-ES", ["fr-FR"], 0.5))


LOCS = ["es-ES", "fr-FR", "it-IT"]


def merged_folder(layout: Layout, target: str, run: str, sources: list[str], accuracy: float | None, split="test") -> Path:
    """A merged-model folder as `merginguriel merge` writes it (weights copied from a source to have a real model)."""
    folder = layout.merged(target, run)
    shutil.copytree(layout.finetuned(sources[0]), folder)
    base = json.loads((layout.base / "manifest.json").read_text())
    manifest = {
        "kind": "merged", "method": "linear", "params": {}, "target": target, "include_target": target in sources,
        "base": {"path": str(layout.base), "hash": base["hash"]},
        "sources": [{"locale": s, "path": str(layout.finetuned(s)), "hash": "x", "weight": 1.0} for s in sources],
        "weights_normalised": [1 / len(sources)] * len(sources),
        "selection": {"target": target, "sources": sources, "similarity": "uriel", "include_target": target in sources},
    }
    if accuracy is not None:
        manifest["evaluation"] = {"split": split, "metrics": {target: {"accuracy": accuracy, "macro_f1": 0.0, "n": 180}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_report_cli_over_manifests(tmp_path, capsys) -> None:
    make_base(tmp_path, "tiny")
    for i, loc in enumerate(LOCS):
        make_finetuned(tmp_path, loc, "tiny", seed=100 + i, scale=0.5)
    write_release_data(tmp_path / "data", LOCS, per_intent=(1, 1, 3), shift={"it-IT": 7, "fr-FR": 3})
    layout = Layout(tmp_path, "tiny")
    data = DataConfig(source="release", data_path=str(tmp_path / "data"), root=str(tmp_path))
    nxn_dir = compute_nxn("tiny", str(tmp_path), "test", data=data, device="cpu", progress=False)
    nxn = pd.read_csv(nxn_dir / "evaluation_matrix.csv", index_col=0)
    merged_folder(layout, "it-IT", "recorded", ["es-ES", "fr-FR"], 0.5)
    unevaluated = merged_folder(layout, "it-IT", "unevaluated", ["fr-FR"], None)
    args = ["report", "--merged", f"{layout.home / 'merged'}/*/*", "--nxn", str(nxn_dir / "evaluation_matrix.csv"),
            "--data.source", "release", "--data.data_path", data.data_path, "--data.root", str(tmp_path), "--device", "cpu"]
    base_loads = ev.MODEL_LOADS[str(layout.base)]
    assert cli_main([*args, "--output", str(tmp_path / "rep")]) == 0
    assert ev.MODEL_LOADS[str(layout.base)] == base_loads + 1
    printed = capsys.readouterr().out
    assert "### it-IT" in printed
    rep = pd.read_csv(tmp_path / "rep" / "report.csv").set_index("run")
    base_acc = ev.evaluate_checkpoint(layout.base, ["it-IT"], "test", data, device="cpu")["it-IT"]["accuracy"]
    own = ev.evaluate_checkpoint(unevaluated, ["it-IT"], "test", data, device="cpu")["it-IT"]["accuracy"]
    assert rep.at["recorded", "accuracy"] == pytest.approx(0.5)
    assert rep.at["unevaluated", "accuracy"] == pytest.approx(own, abs=1e-6)
    assert rep.at["recorded", "base"] == pytest.approx(base_acc, abs=1e-6)
    assert rep.at["recorded", "zs_avg"] == pytest.approx((nxn.at["es-ES", "it-IT"] + nxn.at["fr-FR", "it-IT"]) / 2, abs=1e-6)
    assert rep.at["recorded", "effect"] == pytest.approx(0.5 - rep.at["recorded", "zs_avg"], abs=1e-6)
    assert rep.at["recorded", "self"] == pytest.approx(nxn.at["it-IT", "it-IT"], abs=1e-6)
    assert (tmp_path / "rep" / "it-IT.png").is_file() and (tmp_path / "rep" / "report.md").is_file()
    # the base's accuracy is cached beside the NxN matrix: a second report does not load the base again
    base_loads = ev.MODEL_LOADS[str(layout.base)]
    assert cli_main([*args, "--output", str(tmp_path / "rep2")]) == 0
    assert ev.MODEL_LOADS[str(layout.base)] == base_loads
    # bad inputs: a source the NxN lacks (found before any evaluation), nothing matched, existing output, another split
    merged_folder(layout, "sw-KE", "gap", ["es-ES"], 0.4)
    loads = sum(ev.MODEL_LOADS.values())
    assert cli_main([*args, "--output", str(tmp_path / "r5")]) == 2
    assert "es-ES->sw-KE" in capsys.readouterr().err and sum(ev.MODEL_LOADS.values()) == loads
    assert not (tmp_path / "r5").exists()
    shutil.rmtree(layout.merged("sw-KE", "gap"))
    capsys.readouterr()
    assert cli_main(["report", "--merged", str(tmp_path / "nothing*"), "--nxn", str(nxn_dir), "--output", str(tmp_path / "r3")]) == 2
    assert "matches nothing" in capsys.readouterr().err
    assert cli_main([*args, "--output", str(tmp_path / "rep")]) == 2
    assert cli_main([*args, "--split", "validation", "--output", str(tmp_path / "r4")]) == 2
    assert "computed on test" in capsys.readouterr().err and not (tmp_path / "r4").exists()
