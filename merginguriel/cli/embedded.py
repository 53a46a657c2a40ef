"""`merginguriel embedded`."""

from __future__ import annotations

import time
from typing import Optional

from merginguriel.checkpoints import DEFAULT_ROOT


def embedded(
    root: str = DEFAULT_ROOT,
    seed: Optional[int] = None,
    train_per_intent: Optional[int] = None,
    dev_per_intent: Optional[int] = None,
    test_per_intent: Optional[int] = None,
    hidden_size: Optional[int] = None,
    num_layers: Optional[int] = None,
    num_heads: Optional[int] = None,
    data_only: bool = False,
) -> int:
    """Build (or find) the embedded default under <root>/embedded: synthetic MASSIVE data and the tiny backbone.

    Options left unset keep what is already built (or the defaults when nothing is); set ones must match a finished build.

    Args:
        root: the checkpoints root.
        seed: seed of the synthetic languages, the rows, the tokenizer and the pre-training.
        train_per_intent: training utterances per intent and locale.
        dev_per_intent: validation utterances per intent and locale.
        test_per_intent: test utterances per intent and locale.
        hidden_size: encoder width.
        num_layers: transformer layers.
        num_heads: attention heads.
        data_only: build only the data, not the backbone.
    """
    from merginguriel.embedded.build import build_embedded
    from merginguriel.io import read_manifest

    started = time.perf_counter()
    built = build_embedded(root=root, seed=seed, train_per_intent=train_per_intent, dev_per_intent=dev_per_intent,
                           test_per_intent=test_per_intent, hidden_size=hidden_size, num_layers=num_layers,
                           num_heads=num_heads, data_only=data_only)
    for name, path in built.items():
        m = read_manifest(path)
        if name == "data":
            s = m["sizes"]
            print(f"embedded data: {path}  ({len(m['locales'])} locales x {m['rows_per_locale']} rows: "
                  f"{s['train_per_intent']}/{s['dev_per_intent']}/{s['test_per_intent']} train/dev/test per intent; "
                  f"seed {m['seed']}; built {m['created']} in {m['build_seconds']} s)")
        else:
            params = (m.get("planting") or {}).get("parameters")
            size = f"{params / 1e6:.2f} M parameters, " if params else ""
            print(f"embedded backbone: {path}  (XLM-R architecture, {size}vocab {m.get('vocab_size')}; "
                  f"seed {m['seed']}; built {m['created']} in {m['build_seconds']} s)")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
