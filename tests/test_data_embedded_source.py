"""The embedded default read through the release reader: same row shape, parallel ids, cached tokenisation."""

from __future__ import annotations

import pytest

pytest.importorskip("merginguriel.embedded.build")

from merginguriel.data import DataConfig, load_locale  # noqa: E402
from merginguriel.data.sources import release_path  # noqa: E402
from merginguriel.locales import NUM_INTENTS  # noqa: E402


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    return DataConfig(source="embedded", root=str(tmp_path_factory.mktemp("root")), max_length=32)


def test_embedded_rows_through_release_reader(embedded):
    from merginguriel.data.release import read_release

    sw, fr = load_locale(embedded, "sw-KE"), load_locale(embedded, "fr-FR")
    assert sw == read_release(release_path(embedded), "sw-KE")  # the same reader as the official files
    for rows in (sw, fr):
        assert all(len(rows[s]) > 0 for s in ("train", "validation", "test"))
        assert {r["label"] for s in rows for r in rows[s]} <= set(range(NUM_INTENTS))
    # Rows are parallel across locales: same ids, same labels, different text.
    for split in ("train", "validation", "test"):
        assert [r["id"] for r in sw[split]] == [r["id"] for r in fr[split]]
        assert [r["label"] for r in sw[split]] == [r["label"] for r in fr[split]]
    assert [r["utt"] for r in sw["train"]] != [r["utt"] for r in fr["train"]]
