"""AdaMerging on tiny models: entropy goes down, the merge is task arithmetic with the learned coefficients, task- and
layer-wise agree, DDP on two CPU processes learns what one process learns, runs resume and are deterministic, and bad
input is refused before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import one_thread, WORLD_SOURCES as SOURCES, WORLD_TARGET as TARGET, load_state, make_world, task_arithmetic_reference
from merginguriel.adamerging.options import AdaMergingOptions
from merginguriel.adamerging.run import build_module
from merginguriel.errors import InputError
from merginguriel.merging import MergeContext, merge
from merginguriel.merging.methods.adamerging import adaptation
from merginguriel.merging.validate import prepare
from merginguriel.training import TrainerOptions

_one_thread = pytest.fixture(autouse=True)(one_thread)

CPU = TrainerOptions(accelerator="cpu", devices=1)


def run_adamerging(spec, options: AdaMergingOptions, trainer: TrainerOptions, data):
    """AdaMerging as a library merge runs it: ``spec``'s checked plan with these options, the data and the Trainer."""
    spec.params = options
    return merge(spec, MergeContext(data=data, trainer=trainer))


def module_for(spec, options: AdaMergingOptions):
    """The LightningModule AdaMerging trains for ``spec`` (nothing is written, so an existing output does not matter)."""
    import dataclasses

    return build_module(adaptation(prepare(dataclasses.replace(spec, overwrite=True))), options)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("ada"), scale=0.2)


def _validation_entropy(world, state: dict[str, torch.Tensor]) -> float:
    """Mean prediction entropy of a model holding ``state`` on the target's validation utterances (plain HF forward)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(world.layout.base).eval()
    model.load_state_dict(state, strict=False)
    tok = AutoTokenizer.from_pretrained(world.layout.base)
    rows = [json.loads(line) for line in (Path(world.data.data_path) / "1.1/data" / f"{TARGET}.jsonl").read_text().splitlines()]
    texts = [r["utt"] for r in rows if r["partition"] == "dev"]
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(**enc).logits, -1)
    return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())


def _coefficients(folder: Path):
    return json.loads((folder / "coefficients.json").read_text())["coefficients"]


def test_adamerging_lowers_entropy_and_writes_task_arithmetic(world):
    spec = world.spec("lower")
    opts = AdaMergingOptions(granularity="layer", steps=12, lr=0.05, batch_size=8)
    out = run_adamerging(spec, opts, CPU, world.data)
    coeffs = _coefficients(out)
    sources = [world.layout.finetuned(s) for s in SOURCES]
    before = _validation_entropy(world, task_arithmetic_reference(world.layout.base, sources, [0.3] * 3))
    written = load_state(out)
    after = _validation_entropy(world, written)
    assert after < before - 0.05, (before, after)
    # The written model is task arithmetic with the learned (layer-wise) coefficients, and they stayed in [0, 1].
    ref = task_arithmetic_reference(world.layout.base, sources, [coeffs[s] for s in SOURCES])
    for name, t in ref.items():
        torch.testing.assert_close(written[name], t, atol=2e-6, rtol=1e-5)
    values = [v for s in SOURCES for v in coeffs[s].values()]
    assert all(0.0 <= v <= 1.0 for v in values) and max(values) != min(values)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "merged" and manifest["method"] == "adamerging"
    assert [s["locale"] for s in manifest["sources"]] == SOURCES and manifest["adaptation"]["split"] == "validation"
    assert manifest["warnings"] == []
    assert (out / "metrics.csv").read_text().count("lambda/de-DE/mean") == 1  # coefficients logged with every step
    # the model card lists every source with its weight and its learned coefficients' mean
    card = (out / "README.md").read_text()
    assert "\n- merge\n- adamerging\n" in card and "learned coefficient (mean over tensors)" in card
    for s, w in zip(SOURCES, manifest["weights_normalised"]):
        mean = sum(coeffs[s].values()) / len(coeffs[s])
        assert f"| {s} | {w:.4f} | {mean:.4g} | fine-tuned from the shared base |" in card


def test_frozen_taskwise_equals_task_arithmetic_and_forward_matches(world):
    weights = [0.5, 0.2, 0.3]
    spec = world.spec("frozen", weights=weights)
    opts = AdaMergingOptions(granularity="task", init="weights", steps=3, lr=0.0, batch_size=4)
    out = run_adamerging(spec, opts, CPU, world.data)
    assert _coefficients(out) == pytest.approx(dict(zip(SOURCES, weights)))
    ref = task_arithmetic_reference(world.layout.base, [world.layout.finetuned(s) for s in SOURCES], weights)
    written = load_state(out)
    for name, t in ref.items():
        torch.testing.assert_close(written[name], t, atol=2e-6, rtol=1e-5)
    # The functional forward (embedding rows gathered per batch) equals the plain forward of the written model.
    from transformers import AutoModelForSequenceClassification

    module = module_for(spec, opts)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = torch.tensor([[0, 10, 11, 12, 2], [0, 30, 2, 1, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        torch.testing.assert_close(module(ids, mask), model(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)


def test_layerwise_with_equal_coefficients_equals_taskwise(world):
    spec = world.spec("unused")
    task = module_for(spec, AdaMergingOptions(granularity="task", init_value=0.4))
    layer = module_for(spec, AdaMergingOptions(granularity="layer", init_value=0.4))
    assert layer.coefficients.shape == (3, len(layer.tensor_names))
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 2, 1, 1, 1]])
    mask = (ids != 1).long()
    lt, ll = task(ids, mask), layer(ids, mask)
    torch.testing.assert_close(lt, ll)
    # Gradients agree too: d/dλ_i (task-wise) is the sum over tensors of the layer-wise gradients.
    from merginguriel.adamerging.module import mean_entropy

    mean_entropy(lt).backward()
    mean_entropy(ll).backward()
    torch.testing.assert_close(task.coefficients.grad, layer.coefficients.grad.sum(1), atol=1e-6, rtol=1e-4)


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from merginguriel.merging import MergeContext, MergeSpec, Source, merge
    from merginguriel.training import TrainerOptions
    from merginguriel.data.config import DataConfig

    cfg = json.loads(Path(sys.argv[1]).read_text())
    spec = MergeSpec(base=cfg["base"], sources=[Source(path=p, locale=l, weight=1 / 3) for p, l in cfg["sources"]],
                     method="adamerging", params=cfg["options"], output=cfg["output"], target=cfg["target"], progress=False)
    merge(spec, MergeContext(data=DataConfig(**cfg["data"]), trainer=TrainerOptions(**cfg["trainer"])))
    """
)


def test_ddp_two_processes_match_one_process(world, tmp_path):
    opts = {"granularity": "task", "steps": 4, "lr": 0.05, "batch_size": 8}
    single = run_adamerging(world.spec("single"), AdaMergingOptions(**opts), CPU, world.data)
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    cfg = {
        "base": str(world.layout.base),
        "sources": [[str(world.layout.finetuned(s)), s] for s in SOURCES],
        "output": str(world.layout.merged(TARGET, "ddp")),
        "target": TARGET,
        "options": opts,
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        "data": {"source": "release", "data_path": world.data.data_path, "root": world.data.root, "max_length": 32},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cfg.json")], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = Path(cfg["output"])
    assert json.loads((ddp / "manifest.json").read_text())["adaptation"]["world_size"] == 2
    a, b = _coefficients(single), _coefficients(ddp)
    assert a == pytest.approx(b, abs=1e-5)
    assert a != pytest.approx({s: 0.3 for s in SOURCES}, abs=1e-3)  # they did move


def test_resume_from_checkpoint_continues_the_same_run(world):
    opts = dict(granularity="layer", lr=0.05, batch_size=4, checkpoint_every=3)
    straight = run_adamerging(world.spec("straight"), AdaMergingOptions(steps=6, **opts), CPU, world.data)
    again = run_adamerging(world.spec("again"), AdaMergingOptions(steps=6, **opts), CPU, world.data)
    assert _coefficients(straight) == _coefficients(again)  # deterministic under the seed
    half = run_adamerging(world.spec("resumed"), AdaMergingOptions(steps=3, **opts), CPU, world.data)
    first = _coefficients(half)
    resumed = run_adamerging(world.spec("resumed", overwrite=True), AdaMergingOptions(steps=6, **opts), CPU, world.data)
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["adaptation"]["resumed_from"].endswith("last.ckpt")
    assert _coefficients(resumed) != first
    import csv

    with open(resumed / "metrics.csv", newline="") as fh:
        logged = sorted(int(r["step"]) for r in csv.DictReader(fh) if r.get("lambda/de-DE/mean"))
    assert logged == [1, 2, 3, 4, 5, 6]  # both attempts' coefficient logs are kept
    a, b = _coefficients(straight), _coefficients(resumed)
    for s in SOURCES:
        assert a[s] == pytest.approx(b[s], abs=1e-6)


def test_plus_plus_trims_and_elects(world):
    from merginguriel.adamerging.vectors import ties_process

    tvs = {"a": torch.tensor([[1.0, -4.0, 0.5], [-2.0, 3.0, 0.1]]), "b": torch.tensor([[0.2, 5.0], [-0.3, -6.0]])}
    ties_process(tvs, density=0.6)  # each source keeps its 3 largest of 5 magnitudes
    # source 0 keeps -4, 5, 1 ; source 1 keeps -2, 3, -6 ; elected signs: a = [-, -, 0], b = [0, -]
    torch.testing.assert_close(tvs["a"], torch.tensor([[0.0, -4.0, 0.0], [-2.0, 0.0, 0.0]]))
    torch.testing.assert_close(tvs["b"], torch.tensor([[0.0, 0.0], [0.0, -6.0]]))
    out = run_adamerging(world.spec("pp"), AdaMergingOptions(plus_plus=True, steps=2, batch_size=4), CPU, world.data)
    assert json.loads((out / "manifest.json").read_text())["params"]["plus_plus"] is True


def test_bad_input_is_refused_before_writing(world, tmp_path):
    opts = AdaMergingOptions(steps=1, batch_size=4)
    with pytest.raises(InputError, match="no target"):
        run_adamerging(world.spec("x", target=None), opts, CPU, world.data)
    with pytest.raises(InputError, match="test-set leakage"):
        run_adamerging(world.spec("x"), AdaMergingOptions(split="test"), CPU, world.data)
    with pytest.raises(InputError, match="divide evenly"):
        run_adamerging(world.spec("x"), AdaMergingOptions(batch_size=3), TrainerOptions(accelerator="cpu", devices=2, strategy="ddp"), world.data)
    assert not world.layout.merged(TARGET, "x").exists()
    # The test split with explicit consent runs, warns and records the warning.
    with pytest.warns(UserWarning, match="TEST split"):
        out = run_adamerging(world.spec("leak"), AdaMergingOptions(split="test", allow_test_split=True, steps=1, batch_size=4), CPU, world.data)
    assert "TEST split" in json.loads((out / "manifest.json").read_text())["warnings"][0]


def test_empty_split_and_mismatched_models(tmp_path):
    w = make_world(tmp_path / "empty", sizes={"train": 5, "dev": 0, "test": 3})
    with pytest.raises(InputError, match=r"sw-KE has no validation rows \(partition .dev.\) in .*sw-KE.jsonl"):
        run_adamerging(w.spec("x"), AdaMergingOptions(steps=1), CPU, w.data)
    assert not w.layout.merged(TARGET, "x").exists()
    # A source of another architecture (different hidden size) under the same name.
    import shutil

    from conftest import make_base

    other = make_base(tmp_path / "other", hidden=16, intermediate=32)
    shutil.rmtree(w.layout.finetuned(SOURCES[0]))
    shutil.copytree(other, w.layout.finetuned(SOURCES[0]))
    with pytest.raises(InputError, match="shape"):
        run_adamerging(w.spec("y"), AdaMergingOptions(steps=1), CPU, w.data)
    assert not w.layout.merged(TARGET, "y").exists()


def test_embedding_rows_from_files_equal_rows_held_in_memory(world):
    spec = world.spec("unused")
    from_files = module_for(spec, AdaMergingOptions(granularity="layer", embedding_storage="file", init_value=0.45))
    in_memory = module_for(spec, AdaMergingOptions(granularity="layer", embedding_storage="device", init_value=0.45))
    assert from_files.model.get_input_embeddings().weight.numel() == 0  # the base's matrix is not held either
    assert from_files.embedding_name in in_memory.task_vectors and from_files.embedding_name not in from_files.task_vectors
    ids = torch.tensor([[0, 17, 17, 3, 199, 2], [0, 45, 2, 1, 1, 1]])
    mask = (ids != 1).long()
    from merginguriel.adamerging.module import mean_entropy

    a, b = from_files(ids, mask), in_memory(ids, mask)
    torch.testing.assert_close(a, b)
    mean_entropy(a).backward()
    mean_entropy(b).backward()
    ga = dict(zip(from_files.tensor_names, from_files.coefficients.grad.T))
    gb = dict(zip(in_memory.tensor_names, in_memory.coefficients.grad.T))
    for name in gb:
        torch.testing.assert_close(ga[name], gb[name], atol=1e-7, rtol=1e-5)
    emb = from_files.embedding_name
    assert ga[emb].abs().sum() > 0
    full_a, full_b = from_files.merged_state_dict(), in_memory.merged_state_dict()
    torch.testing.assert_close(full_a[emb], full_b[emb])


@pytest.fixture(scope="module")
def teacher_world(tmp_path_factory):
    from conftest import make_teacher_world

    return make_teacher_world(tmp_path_factory.mktemp("teacher"))


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_defaults_move_the_coefficients_and_lower_the_entropy_on_teacher_labelled_data(teacher_world):
    """With the default optimiser settings (the paper's 500 steps and init 0.3, lr 1e-2) the task-wise coefficients
    leave their initial value by far more than the old defaults allowed (lr 1e-3 × 100 steps: at most 0.1), they
    separate (the source whose units are permuted is trusted least), the written model's entropy on the target's
    validation utterances is lower than the starting merge's, and the manifest and the plot hold the trajectory."""
    defaults = AdaMergingOptions()
    assert (defaults.steps, defaults.lr, defaults.init_value, defaults.init) == (500, 1e-2, 0.3, "constant")
    world = teacher_world
    out = run_adamerging(world.spec("defaults"), AdaMergingOptions(granularity="task"), CPU, world.data)
    coeffs = _coefficients(out)
    assert max(abs(v - 0.3) for v in coeffs.values()) > 0.3, coeffs
    assert coeffs["es-ES"] < min(coeffs["de-DE"], coeffs["fr-FR"]) - 0.2, coeffs
    sources = [world.layout.finetuned(s) for s in SOURCES]
    before = _validation_entropy(world, task_arithmetic_reference(world.layout.base, sources, [0.3] * 3))
    after = _validation_entropy(world, load_state(out))
    assert after < before - 0.3, (before, after)
    curve = json.loads((out / "manifest.json").read_text())["adaptation"]["trajectory"]
    assert curve["entropy_steps"] == list(range(500)) and curve["lambda_steps"] == list(range(501))
    for s in SOURCES:
        assert curve["lambda"][s][0] == pytest.approx(0.3) and curve["lambda"][s][-1] == pytest.approx(coeffs[s], abs=1e-5)
    assert sum(curve["entropy"][-50:]) / 50 < curve["entropy"][0] - 0.5  # the batch entropy at init vs the last 50
    assert curve["summary"]["max_abs_change"] == pytest.approx(max(abs(v - 0.3) for v in coeffs.values()), abs=1e-5)
    assert curve["plot"] == "adamerging.png" and _png(out / "adamerging.png")


def test_layerwise_trajectory_records_each_sources_mean_and_spread(world):
    out = run_adamerging(world.spec("trajectory"), AdaMergingOptions(granularity="layer", steps=6, batch_size=4), CPU, world.data)
    coeffs = _coefficients(out)
    curve = json.loads((out / "manifest.json").read_text())["adaptation"]["trajectory"]
    assert curve["granularity"] == "layer" and curve["lambda_steps"] == list(range(7)) and len(curve["entropy"]) == 6
    for s in SOURCES:
        values = sorted(coeffs[s].values())
        assert curve["lambda"][s][-1] == pytest.approx(sum(values) / len(values), abs=1e-5)
        q25, q75 = (torch.quantile(torch.tensor(values, dtype=torch.float64), q).item() for q in (0.25, 0.75))
        assert curve["lambda_range"][s]["q25"][-1] == pytest.approx(q25, abs=1e-4)
        assert curve["lambda_range"][s]["q75"][-1] == pytest.approx(q75, abs=1e-4)
        assert curve["lambda"][s][0] == pytest.approx(0.3) and curve["lambda_range"][s]["q25"][0] == pytest.approx(0.3)
    assert _png(out / "adamerging.png")


def test_trajectory_from_log_rows_aligns_steps_and_keeps_a_resumed_steps_later_value():
    from types import SimpleNamespace

    from merginguriel.adamerging.trajectory import trajectory

    module = SimpleNamespace(
        source_names=["a", "b"], granularity="task", tensor_names=["t"],
        initial_coefficients=torch.tensor([0.3, 0.3]), coefficients=torch.nn.Parameter(torch.tensor([0.5, 0.1])),
    )
    rows = [
        {"entropy": "2.0", "epoch": "0", "step": "0"}, {"step": "1", "lambda/a": "0.4", "lambda/b": "0.2"},
        {"entropy": "1.5", "epoch": "0", "step": "1"}, {"step": "2", "lambda/a": "0.45", "lambda/b": "0.15"},
        # a resumed attempt repeats step 2 (after the checkpoint at step 1) with other values, then goes on
        {"entropy": "1.4", "epoch": "0", "step": "1"}, {"step": "2", "lambda/a": "0.46", "lambda/b": "0.14"},
        {"entropy": "1.2", "epoch": "0", "step": "2"}, {"step": "3", "lambda/a": "0.5", "lambda/b": "0.1"},
    ]
    curve = trajectory(rows, module)
    assert curve["entropy_steps"] == [0, 1, 2] and curve["entropy"] == [2.0, 1.4, 1.2]
    assert curve["lambda_steps"] == [0, 1, 2, 3]
    assert curve["lambda"] == {"a": [0.3, 0.4, 0.46, 0.5], "b": [0.3, 0.2, 0.14, 0.1]}
    assert curve["summary"]["max_abs_change"] == pytest.approx(0.2)
