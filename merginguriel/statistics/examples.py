"""Which unlabelled utterances a source's statistics are gathered on: the parameters every statistics method shares
(how many examples, whose data, which split) and the token rows they name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError


@dataclass(frozen=True)
class StatisticsData:
    """The examples a source's statistics are gathered on.

    Args:
        examples: utterances per source the statistics are gathered on (256-1000 in the literature).
        data: whose utterances: ``target`` (the target locale's), ``sources`` (each source's own locale) or ``both``
            (half each). Labels are never read.
        split: ``validation`` or ``train`` (the test split is never used).
    """

    examples: int = 256
    data: Literal["target", "sources", "both"] = "target"
    split: Literal["train", "validation"] = "validation"

    def __post_init__(self) -> None:
        if self.split not in ("train", "validation"):
            raise InputError(
                f"statistics use unlabelled train or validation utterances, not {self.split!r} (the test split stays "
                "unseen); pass merge.params.split=validation or train"
            )
        if self.examples < 1:
            raise InputError(f"statistics need at least one example (got examples={self.examples}); e.g. --merge.params.examples 256")

    def locales(self, target: Optional[str], source_locale: Optional[str], source_name: str) -> list[str]:
        """The locales whose utterances a source's statistics read."""
        if self.data in ("target", "both") and target is None:
            raise InputError(
                f"statistics from the target's data (merge.params.data={self.data}) need --target; "
                "pass the target locale or use merge.params.data=sources"
            )
        if self.data in ("sources", "both") and source_locale is None:
            raise InputError(
                f"source {source_name} has no locale, so its own data cannot be read (merge.params.data={self.data}); "
                "give its locale or use merge.params.data=target"
            )
        return {"target": [target], "sources": [source_locale], "both": [target, source_locale]}[self.data]


def statistics_rows(params: StatisticsData, target: Optional[str], source_locales: list[Optional[str]]) -> list[tuple[str, str]]:
    """Every (locale, split) whose rows the statistics of the sources read (``Needs.rows``)."""
    pairs: list[tuple[str, str]] = []
    for i, loc in enumerate(source_locales):
        pairs += [(x, params.split) for x in params.locales(target, loc, loc or f"#{i}")]
    return list(dict.fromkeys(pairs))


def example_rows(data: DataConfig, tokenizer: Any, locales: list[str], split: str, examples: int, seed: int) -> list[list[int]]:
    """``examples`` utterances split evenly over ``locales`` (seeded subsets of each locale's ``split``)."""
    from merginguriel.adamerging.data import target_utterances

    rows: list[list[int]] = []
    share = [examples // len(locales) + (1 if i < examples % len(locales) else 0) for i in range(len(locales))]
    for loc, n in zip(locales, share):
        if n > 0:
            rows += target_utterances(data, tokenizer, loc, split, max_examples=n, seed=seed)
    return rows
