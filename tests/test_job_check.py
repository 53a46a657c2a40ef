"""A merge job's one check: ``check()`` returns a new, frozen job with typed parameters and the same key; one job
(similarity selection, TIES, judged on validation and test) checks each of its inputs once, counted by a profiler;
and the leak guard of REAL selection: a test-split NxN matrix is refused, and its use when allowed is recorded."""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import threading
from pathlib import Path

import pytest

from conftest import WORLD_SOURCES as SOURCES, WORLD_TARGET as TARGET, make_world, one_thread
from merginguriel.errors import InputError
from merginguriel.jobs import MergeJob, plan_job, run_job

_one_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("check"), scale=0.1)


def job(world, **changes) -> MergeJob:
    config = {
        "target": TARGET, "backbone": world.layout.backbone, "root": str(world.root), "device": "cpu",
        "data": {"source": "release", "data_path": world.data.data_path, "max_length": 32},
        "selection": {"similarity": "uriel", "num_sources": 2},
        "merge": {"method": "ties", "params": {"density": 0.5}},
        "evaluate": {"splits": ["validation", "test"], "batch_size": 64, "features": False},
    }
    for dotted, value in changes.items():
        section, _, name = dotted.partition(".")
        if name:
            config[section] = {**config[section], name: value}
        else:
            config[section] = value
    from merginguriel.jobs import job_from_dict

    return job_from_dict(config)


def test_check_returns_a_new_frozen_job_and_leaves_the_key_as_it_was(world):
    """A job given mergekit's ``lambda`` as a string: check() parses it once into the typed parameters and changes
    nothing, so the key is the same before and after, and the same as the canonical spelling's."""
    given = job(world, **{"merge.params": {"density": "0.5", "lambda": "0.5"}})
    before = given.key()
    checked = given.check()
    assert given.merge.params == {"density": "0.5", "lambda": "0.5"}  # the job is left as it was
    assert checked.key() == before == given.key()
    assert checked.params.lam == 0.5 and checked.params.density == 0.5 and type(checked.params).__name__ == "TiesParams"
    canonical = job(world, **{"merge.params": {"density": 0.5, "lam": 0.5}})
    assert canonical.key() == before and canonical.check().to_dict() == checked.to_dict()
    assert job(world, **{"merge.params": {"density": 0.5, "lam": 0.6}}).key() != before
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.params = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.params.lam = 0.7
    assert checked.model_key() == given.model_key() and checked.run_name().startswith("ties-")


class Calls:
    """Counts calls of functions while a block runs, by their code objects, keyed by the argument that names what is
    checked (a folder, a locale): a profiler, so every call counts whatever module imported the function."""

    def __init__(self):
        from merginguriel.merging.checkpoint import Checkpoint
        from merginguriel.merging import registry, validate
        from merginguriel import locales

        self.keys = {locales.check_locale.__code__: ("check_locale", "locale"),
                     registry.Method.make_params.__code__: ("make_params", "given"),
                     Checkpoint.__init__.__code__: ("Checkpoint", "folder"),
                     validate.check_base.__code__: ("check_base", "folder"),
                     validate.check_source.__code__: ("check_source", "folder")}
        self.counts: collections.Counter = collections.Counter()

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_code in self.keys:
            name, arg_name = self.keys[frame.f_code]
            value = frame.f_locals[arg_name]
            key = {"check_locale": str, "make_params": repr}.get(name, lambda v: str(Path(v).resolve()))(value)
            self.counts[(name, key)] += 1

    def __enter__(self):
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        threading.setprofile(None)

    def of(self, name: str) -> dict[str, int]:
        return {key: n for (kind, key), n in self.counts.items() if kind == name}


def test_one_merge_job_checks_each_input_once(world):
    """Similarity selection, TIES, judged on validation and test: the base's Checkpoint is built once, each source's
    checks run once (every candidate the similarity may choose is a source), check_locale once per locale, the
    method's parameters parsed once."""
    with Calls() as calls:
        result = run_job(job(world), progress=False)
    assert set(result.evaluation) == {"validation", "test"} and not result.reused
    base = str(world.layout.base.resolve())
    candidates = {str(world.layout.finetuned(loc).resolve()) for loc in [TARGET, *SOURCES]}
    assert calls.of("check_base") == {base: 1}
    assert calls.of("check_source") == {c: 1 for c in candidates}
    assert calls.of("Checkpoint") == {base: 1, **{c: 1 for c in candidates}}
    locales = calls.of("check_locale")
    assert set(locales) == {TARGET, *SOURCES} and set(locales.values()) == {1}, locales
    assert calls.of("make_params") == {repr({"density": 0.5}): 1}


@pytest.fixture(scope="module")
def test_nxn(world):
    """The NxN matrix of the world's models on the TEST split (what REAL selection must not read unless allowed)."""
    from merginguriel.data.config import DataSource
    from merginguriel.evaluation.nxn import compute_nxn

    data = DataSource(source="release", data_path=world.data.data_path, max_length=32)
    folder = compute_nxn(world.layout.backbone, str(world.root), "test", data=data, device="cpu", progress=False)
    assert json.loads((folder / "summary.json").read_text())["split"] == "test"
    return folder


def test_a_test_split_nxn_is_refused_for_selection(world, test_nxn, tmp_path):
    leaky = job(world, **{"selection": {"similarity": "real", "num_sources": 2, "nxn": str(test_nxn), "weighting": "softmax"},
                          "evaluate": {"splits": []}})
    out = tmp_path / "never"
    with pytest.raises(InputError, match=r"computed on the TEST split; choosing sources with it leaks test data.*allow_test_nxn"):
        run_job(plan_job(leaky, output=out))
    assert not out.exists()


def test_a_test_split_nxn_allowed_is_recorded(world, test_nxn, tmp_path):
    """Allowed, the choice is made and the leak is recorded where the result is read: the manifest's selection
    warnings, the job config, the model card; and the job is another job than the one without consent."""
    from merginguriel.jobs.select import TEST_NXN_WARNING

    real = {"similarity": "real", "num_sources": 2, "nxn": str(test_nxn), "weighting": "softmax"}  # the tiny models' REAL
    allowed = job(world, **{"selection": {**real, "allow_test_nxn": True},  # scores are 0: softmax gives the weights
                            "evaluate": {"splits": []}})
    result = run_job(plan_job(allowed, output=tmp_path / "leaky"), progress=False)
    selection = result.manifest["selection"]
    assert selection["warnings"] == [TEST_NXN_WARNING] and selection["nxn"]["split"] == "test"
    assert result.manifest["job"]["config"]["selection"]["allow_test_nxn"] is True
    assert TEST_NXN_WARNING in (tmp_path / "leaky" / "README.md").read_text()
    assert allowed.key() != job(world, **{"selection": real, "evaluate": {"splits": []}}).key()


def test_a_job_with_a_parameter_list_checks_each_input_once_and_parses_each_value_once(world, tmp_path):
    """The same job with density [0.5, 0.7]: one key, the inputs checked once as for one value, each value parsed once,
    both merged and scored on validation, the better kept."""
    listed = job(world, **{"merge.params": {"density": [0.5, 0.7]}})
    with Calls() as calls:
        result = run_job(plan_job(listed, output=tmp_path / "listed"), progress=False)
    base = str(world.layout.base.resolve())
    candidates = {str(world.layout.finetuned(loc).resolve()) for loc in [TARGET, *SOURCES]}
    assert calls.of("check_base") == {base: 1} and calls.of("check_source") == {c: 1 for c in candidates}
    assert calls.of("make_params") == {repr({"density": 0.5}): 1, repr({"density": 0.7}): 1}
    choice = result.manifest["choice"]
    assert [c["values"] for c in choice["candidates"]] == [{"density": 0.5}, {"density": 0.7}]
    assert result.manifest["params"]["density"] == choice["chosen"]["density"]
    assert result.plan.checked.key() == listed.key() and result.manifest["job"]["key"] == listed.key()


def test_merge_base_changes_the_key_only_when_given():
    """A job that names no base keeps the identity it had before merge.base existed (no `base` in it, so sweeps and
    finished merges made earlier are still recognised); naming one makes it another job."""
    from merginguriel.jobs.spec import MergeJob

    job = MergeJob(selection={"sources": ["de-DE", "fr-FR"]}, merge={"method": "ties"})
    named = MergeJob(selection={"sources": ["de-DE", "fr-FR"]}, merge={"method": "ties", "base": "someorg/base"})
    assert "base" not in job.check().identity()["merge"]
    assert named.key() != job.key() and named.check().identity()["merge"]["base"] == "someorg/base"
