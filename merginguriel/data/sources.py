"""One entry point for a locale's rows, whatever the source (embedded generator, official release, hub).

``load_locale`` dispatches on ``DataConfig.source``; ``source_identity`` says which exact input a locale's rows come
from (path, size and modification time of the file read), so the tokenisation cache can tell when its input changed.
"""

from __future__ import annotations

from pathlib import Path

from merginguriel.data.config import DataConfig
from merginguriel.data.release import HUB_DATASET, HUB_REVISION, Rows, locate_release_file, read_hub, read_release
from merginguriel.errors import InputError
from merginguriel.locales import as_locale

SOURCES = ("embedded", "release", "hub")
# root -> the embedded release folder, once ensured in this process (every cache look-up needs it).
_EMBEDDED: dict[Path, Path] = {}


def check_source(data: DataConfig) -> None:
    """InputError unless ``data.source`` is known and has what it needs (a ``data_path`` for ``release``)."""
    if data.source not in SOURCES:
        raise InputError(f"unknown data source {data.source!r}; --data.source must be one of {', '.join(SOURCES)}")
    if data.source == "release" and not data.data_path:
        raise InputError(
            "data source 'release' needs --data.data_path: the folder holding 1.1/data/<locale>.jsonl "
            "or the amazon-massive-dataset-1.1.tar.gz file"
        )


def release_path(data: DataConfig) -> Path:
    """The release-format folder or tarball that a ``release`` or ``embedded`` config reads.

    The embedded data is generated here when it is missing.
    """
    check_source(data)
    if data.source == "embedded":
        from merginguriel.checkpoints import embedded_home

        folder = embedded_home(data.root).resolve()
        known = _EMBEDDED.get(folder)
        if known is None or not known.exists():
            from merginguriel.embedded.build import ensure_embedded_data  # heavy (generator, URIEL): only when used

            known = _EMBEDDED[folder] = Path(ensure_embedded_data(folder))
        return known
    if data.source == "release":
        return Path(data.data_path).expanduser()
    raise InputError("the hub source has no release folder; use load_locale")


def source_identity(data: DataConfig, locale: str) -> str:
    """A string that changes whenever the input of ``locale``'s rows changes (cheap: stat, not a content hash)."""
    locale = as_locale(locale)
    check_source(data)
    if data.source == "hub":
        return f"hub:{HUB_DATASET}@{HUB_REVISION}/{locale}"
    path, member = locate_release_file(release_path(data), locale)
    st = path.stat()
    return f"{data.source}:{path.resolve()}:{member or ''}:{st.st_size}:{st.st_mtime_ns}"


def source_name(data: DataConfig, locale: str) -> str:
    """Where ``locale``'s rows are read from, for messages: the file (or tarball member), or the hub dataset."""
    if data.source == "hub":
        return f"{HUB_DATASET}@{HUB_REVISION}/{locale}"
    path, member = locate_release_file(release_path(data), locale)
    return f"{path} (member data/{member}.jsonl)" if member else str(path)


def load_locale(data: DataConfig, locale: str) -> Rows:
    """Rows of one locale: ``{"train"|"validation"|"test": [{"id", "utt", "label"}]}``, labels in the hub intent order."""
    locale = as_locale(locale)
    check_source(data)
    if data.source == "hub":
        return read_hub(locale)
    return read_release(release_path(data), locale)
