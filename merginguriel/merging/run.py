"""Running a checked merge plan, whatever its method: what the method needs is gathered first (per-source statistics,
computed once and cached), then the streaming engine runs it, or the method runs itself (AdaMerging, which learns on
the target's utterances with a Lightning Trainer). Nothing here checks the inputs again.

```python
from merginguriel.merging import MergeSpec, Source, merge
merge(MergeSpec(base, [Source(path, "de-DE", 0.6), Source(path2, "fr-FR", 0.4)], "ties", {"density": 0.2}, out))
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from merginguriel.checkpoints import Layout
from merginguriel.data.config import DataConfig
from merginguriel.errors import InputError
from merginguriel.merging.spec import MergeSpec, RunOptions
from merginguriel.merging.validate import Plan, prepare, statistics_checkpoints
from merginguriel.training import TrainerOptions


@dataclass(frozen=True)
class MergeContext:
    """What a method that reads data gets from whoever runs it: the MASSIVE data (``data``, whose root holds the
    embedded data and the caches), where statistics are cached (``layout``), and the Trainer settings."""

    data: DataConfig
    layout: Optional[Layout] = None
    trainer: TrainerOptions = TrainerOptions()


def merge(spec: MergeSpec, context: Optional[MergeContext] = None) -> Path:
    """Check ``spec`` completely, then merge into ``spec.output`` (HF folder + manifest.json); nothing is written
    unless every check passes. A method that reads data (``Needs``) needs ``context``."""
    options = spec.options
    return run_plan(prepare(spec), options, context)


def run_plan(plan: Plan, options: RunOptions = RunOptions(), context: Optional[MergeContext] = None) -> Path:
    """Run a checked plan: gather what its method needs, then merge."""
    needs = plan.method.needs
    missing = [s for s in needs.statistics if s.kind not in plan.statistics]
    if (missing or needs.target_data) and context is None:
        wants = ", ".join(f"{s.kind} statistics of every source" for s in missing) or "the target's unlabelled utterances"
        raise InputError(
            f"method {plan.method.name} needs {wants}; a merge job gathers them (`merginguriel merge`); in the library "
            "pass a MergeContext (the data, and where statistics are cached) or MergeSpec.statistics={kind: [folders]}"
        )
    if missing:
        plan = with_statistics(plan, missing, context)
    unread = [kind for kind in plan.reads.statistics if kind not in plan.statistics]
    if unread:
        raise InputError(f"method {plan.method.name} reads {', '.join(unread)} statistics of every source, and they are not "
                         f"given: pass MergeSpec.statistics={{'{unread[0]}': [one folder per source]}}")
    if not plan.method.streamed:
        return plan.method.fn(plan, options, context)
    from merginguriel.merging.engine import stream

    return stream(plan, options)


def with_statistics(plan: Plan, statistics, context: MergeContext) -> Plan:
    """``plan`` with the folders of ``statistics`` (the method's ``Statistic`` entries) for every source, computed
    where the cache under ``context.layout`` has none."""
    from merginguriel.statistics.cache import statistics_folders

    if context.layout is None:
        raise InputError(f"method {plan.method.name} computes statistics: the merge context needs a layout to cache them in")
    folders = {s.kind: statistics_folders(s, plan.params, plan.sources, context.data, context.layout, plan.target,
                                          plan.seed, plan.device) for s in statistics}
    return dataclasses.replace(plan, statistics={**plan.statistics, **statistics_checkpoints(list(plan.sources), folders)})
