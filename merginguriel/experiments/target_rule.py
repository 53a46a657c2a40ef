"""The quick start's target rule, fixed in advance and reading validation data only: among the fine-tuned locales, the
target whose best source transfers worst relative to its own model, and the one whose best source transfers best.

For each fine-tuned locale t, with V the VALIDATION NxN matrix (row = source model, column = evaluated locale):

    ratio(t) = max over the other fine-tuned locales s of V[s, t], divided by V[t, t]

(the research log's zero-shot/self ratio of the best source). The rule takes the ``per_end`` locales with the lowest
ratio and the ``per_end`` with the highest, ties broken by locale name. It never reads a test split or a merge's
outcome, so the targets are not picked for how merging turns out on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from merginguriel.errors import InputError

RULE = ("the lowest and the highest validation best-source zero-shot/self ratio among the fine-tuned locales "
        "(ratio: the best other fine-tuned model's validation accuracy on the locale over the locale's own model's; "
        "ties by locale name)")


@dataclass
class RuleResult:
    """The targets the rule chose and every value it read (one row per locale, lowest ratio first)."""

    targets: list[str]
    table: pd.DataFrame  # locale, best_source, zero_shot, self, ratio

    def text(self) -> str:
        lines = [f"      {'locale':<7} {'best source':<12} {'zero-shot':>9} {'self':>6} {'ratio':>6}"]
        for r in self.table.itertuples():
            mark = "  <- target" if r.locale in self.targets else ""
            lines.append(f"      {r.locale:<7} {r.best_source:<12} {r.zero_shot:>9.3f} {r.self:>6.3f} {r.ratio:>6.3f}{mark}")
        return "\n".join(lines)


def check_per_end(per_end: int) -> None:
    """Refuse a rule that would select fewer than 2 targets whatever the data (before anything runs)."""
    if per_end < 1:
        raise InputError(f"targets_per_end {per_end} selects fewer than 2 targets; the rule takes the targets_per_end "
                         "lowest and the targets_per_end highest ratios: use 1 or more")


def best_source_ratios(validation: pd.DataFrame, locales: list[str]) -> pd.DataFrame:
    """Per locale (lowest ratio first, ties by name): its best other source on validation, that accuracy, its own
    model's validation accuracy and their ratio."""
    missing = [f"{s}->{t}" for s in locales for t in locales if s not in validation.index or t not in validation.columns
               or pd.isna(validation.at[s, t])]
    if missing:
        raise InputError(f"the validation NxN matrix lacks the cell(s) {', '.join(missing[:20])}; run `merginguriel nxn "
                         "--split validation` over the fine-tuned locales")
    rows = []
    for t in locales:
        others = sorted(s for s in locales if s != t)
        if not others:
            break
        top = max(float(validation.at[s, t]) for s in others)
        source = next(s for s in others if float(validation.at[s, t]) == top)  # ties: the first by name
        own = float(validation.at[t, t])
        if own <= 0:
            raise InputError(f"{t}'s own model scores 0 on its validation split; its zero-shot/self ratio is undefined "
                             "(check its fine-tune)")
        rows.append({"locale": t, "best_source": source, "zero_shot": float(validation.at[source, t]), "self": own,
                     "ratio": float(validation.at[source, t]) / own})
    table = pd.DataFrame(rows, columns=["locale", "best_source", "zero_shot", "self", "ratio"])
    return table.sort_values(["ratio", "locale"], kind="stable").reset_index(drop=True)


def apply_rule(validation: pd.DataFrame, locales: list[str], per_end: int = 1) -> RuleResult:
    """The rule's targets (the ``per_end`` lowest ratios, then the ``per_end`` highest) from the VALIDATION NxN matrix;
    fewer than 2 distinct targets is an error that names the values."""
    check_per_end(per_end)
    table = best_source_ratios(validation, sorted(locales))
    lowest = table["locale"].tolist()[:per_end]
    highest = table.sort_values(["ratio", "locale"], ascending=[False, True], kind="stable")["locale"].tolist()[:per_end]
    targets = list(dict.fromkeys([*lowest, *highest]))
    if len(targets) < 2:
        values = ", ".join(f"{r.locale} {r.ratio:.3f}" for r in table.itertuples()) or "none"
        raise InputError(f"the target rule selected {len(targets)} target(s) ({', '.join(targets) or 'none'}) from the "
                         f"ratios {values}; it needs at least 2 fine-tuned locales with different ratios: add locales")
    return RuleResult(targets, table)
