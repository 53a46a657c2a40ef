"""Reading MASSIVE rows from the official release (jsonl files or the tarball itself) and from the Hugging Face hub.

Every reader returns the same shape: ``{"train": rows, "validation": rows, "test": rows}`` where a row is
``{"id": str, "utt": str, "label": int}`` and ``label`` is the intent's id in the hub's ClassLabel order
(:data:`merginguriel.locales.INTENTS`), whatever the source.

Official release: ``amazon-massive-dataset-1.1.tar.gz`` holds ``1.1/data/<locale>.jsonl``; each line is one JSON row whose
``partition`` (``train``/``dev``/``test``) is its split (``dev`` becomes ``validation``) and whose ``intent`` is a string.
``data_path`` may be the folder above ``1.1/``, the ``1.1`` or ``data`` folder itself, or the ``.tar.gz`` (read member by
member, nothing extracted).

Hub route: ``AmazonScience/massive`` is a loading-script dataset and ``datasets`` 4.0 and later no longer run loading
scripts. The hub's dataset viewer publishes an automatic Parquet conversion of it on the ``refs/convert/parquet``
branch, laid out as ``<locale>/<split>/0000.parquet``. That branch has no dataset card, so the locale is picked with
``data_dir`` (not a config name) and the split comes from the folder name::

    load_dataset("AmazonScience/massive", data_dir=locale, revision="refs/convert/parquet")

The Parquet files keep the script's features, so ``intent`` is a ClassLabel; its names are mapped onto the project order
by name (they are the hub order, so the map is the identity), which guards against any reordering.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from merginguriel.errors import InputError
from merginguriel.locales import INTENT_TO_ID, INTENTS, NUM_INTENTS, RELEASE_PARTITION_TO_SPLIT, SPLITS, as_locale

Rows = dict[str, list[dict[str, Any]]]

HUB_DATASET = "AmazonScience/massive"
HUB_REVISION = "refs/convert/parquet"
RELEASE_TARBALL = "amazon-massive-dataset-1.1.tar.gz"
# Where a locale's file may sit below the given folder, most specific layout first.
_RELEASE_SUBDIRS = ("1.1/data", "data/1.1/data", "data", "")
_REQUIRED_FIELDS = ("utt", "intent", "partition")


def _is_tarball(path: Path) -> bool:
    return path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar")))


def locate_release_file(data_path: str | os.PathLike, locale: str) -> tuple[Path, str | None]:
    """Find where ``locale``'s rows live: ``(jsonl file, None)`` or ``(tarball, locale)``.

    A tarball is not opened here (that takes a pass over the archive); a missing member is reported when it is read.
    Raises InputError naming every place searched when there is neither a jsonl file nor the tarball.
    """
    locale = as_locale(locale)
    root = Path(data_path).expanduser()
    if not root.exists():
        raise InputError(
            f"MASSIVE release path {root} does not exist; set --data.data_path to the folder holding 1.1/data/<locale>.jsonl "
            f"or to {RELEASE_TARBALL}"
        )
    if _is_tarball(root):
        return root, locale
    searched = [root / sub / f"{locale}.jsonl" if sub else root / f"{locale}.jsonl" for sub in _RELEASE_SUBDIRS]
    for candidate in searched:
        if candidate.is_file():
            return candidate, None
    tarball = root / RELEASE_TARBALL
    if tarball.is_file():
        return tarball, locale
    raise InputError(
        f"no data file for locale {locale} in the MASSIVE release at {root}; searched "
        f"{', '.join(str(p) for p in searched)} and {tarball}. Point --data.data_path at the release folder "
        f"(holding 1.1/data/<locale>.jsonl) or at {RELEASE_TARBALL}"
    )


def _tar_member_lines(tarball: Path, locale: str) -> Iterator[bytes]:
    """Lines of the member ``.../data/<locale>.jsonl``, found in one pass over the archive (nothing is extracted to disk)."""
    wanted = f"{locale}.jsonl"
    try:
        with tarfile.open(tarball) as tar:
            for member in tar:
                if member.isfile() and Path(member.name).name == wanted and Path(member.name).parent.name == "data":
                    fh = tar.extractfile(member)
                    assert fh is not None  # isfile() members always have a file object
                    with fh:
                        yield from fh
                    return
    except tarfile.TarError as e:
        raise InputError(f"{tarball} is not a readable tar archive ({e}); download {RELEASE_TARBALL} again") from e
    raise InputError(
        f"no member data/{wanted} in {tarball} (searched every member ending in data/{wanted}); "
        f"use the official {RELEASE_TARBALL}, which holds 1.1/data/<locale>.jsonl"
    )


def _lines(path: Path, member: str | None) -> Iterator[bytes]:
    """Raw lines: decoded one by one by the parser, so a byte that is not UTF-8 is reported with its line."""
    if member is None:
        with open(path, "rb") as fh:
            yield from fh
    else:
        yield from _tar_member_lines(path, member)


def intent_id(value: Any, where: str) -> int:
    """Map an intent given as its name (release files) or as a hub ClassLabel id to the hub id; InputError if neither."""
    if isinstance(value, str):
        if value in INTENT_TO_ID:
            return INTENT_TO_ID[value]
        if value.strip().isdigit():  # an id written as text
            value = int(value)
        else:
            raise InputError(
                f"{where}: field 'intent' is {value!r}, not one of the {NUM_INTENTS} MASSIVE intents "
                f"({', '.join(INTENTS)}); fix the row or remove it"
            )
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < NUM_INTENTS:
        return value
    raise InputError(
        f"{where}: field 'intent' is {value!r}; it must be an intent name or a hub intent id 0..{NUM_INTENTS - 1}"
    )


def parse_release_lines(lines: Iterable[str | bytes], source: str) -> Rows:
    """Parse release jsonl lines (text, or raw UTF-8 bytes) into split -> rows; every problem names ``source``, the line
    number and the field. A file without a single row (empty or blank) is refused."""
    out: Rows = {split: [] for split in SPLITS}
    for lineno, line in enumerate(lines, start=1):
        where = f"{source}, line {lineno}"
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{where}: not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1}); MASSIVE files are "
                    "UTF-8: re-encode the file (e.g. iconv -t UTF-8) or fix the line"
                ) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: invalid JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object with fields id, utt, intent, partition")
        for field in _REQUIRED_FIELDS:
            if field not in row:
                raise InputError(
                    f"{where}: missing field {field!r}; every MASSIVE row needs {', '.join(_REQUIRED_FIELDS)}"
                )
        partition = row["partition"]
        split = RELEASE_PARTITION_TO_SPLIT.get(partition, partition if partition in SPLITS else None)
        if split is None:
            raise InputError(
                f"{where}: field 'partition' is {partition!r}; it must be one of train, dev, test"
            )
        utt = row["utt"]
        if not isinstance(utt, str):
            raise InputError(f"{where}: field 'utt' must be a string, got {type(utt).__name__}")
        label = intent_id(row["intent"], where)
        out[split].append({"id": str(row.get("id", lineno - 1)), "utt": utt, "label": label})
    if not any(out.values()):
        raise InputError(
            f"{source} holds no MASSIVE rows (the file is empty or blank); restore the file (one JSON row per line "
            "with id, utt, intent, partition) or point --data.data_path at a complete release"
        )
    return out


def read_release(data_path: str | os.PathLike, locale: str) -> Rows:
    """Read one locale from the official release (folder of jsonl files, or the tarball)."""
    path, member = locate_release_file(data_path, locale)
    source = f"{path} (member data/{member}.jsonl)" if member else str(path)
    return parse_release_lines(_lines(path, member), source)


def read_hub(locale: str, repo: str = HUB_DATASET, revision: str | None = HUB_REVISION) -> Rows:
    """Read one locale from the hub's Parquet conversion of ``AmazonScience/massive`` (see the module docstring).

    ``repo`` may also be a local folder with the same ``<locale>/<split>/*.parquet`` layout (a mirror of that branch).
    """
    from datasets import ClassLabel, load_dataset

    locale = as_locale(locale)
    ds = load_dataset(repo, data_dir=locale, revision=revision)
    missing = [s for s in SPLITS if s not in ds]
    if missing:
        raise InputError(f"{repo}@{revision}/{locale} lacks split(s) {missing}; found {list(ds)}")
    out: Rows = {}
    for split in SPLITS:
        table = ds[split]
        feature = table.features["intent"]
        names = feature.names if isinstance(feature, ClassLabel) else None
        if names is not None and set(names) != set(INTENTS):
            raise InputError(
                f"{repo} {locale}/{split}: its intent labels differ from the 60 MASSIVE intents: "
                f"{sorted(set(names) ^ set(INTENTS))}"
            )
        remap = [INTENT_TO_ID[n] for n in names] if names is not None else None
        cols = table.select_columns(["id", "utt", "intent"]).to_dict()
        rows = []
        for i, (rid, utt, intent) in enumerate(zip(cols["id"], cols["utt"], cols["intent"], strict=True)):
            label = remap[intent] if remap is not None else intent_id(intent, f"{repo} {locale}/{split} row {i}")
            rows.append({"id": str(rid), "utt": utt, "label": label})
        out[split] = rows
    return out
