"""Does any feature predict the merging effect? Leave-one-target-out (LOTO) accuracy of one-feature threshold rules.

For each feature and each held-out target, a rule "synergy iff feature >= t" (or "<= t") is fitted on the points of
every OTHER target (the threshold and direction with the best training accuracy; ties go to the smaller threshold and
to ">="), then scored on the held-out target's points. The majority-class rule fitted the same way is the reference a
useful feature must beat. Holding out whole targets matters: points of one target share its sources and data.
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from merginguriel.experiments.features import FEATURES


def _fit_threshold(x: list[float], y: list[bool]) -> tuple[float, bool]:
    """(threshold, above): predict synergy iff (x >= t) == above; best training accuracy, ties broken deterministically."""
    values = sorted(set(x))
    cuts = [-math.inf] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [math.inf]
    best = None
    for t in cuts:
        for above in (True, False):
            correct = sum(((xi >= t) == above) == yi for xi, yi in zip(x, y))
            if best is None or correct > best[0]:
                best = (correct, t, above)
    return best[1], best[2]


def loto_accuracy(frame: pd.DataFrame, features: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per feature (and ``majority_class``): LOTO accuracy of predicting ``merging_effect > 0``, the number of
    points and targets used. Needs columns ``target``, ``merging_effect`` and the features."""
    columns = ["feature", "loto_accuracy", "points", "targets"]
    if frame.empty or "merging_effect" not in frame:
        return pd.DataFrame(columns=columns)
    data = frame[pd.to_numeric(frame["merging_effect"], errors="coerce").notna()]
    features = [f for f in (features or list(FEATURES)) if f in data.columns]
    out = []
    for feature in ["majority_class", *features]:
        sub = data if feature == "majority_class" else data[pd.to_numeric(data[feature], errors="coerce").notna()]
        targets = sorted(set(sub["target"]))
        if len(targets) < 2:
            out.append({"feature": feature, "loto_accuracy": math.nan, "points": len(sub), "targets": len(targets)})
            continue
        correct = total = 0
        for held in targets:
            train, test = sub[sub["target"] != held], sub[sub["target"] == held]
            y_train = [float(e) > 0 for e in train["merging_effect"]]
            y_test = [float(e) > 0 for e in test["merging_effect"]]
            if feature == "majority_class":
                guess = sum(y_train) * 2 > len(y_train)  # ties: predict interference (the log's common case)
                preds = [guess] * len(y_test)
            else:
                t, above = _fit_threshold([float(v) for v in train[feature]], y_train)
                preds = [(float(v) >= t) == above for v in test[feature]]
            correct += sum(p == y for p, y in zip(preds, y_test))
            total += len(y_test)
        out.append({"feature": feature, "loto_accuracy": correct / total, "points": total, "targets": len(targets)})
    return pd.DataFrame(out, columns=columns)
