"""Shared test set-up: offline, quiet, and the tiny checkpoint builders in tests/tiny.py on the path."""

import logging
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
sys.path.insert(0, str(Path(__file__).parent))
logging.getLogger("urielplus").setLevel(logging.WARNING)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_family_factory(tmp_path_factory):
    """Build a tiny checkpoint family: a shared base and one seeded 'fine-tune' per locale (tiny.make_family)."""
    from tiny import make_family

    def build(locales, root=None, slug="tiny", **config):
        return make_family(Path(root) if root else tmp_path_factory.mktemp("family"), list(locales), slug, **config)

    return build
