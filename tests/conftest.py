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
