"""One seeded generator per purpose: the world's every draw comes from a generator keyed by the seed and what it is
for, so a seed gives the same world whatever else ran before (and whichever module draws)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def seeded_rng(seed: int, *key: Any) -> np.random.Generator:
    digest = hashlib.sha256(json.dumps([seed, *key]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
