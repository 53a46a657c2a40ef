"""The NxN transfer matrix on tiny models: per-pair equality, one load per model, one tokenisation per locale, resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import make_base, make_finetuned, write_release_data

from merginguriel.checkpoints import Layout
from merginguriel.cli.main import main as cli_main
from merginguriel.data import DataConfig
from merginguriel.data.config import DataSource
from merginguriel.errors import InputError
from merginguriel.evaluation import evaluate as ev
from merginguriel.checkpoints import NXN_CELLS as CELLS_FILE
from merginguriel.evaluation.nxn import compute_nxn

LOCS = ["es-ES", "fr-FR", "it-IT"]


def source(data: DataConfig) -> DataSource:
    """The data source of a data config (compute_nxn takes the source and the root apart, as its command does)."""
    return DataSource(source=data.source, data_path=data.data_path, max_length=data.max_length)


def family(root: Path) -> tuple[Layout, DataConfig]:
    """Three tiny 'fine-tuned' models that disagree (large perturbations) and release data in which locales differ."""
    make_base(root, "tiny")
    for i, loc in enumerate(LOCS):
        make_finetuned(root, loc, "tiny", seed=100 + i, scale=0.5)
    write_release_data(root / "data", LOCS, per_intent=(1, 2, 3), shift={"it-IT": 7, "fr-FR": 3})
    return Layout(root, "tiny"), DataConfig(source="release", data_path=str(root / "data"), root=str(root))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The matrix computed the per-pair way (one evaluate_checkpoint call per cell) in a separate root."""
    layout, data = family(tmp_path_factory.mktemp("ref"))
    rows = {s: {t: ev.evaluate_checkpoint(layout.finetuned(s), [t], "validation", data, device="cpu")[t]["accuracy"]
                for t in LOCS} for s in LOCS}
    return pd.DataFrame(rows).T.loc[LOCS, LOCS]


def counts(counter: Counter, keys) -> dict:
    return {k: counter[k] for k in keys}


def test_nxn_matches_per_pair_loading_and_tokenising_once(tmp_path, reference) -> None:
    from merginguriel.data.tokenized import TOKENIZE_CALLS

    layout, data = family(tmp_path)
    paths = [str(layout.finetuned(loc)) for loc in LOCS]
    loads0, tok0 = counts(ev.MODEL_LOADS, paths), counts(TOKENIZE_CALLS, LOCS)
    folder = compute_nxn("tiny", str(tmp_path), "validation", data=source(data), device="cpu", progress=False)
    assert {p: ev.MODEL_LOADS[p] - loads0[p] for p in paths} == {p: 1 for p in paths}
    assert {loc: TOKENIZE_CALLS[loc] - tok0[loc] for loc in LOCS} == {loc: 1 for loc in LOCS}
    matrix = pd.read_csv(folder / "evaluation_matrix.csv", index_col=0)
    assert folder == layout.nxn("validation")
    assert list(matrix.index) == LOCS and list(matrix.columns) == LOCS
    pd.testing.assert_frame_equal(matrix, reference, check_names=False, atol=1e-6, rtol=0)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["diagonal"] == pytest.approx({loc: reference.at[loc, loc] for loc in LOCS}, abs=1e-6)
    for target in LOCS:
        others = reference[target].drop(target)
        best = sorted(others.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        assert summary["best_source"][target]["source"] == best[0]
    assert summary["loads"] == 3 and summary["cells"] == {"total": 9, "computed": 9, "resumed": 0}
    assert (folder / "heatmap.png").stat().st_size > 0 and (folder / "manifest.json").is_file()
    # every cell keeps its per-example predictions, in dataset order: those of a plain forward pass over the rows
    from merginguriel.evaluation.outputs import checkpoint_outputs
    from merginguriel.io.predictions import unpack

    for cell in (json.loads(line) for line in (folder / CELLS_FILE).read_text().splitlines()):
        direct = checkpoint_outputs(layout.finetuned(cell["source"]), cell["target"], "validation", data, cache=False)
        assert torch.equal(unpack(cell["predictions"]), direct.predictions)
        assert cell["accuracy"] == pytest.approx(float(direct.correct.float().mean()), abs=1e-6)


class Interrupt(Exception):
    pass


def test_resume_after_interruption(tmp_path, reference) -> None:
    layout, data = family(tmp_path)
    seen = []

    def stop_after_four(cell: dict) -> None:  # cells are saved before the callback sees them
        seen.append(cell)
        if len(seen) == 4:  # first model's row and one cell of the second model are finished
            raise Interrupt

    with pytest.raises(Interrupt):
        compute_nxn("tiny", str(tmp_path), "validation", data=source(data), device="cpu", chunk=1, progress=False,
                    on_cell=stop_after_four)
    cells_file = layout.nxn("validation") / CELLS_FILE
    assert len(cells_file.read_text().splitlines()) == 4
    assert not (layout.nxn("validation") / "evaluation_matrix.csv").exists()
    with open(cells_file, "a") as fh:  # a torn line, as a kill in the middle of a write leaves
        fh.write('{"source": "it-IT", "tar')

    paths = {loc: str(layout.finetuned(loc)) for loc in LOCS}
    before = {loc: ev.MODEL_LOADS[p] for loc, p in paths.items()}
    rerun = []
    folder = compute_nxn("tiny", str(tmp_path), "validation", data=source(data), device="cpu", progress=False, on_cell=rerun.append)
    assert len(rerun) == 5 and {(c["source"], c["target"]) for c in rerun}.isdisjoint({(c["source"], c["target"]) for c in seen})
    assert {loc: ev.MODEL_LOADS[p] - before[loc] for loc, p in paths.items()} == {"es-ES": 0, "fr-FR": 1, "it-IT": 1}
    matrix = pd.read_csv(folder / "evaluation_matrix.csv", index_col=0)
    pd.testing.assert_frame_equal(matrix, reference, check_names=False, atol=1e-6, rtol=0)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cells"] == {"total": 9, "computed": 5, "resumed": 4}
    # a third run has nothing to do and loads nothing
    compute_nxn("tiny", str(tmp_path), "validation", data=source(data), device="cpu", progress=False)
    assert {loc: ev.MODEL_LOADS[p] - before[loc] for loc, p in paths.items()} == {"es-ES": 0, "fr-FR": 1, "it-IT": 1}


def test_cli_subset_and_bad_inputs(tmp_path, capsys) -> None:
    layout, data = family(tmp_path)
    base = ["nxn", "--backbone", "tiny", "--root", str(tmp_path), "--data.source", "release",
            "--data.data_path", data.data_path, "--device", "cpu", "--progress", "false"]
    assert cli_main([*base, "--split", "test", "--models", "[es-ES, it-IT]", "--locales", "[it-IT]"]) == 0
    matrix = pd.read_csv(layout.nxn("test") / "evaluation_matrix.csv", index_col=0)
    assert list(matrix.index) == ["es-ES", "it-IT"] and list(matrix.columns) == ["it-IT"]
    direct = ev.evaluate_checkpoint(layout.finetuned("es-ES"), ["it-IT"], "test", data, device="cpu")
    assert matrix.at["es-ES", "it-IT"] == pytest.approx(direct["it-IT"]["accuracy"], abs=1e-6)
    capsys.readouterr()
    assert cli_main([*base, "--locales", "[it-IT, xx-XX]"]) == 2
    assert "xx-XX" in capsys.readouterr().err
    assert cli_main([*base, "--models", "[sw-KE]"]) == 2
    assert "sw-KE" in capsys.readouterr().err
    with pytest.raises(InputError, match="no fine-tuned models"):
        compute_nxn("tiny", str(tmp_path / "empty"), progress=False)
    with pytest.raises(InputError, match="unknown split"):
        compute_nxn("tiny", str(tmp_path), "train", data=source(data), progress=False)
    assert not layout.nxn("validation").exists()


def test_weights_edited_after_their_manifest_are_evaluated_again(tmp_path) -> None:
    """A finished cell holds only while its model's weights are those it was computed with, whatever the manifest says."""
    from safetensors.torch import load_file, save_file

    layout, data = family(tmp_path)
    compute_nxn("tiny", str(tmp_path), "validation", data=source(data), device="cpu", progress=False)
    weights = layout.finetuned("fr-FR") / "model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v * 0.5 if k.startswith("classifier") else v for k, v in tensors.items()}, str(weights))
    rerun = []
    folder = compute_nxn("tiny", str(tmp_path), "validation", data=source(data), device="cpu", progress=False, on_cell=rerun.append)
    assert sorted((c["source"], c["target"]) for c in rerun) == [("fr-FR", t) for t in sorted(LOCS)]
    assert json.loads((folder / "summary.json").read_text())["cells"] == {"total": 9, "computed": 3, "resumed": 6}
