"""Locales and label order, and the atomic-output and manifest helpers everything else relies on."""

from __future__ import annotations

import json

import pytest

from merginguriel.errors import InputError
from merginguriel.io import atomic_dir, read_manifest, write_json_atomic, write_manifest
from merginguriel.locales import INTENTS, ISO639_1, ISO639_3, LOCALES, SCENARIOS, check_locale, check_locales, iso639_1


def test_locales_and_labels() -> None:
    # massive.md says "51 locales" but lists 52: MASSIVE 1.1 added ca-ES to the 51 of 1.0. The list is what the data holds.
    assert len(LOCALES) == len(set(LOCALES)) == 52
    assert set(ISO639_3) == set(LOCALES)
    assert len(INTENTS) == len(set(INTENTS)) == 60 and len(SCENARIOS) == 18
    # Spot checks against the hub's ClassLabel order (massive.md).
    assert (INTENTS[0], INTENTS[13], INTENTS[48], INTENTS[59]) == ("datetime_query", "weather_query", "alarm_set", "lists_query")
    assert {i.split("_")[0] for i in INTENTS} <= set(SCENARIOS)
    assert ISO639_3["zh-CN"] == ISO639_3["zh-TW"] == "cmn" and ISO639_3["sl-SL"] == "slv"


def test_iso639_1_codes_for_model_cards() -> None:
    assert set(ISO639_1) == set(LOCALES)
    assert all(len(code) == 2 and code.isalpha() and code.islower() for code in ISO639_1.values())
    # spot checks against ISO 639-1 where a locale's country says nothing of its language
    spot = {"sw-KE": "sw", "nb-NO": "nb", "jv-ID": "jv", "tl-PH": "tl", "he-IL": "he", "sq-AL": "sq", "zh-TW": "zh", "ur-PK": "ur"}
    assert {loc: iso639_1(loc) for loc in spot} == spot
    with pytest.raises(InputError, match="unknown locale 'xx-XX'"):
        iso639_1("xx-XX")


def test_locale_errors_list_the_valid_ones() -> None:
    assert check_locale("sw-KE") == "sw-KE"
    with pytest.raises(InputError) as err:
        check_locale("sw-TZ")
    assert "sw-KE" in str(err.value) and "Did you mean" in str(err.value) and "af-ZA" in str(err.value)
    with pytest.raises(InputError, match="more than once: fi-FI"):
        check_locales(["fi-FI", "tr-TR", "fi-FI"])


def test_atomic_dir_leaves_nothing_on_error(tmp_path) -> None:
    out = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "weights").write_text("whole")
    assert (out / "weights").read_text() == "whole"
    with pytest.raises(FileExistsError, match="overwrite"):
        with atomic_dir(out):
            pass
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "weights").write_text("new")
    assert (out / "weights").read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_manifest_round_trip(tmp_path) -> None:
    write_manifest(tmp_path, "merged", method="ties", weights=[0.5, 0.5])
    m = read_manifest(tmp_path)
    assert m["kind"] == "merged" and m["method"] == "ties" and "torch" in m["versions"] and "created" in m
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    with pytest.raises(FileNotFoundError, match="not a merginguriel output"):
        read_manifest(tmp_path / "nothing")
