"""`merginguriel predict`."""

from __future__ import annotations

from typing import Literal, Optional

from merginguriel.checkpoints import DEFAULT_ROOT
from merginguriel.data.config import EVAL_BATCH_SIZE, DataSource


def predict(
    checkpoint: str,
    locale: str,
    split: Literal["train", "validation", "test"] = "test",
    root: str = DEFAULT_ROOT,
    data: DataSource = DataSource(),
    output: Optional[str] = None,
    format: Optional[Literal["jsonl", "csv"]] = None,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
) -> dict:
    """Predict the intents of a locale's split with any checkpoint (fine-tuned, merged or base): one row per utterance
    with its id, the predicted intent and its probability, and the gold intent.

    Args:
        checkpoint: a Hugging Face model folder.
        locale: the MASSIVE locale whose utterances are classified.
        split: which split.
        root: the checkpoints root (the embedded data and the caches live under it).
        data: the MASSIVE data source.
        output: a .jsonl or .csv file (default: JSONL on standard output).
        format: jsonl or csv (default: from the output's extension, else jsonl).
        batch_size: evaluation batch size.
        device: auto, cpu or cuda.
    """
    import csv
    import io
    import json
    from pathlib import Path

    from merginguriel.data import load_locale
    from merginguriel.errors import InputError
    from merginguriel.evaluation.outputs import checkpoint_outputs
    from merginguriel.io import atomic_write_text
    from merginguriel.locales import INTENTS, check_locale

    check_locale(locale)
    if not Path(checkpoint).is_dir():
        raise InputError(f"checkpoint {checkpoint} is not a folder; pass a fine-tuned, merged or base model folder")
    fmt = format or ("csv" if output and output.endswith(".csv") else "jsonl")
    config = data.at(root)
    rows = load_locale(config, locale)[split]
    out = checkpoint_outputs(checkpoint, locale, split, config, batch_size, device, cache=False)
    probs = out.logits.softmax(-1)
    conf, pred = probs.max(-1)
    records = [{"id": r["id"], "utterance": r["utt"], "predicted_intent": INTENTS[int(p)], "probability": round(float(c), 6),
                "gold_intent": INTENTS[int(r["label"])]} for r, p, c in zip(rows, pred, conf)]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["id", "utterance", "predicted_intent", "probability", "gold_intent"])
        writer.writeheader()
        writer.writerows(records)
        text = buf.getvalue()
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output:
        atomic_write_text(output, text)
    acc = sum(r["predicted_intent"] == r["gold_intent"] for r in records) / max(1, len(records))
    return {"records": len(records), "accuracy": acc, "text": None if output else text}
