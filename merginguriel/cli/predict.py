"""`merginguriel predict`."""

from __future__ import annotations

from typing import Literal, Optional

from merginguriel.checkpoints import DEFAULT_ROOT
from merginguriel.data.config import EVAL_BATCH_SIZE, DataSource


def predict(
    checkpoint: str,
    locale: Optional[str] = None,
    text: Optional[list[str]] = None,
    top_k: int = 5,
    split: Literal["train", "validation", "test"] = "test",
    root: str = DEFAULT_ROOT,
    data: DataSource = DataSource(),
    output: Optional[str] = None,
    format: Optional[Literal["jsonl", "csv"]] = None,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
) -> dict:
    """Predict intents with any checkpoint (fine-tuned, merged or base): of a locale's split, one row per utterance with
    its id, the predicted intent and its probability, and the gold intent; or of utterances you give (--text), the
    top-k intents of each with their probabilities.

    Args:
        checkpoint: a Hugging Face model folder.
        locale: the MASSIVE locale whose split is classified.
        text: utterances to classify instead of a split (repeatable, or several after one --text); ``-`` reads one
            utterance a line from standard input.
        top_k: with --text, how many intents to show per utterance.
        split: which split.
        root: the checkpoints root (the embedded data and the caches live under it).
        data: the MASSIVE data source (with --text, only its max_length is used).
        output: a .jsonl or .csv file (default: standard output: JSONL rows for a split, readable lines for --text).
        format: jsonl or csv (default: from the output's extension, else jsonl).
        batch_size: evaluation batch size.
        device: auto, cpu or cuda.
    """
    import sys
    from pathlib import Path

    from merginguriel.errors import InputError
    from merginguriel.locales import check_locale

    if (locale is None) == (text is None):
        raise InputError("predict classifies a locale's split (--locale es-ES) or utterances you give "
                         "(--text \"wake me up at seven\", or --text - for one a line on stdin); give exactly one of them")
    if locale is not None:
        check_locale(locale)
    if not Path(checkpoint).is_dir():
        raise InputError(f"checkpoint {checkpoint} is not a folder; pass a fine-tuned, merged or base model folder")
    if output is not None and Path(output).is_dir():  # refused before any prediction is made
        raise InputError(f"--output {output} is a directory; give a file path (e.g. {Path(output) / 'predictions.jsonl'})")
    fmt = format or ("csv" if output and output.endswith(".csv") else "jsonl")
    if text is not None:
        from merginguriel.evaluation.evaluate import top_intents

        texts = [t.strip() for given in text for t in (sys.stdin.read().splitlines() if given == "-" else [given])]
        texts = [t for t in texts if t]
        ranked = top_intents(checkpoint, texts, top_k, data.max_length, batch_size, device)
        if output is None and format is None:
            lines = "".join(f"{utterance}\n" + "".join(f"  {rank}. {intent:<26} {p:.4f}\n" for rank, (intent, p) in enumerate(top, 1))
                            for utterance, top in zip(texts, ranked))
            return {"text": lines, "summary": None}
        records = [{"utterance": utterance, "rank": rank, "intent": intent, "probability": round(p, 6)}
                   for utterance, top in zip(texts, ranked) for rank, (intent, p) in enumerate(top, 1)]
        return _write(records, fmt, output, f"the top {top_k} intents of {len(texts)} utterance(s)")

    from merginguriel.data import load_locale
    from merginguriel.evaluation.outputs import checkpoint_outputs
    from merginguriel.locales import INTENTS

    config = data.at(root)
    rows = load_locale(config, locale)[split]
    out = checkpoint_outputs(checkpoint, locale, split, config, batch_size, device, cache=False)
    conf, pred = out.logits.softmax(-1).max(-1)
    records = [{"id": r["id"], "utterance": r["utt"], "predicted_intent": INTENTS[int(p)], "probability": round(float(c), 6),
                "gold_intent": INTENTS[int(r["label"])]} for r, p, c in zip(rows, pred, conf)]
    acc = sum(r["predicted_intent"] == r["gold_intent"] for r in records) / max(1, len(records))
    return _write(records, fmt, output, f"{len(records)} predictions for {locale} {split}", f" (accuracy {acc:.4f})")


def _write(records: list[dict], fmt: str, output: Optional[str], what: str, after: str = "") -> dict:
    """Rows as JSONL or CSV: written into ``output`` (atomically; the printer says so) or returned for standard output."""
    import csv
    import io
    import json

    from merginguriel.io import atomic_write_text

    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(records[0]) if records else [])
        writer.writeheader()
        writer.writerows(records)
        text = buf.getvalue()
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output:
        atomic_write_text(output, text)
        return {"text": None, "summary": f"{what} written to {output}{after}"}
    return {"text": text, "summary": None}
