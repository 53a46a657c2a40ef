"""Reading MASSIVE from the official release format (jsonl folders and the tarball), label order, and every bad input."""

from __future__ import annotations

import json
import os

import pytest
from conftest import release_rows, write_jsonl, write_release, write_tarball

from merginguriel.data import DataConfig, load_locale
from merginguriel.errors import InputError
from merginguriel.locales import LOCALES, UnknownLocaleError

SPLIT_OF = {"train": "train", "dev": "validation", "test": "test"}


def expected(rows: list[dict]) -> dict[str, list[dict]]:
    """Independent expectation: dev rows become validation, intents become positions in massive.md's list."""
    from merginguriel.locales import INTENTS

    out = {"train": [], "validation": [], "test": []}
    for r in rows:
        out[SPLIT_OF[r["partition"]]].append({"id": r["id"], "utt": r["utt"], "label": list(INTENTS).index(r["intent"])})
    return out


@pytest.mark.parametrize("subdir", ["1.1/data", "data", ""])
def test_release_folder_layouts(tmp_path, subdir):
    written = write_release(tmp_path, ["sw-KE", "fr-FR"], subdir=subdir)
    for loc in ("sw-KE", "fr-FR"):
        got = load_locale(DataConfig(source="release", data_path=str(tmp_path)), loc)
        assert got == expected(written[loc])
        assert len(got["validation"]) == sum(r["partition"] == "dev" for r in written[loc]) > 0


def test_release_tarball_read_without_extracting(tmp_path):
    src = tmp_path / "src"
    written = write_release(src, ["de-DE", "ja-JP"])
    tar_dir = tmp_path / "tar"
    tar_dir.mkdir()
    tarball = write_tarball(src, tar_dir / "amazon-massive-dataset-1.1.tar.gz")
    for path in (tarball, tar_dir):  # the file itself, or a folder holding it
        for loc in ("de-DE", "ja-JP"):
            got = load_locale(DataConfig(source="release", data_path=str(path)), loc)
            assert got == expected(written[loc])
    assert sorted(os.listdir(tar_dir)) == ["amazon-massive-dataset-1.1.tar.gz"]


def test_label_order_matches_massive_reference(tmp_path):
    # Positions copied from the hub's ClassLabel order in shared/reference/massive.md.
    reference = {"datetime_query": 0, "iot_hue_lightchange": 1, "qa_stock": 4, "weather_query": 13, "alarm_set": 48,
                 "qa_factoid": 49, "calendar_set": 50, "lists_query": 59}
    rows = [{"id": str(i), "partition": "train", "intent": name, "utt": "w1 w2"} for i, name in enumerate(reference)]
    write_jsonl(tmp_path / "1.1/data/en-US.jsonl", rows)
    got = load_locale(DataConfig(source="release", data_path=str(tmp_path)), "en-US")
    assert [r["label"] for r in got["train"]] == list(reference.values())


def test_integer_intents_are_hub_ids(tmp_path):
    rows = [{"id": "0", "partition": "test", "intent": 48, "utt": "w3"},
            {"id": "1", "partition": "dev", "intent": 0, "utt": "w4"}]
    write_jsonl(tmp_path / "1.1/data/en-US.jsonl", rows)
    got = load_locale(DataConfig(source="release", data_path=str(tmp_path)), "en-US")
    assert got["test"][0]["label"] == 48 and got["validation"][0]["label"] == 0 and got["train"] == []


def _write_with_bad_line(tmp_path, bad: str | dict, line: int = 3):
    rows = [json.dumps(r) for r in release_rows("sw-KE")[:5]]
    rows.insert(line - 1, bad if isinstance(bad, str) else json.dumps(bad))
    path = tmp_path / "1.1/data/sw-KE.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("field", ["utt", "intent", "partition"])
def test_missing_field_names_file_line_and_field(tmp_path, field):
    row = {"id": "9", "partition": "train", "intent": "alarm_set", "utt": "w1"}
    del row[field]
    path = _write_with_bad_line(tmp_path, row, line=3)
    with pytest.raises(InputError) as e:
        load_locale(DataConfig(source="release", data_path=str(tmp_path)), "sw-KE")
    msg = str(e.value)
    assert str(path) in msg and "line 3" in msg and repr(field) in msg


@pytest.mark.parametrize("intent", ["alarm_snooze", 60, -1, True])
def test_intent_outside_the_60(tmp_path, intent):
    path = _write_with_bad_line(tmp_path, {"id": "9", "partition": "train", "intent": intent, "utt": "w1"}, line=4)
    with pytest.raises(InputError) as e:
        load_locale(DataConfig(source="release", data_path=str(tmp_path)), "sw-KE")
    msg = str(e.value)
    assert str(path) in msg and "line 4" in msg and "'intent'" in msg


def test_unknown_partition_and_invalid_json(tmp_path):
    path = _write_with_bad_line(tmp_path, {"id": "9", "partition": "holdout", "intent": "alarm_set", "utt": "w1"}, line=2)
    with pytest.raises(InputError, match="line 2: field 'partition'") as e:
        load_locale(DataConfig(source="release", data_path=str(tmp_path)), "sw-KE")
    assert str(path) in str(e.value)
    path.unlink()
    _write_with_bad_line(tmp_path / "x", '{"id": "9", "partition": "train"', line=5)
    with pytest.raises(InputError, match="line 5: invalid JSON"):
        load_locale(DataConfig(source="release", data_path=str(tmp_path / "x")), "sw-KE")


def test_unknown_locale_lists_valid_ones(tmp_path):
    write_release(tmp_path, ["sw-KE"])
    with pytest.raises(UnknownLocaleError) as e:
        load_locale(DataConfig(source="release", data_path=str(tmp_path)), "sw-TZ")
    msg = str(e.value)
    assert "sw-TZ" in msg and all(loc in msg for loc in LOCALES)


def test_missing_locale_file_names_paths_searched(tmp_path):
    write_release(tmp_path, ["sw-KE"])
    with pytest.raises(InputError) as e:
        load_locale(DataConfig(source="release", data_path=str(tmp_path)), "fr-FR")
    assert str(tmp_path / "1.1/data/fr-FR.jsonl") in str(e.value)


def test_missing_tar_member_and_bad_config(tmp_path):
    write_release(tmp_path / "src", ["sw-KE"])
    tarball = write_tarball(tmp_path / "src", tmp_path / "m.tar.gz")
    with pytest.raises(InputError, match=r"no member data/fr-FR\.jsonl"):
        load_locale(DataConfig(source="release", data_path=str(tarball)), "fr-FR")
    with pytest.raises(InputError, match="data_path"):
        load_locale(DataConfig(source="release"), "sw-KE")
    with pytest.raises(InputError, match="does not exist"):
        load_locale(DataConfig(source="release", data_path=str(tmp_path / "nowhere")), "sw-KE")
    with pytest.raises(InputError, match="must be one of"):
        load_locale(DataConfig(source="web"), "sw-KE")  # type: ignore[arg-type]


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") == "1", reason="needs the Hugging Face hub (HF_HUB_OFFLINE=1)")
def test_hub_parquet_route():
    from merginguriel.locales import INTENTS

    got = load_locale(DataConfig(source="hub"), "sw-KE")
    assert {k: len(v) for k, v in got.items()} == {"train": 11514, "validation": 2033, "test": 2974}
    labels = {r["label"] for rows in got.values() for r in rows}
    assert labels <= set(range(len(INTENTS))) and len(labels) == 60


def test_hub_route_on_a_local_mirror_of_the_parquet_branch(tmp_path):
    """The same code path as the hub source, on a folder laid out like refs/convert/parquet (<locale>/<split>/0000.parquet)."""
    from datasets import ClassLabel, Dataset, Features, Value

    from merginguriel.data.release import read_hub
    from merginguriel.locales import INTENTS

    features = Features({"id": Value("string"), "locale": Value("string"), "intent": ClassLabel(names=list(INTENTS)),
                         "utt": Value("string")})
    rows = release_rows("sw-KE")
    for hub_split, partition in (("train", "train"), ("validation", "dev"), ("test", "test")):
        part = [r for r in rows if r["partition"] == partition]
        ds = Dataset.from_dict({"id": [r["id"] for r in part], "locale": [r["locale"] for r in part],
                                "intent": [list(INTENTS).index(r["intent"]) for r in part], "utt": [r["utt"] for r in part]},
                               features=features)
        (tmp_path / "sw-KE" / hub_split).mkdir(parents=True)
        ds.to_parquet(str(tmp_path / "sw-KE" / hub_split / "0000.parquet"))
    # Another locale beside it must not leak in: data_dir selects the locale.
    (tmp_path / "fr-FR" / "train").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "fr-FR" / "train" / "0000.parquet"))
    assert read_hub("sw-KE", repo=str(tmp_path), revision=None) == expected(rows)
