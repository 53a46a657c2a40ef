"""One method interface: a method is registered with what it needs, and a merge job runs it without knowing it.
Two methods defined here, in the test alone (nothing in merginguriel.jobs names them), run as merge jobs: one that
needs per-source statistics (computed once per source, cached, streamed to it) and one that is not streamed and needs
the target's data and a Trainer (it gets the job's data and trainer options)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import WORLD_SOURCES as SOURCES, WORLD_TARGET as TARGET, load_state, make_world, one_thread
from merginguriel.jobs import job_from_dict, run_job
from merginguriel.merging.registry import METHODS, Block, Needs, Params, Reads, Statistic, register
from merginguriel.statistics import COMPUTE_CALLS, StatisticsData, statistics_rows

_one_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("interface"), scale=0.1)


def job(world, method: str, **extra):
    return job_from_dict({
        "target": TARGET, "backbone": world.layout.backbone, "root": str(world.root), "device": "cpu",
        "data": {"source": "release", "data_path": world.data.data_path, "max_length": 32},
        "selection": {"sources": SOURCES, "weights": [0.5, 0.3, 0.2]}, "merge": {"method": method},
        "evaluate": {"splits": []}, **extra,
    })


@dataclass(frozen=True)
class ToyParams(StatisticsData, Params):
    """A toy statistics method.

    Args:
        examples: utterances per source.
        data: whose utterances.
        split: which split.
    """


def _mean_abs_row(model, rows, params, seed, device, tokenizer) -> dict[str, torch.Tensor]:
    """Per parameter: 1 + the number of example rows (a statistic whose value the test knows)."""
    return {n: torch.full_like(p, 1.0 + len(rows)) for n, p in model.named_parameters()}


TOY = Statistic("toy", compute=_mean_abs_row)


def test_a_method_that_needs_statistics_runs_as_a_job_unknown_to_the_job_layer(world):
    @register("_test_toy_statistics", ToyParams, reads=lambda p: Reads(inputs="models", statistics=("toy",)),
              needs=Needs(statistics=(TOY,), rows=statistics_rows))
    def toy(block: Block, p: ToyParams) -> torch.Tensor:
        """θ = Σ w_i s_i θ_i / Σ w_i s_i with s_i each source's toy statistic."""
        num = sum(w * s * t for w, s, t in zip(block.weights.tolist(), block.stats["toy"], block.sources))
        return num / sum(w * s for w, s in zip(block.weights.tolist(), block.stats["toy"]))

    try:
        before = COMPUTE_CALLS.copy()
        result = run_job(job(world, "_test_toy_statistics", merge={"method": "_test_toy_statistics",
                                                                   "params": {"examples": 4, "data": "sources"}}))
        assert [COMPUTE_CALLS[("toy", s)] - before[("toy", s)] for s in SOURCES] == [1, 1, 1]
        folders = [Path(f) for f in result.manifest["statistics"]["toy"]]
        assert [(f.parent.parent.name, f.parent.name) for f in folders] == [("toy", s) for s in SOURCES]  # kind, locale
        merged = load_state(result.output)
        models = [load_state(world.layout.finetuned(s)) for s in SOURCES]
        w = torch.tensor([0.5, 0.3, 0.2])
        w = w / w.sum()
        name = "roberta.encoder.layer.0.attention.self.query.weight"
        stat = 1.0 + 4  # each source's statistic: 1 + its 4 example rows
        want = sum(float(wi) * stat * m[name] for wi, m in zip(w, models)) / (stat * float(w.sum()))
        torch.testing.assert_close(merged[name], want, atol=1e-6, rtol=1e-5)
        # the same job again finds the statistics in the cache (the merge is reused too)
        again = run_job(job(world, "_test_toy_statistics", merge={"method": "_test_toy_statistics",
                                                                  "params": {"examples": 4, "data": "sources"}}))
        assert again.reused and [COMPUTE_CALLS[("toy", s)] - before[("toy", s)] for s in SOURCES] == [1, 1, 1]
    finally:
        METHODS.pop("_test_toy_statistics", None)


@dataclass(frozen=True)
class TrainedParams(Params):
    """A toy method that trains.

    Args:
        split: the target split it reads.
    """

    split: str = "validation"


def test_a_method_that_needs_target_data_and_a_trainer_gets_them_from_the_job(world):
    seen = {}

    @register("_test_trained", TrainedParams, streamed=False,
              needs=Needs(target_data=True, trainer=True, rows=lambda p, target, sources: [(target, p.split)]))
    def trained(plan, options, context) -> Path:
        """Copies the target's first source, recording what the job handed it."""
        import shutil

        from merginguriel.merging.manifest import write_merged_manifest

        seen.update(target=plan.target, trainer=context.trainer, data=context.data, params=plan.params)
        plan.output.mkdir(parents=True)
        shutil.copy(plan.sources[0].checkpoint.files[0], plan.output / "model.safetensors")
        shutil.copy(plan.sources[0].path / "config.json", plan.output / "config.json")
        write_merged_manifest(plan.output, **plan.manifest_fields(), device="cpu", timings={}, memory={})
        return plan.output

    try:
        trainer = {"accelerator": "cpu", "devices": 2, "precision": "bf16-mixed"}
        given = job(world, "_test_trained", trainer=trainer)
        result = run_job(given)
        assert seen["target"] == TARGET and seen["params"] == TrainedParams()
        assert seen["trainer"].devices == 2 and seen["data"].data_path == world.data.data_path
        # the Trainer options are part of the job's identity only for a method that trains, and only those that
        # change the result (precision, determinism; not the device count)
        assert result.manifest["job"]["config"]["trainer"]["devices"] == 2
        assert job(world, "_test_trained", trainer={**trainer, "devices": 4}).key() == given.key()
        assert job(world, "_test_trained", trainer={**trainer, "precision": "32-true"}).key() != given.key()
        assert job(world, "linear", trainer=trainer).key() == job(world, "linear").key()
        # the method needs the target's data: a job without a target is refused at its check
        from merginguriel.errors import InputError

        with pytest.raises(InputError, match="_test_trained adapts on the target's unlabelled utterances: set target"):
            job_from_dict({**given.to_dict(), "target": None, "evaluate": {"splits": []}}).check()
    finally:
        METHODS.pop("_test_trained", None)
