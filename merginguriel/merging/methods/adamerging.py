"""AdaMerging (Yang et al., ICLR 2024): merge coefficients learned by minimising the entropy of the merged model's
predictions on the target's unlabelled utterances, with a Lightning Trainer (merginguriel.adamerging). Not streamed:
it runs itself over the checked plan and writes the output, whose manifest records what every merge records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from merginguriel.adamerging.options import AdaMergingOptions
from merginguriel.merging.registry import Needs, Params, register


@dataclasses.dataclass(frozen=True)
class AdaMergingParams(AdaMergingOptions, Params):
    __doc__ = AdaMergingOptions.__doc__


def _rows(params: AdaMergingParams, target, sources) -> list[tuple[str, str]]:
    return [(target, params.split)]


@register("adamerging", AdaMergingParams, streamed=False, section="adamerging",
          needs=Needs(target_data=True, trainer=True, rows=_rows))
def adamerging(plan, options, context) -> Path:
    """Learns merge coefficients (one per source, or per source and tensor) by entropy minimisation on the target's
    unlabelled validation utterances; the model written is task arithmetic with the learned coefficients.

    The coefficients and the entropy per step are logged beside the model (coefficients.json, metrics.csv,
    adamerging.png); a rerun continues from the run's last Lightning checkpoint (resume: auto).
    """
    from merginguriel.adamerging.run import run_adamerging
    from merginguriel.merging.manifest import write_merged_manifest

    common = plan.manifest_fields()

    def record(folder: Path, fields: dict) -> None:
        write_merged_manifest(folder, **{**common, **fields})

    return run_adamerging(adaptation(plan, options.overwrite), plan.params, context.trainer, context.data, record)


def adaptation(plan, overwrite: bool = False):
    """What AdaMerging adapts (merginguriel.adamerging.run.Adaptation) from a checked plan: the tensors it merges,
    and where each lies in the checked files (so nothing is opened and checked again)."""
    from merginguriel.adamerging.rows import TensorLocation
    from merginguriel.adamerging.run import Adaptation

    models = [plan.base, *plan.sources]

    def locate(name: str) -> list[TensorLocation]:
        infos = [m.checkpoint.tensors[name] for m in models]
        return [TensorLocation(str(i.file), i.offset, i.torch_dtype, i.shape) for i in infos]

    return Adaptation(
        base=plan.base.path, sources=tuple(s.path for s in plan.sources),
        names=tuple(s.locale or s.path.name for s in plan.sources), weights=plan.weights,
        learn=frozenset(plan.merged), locate=locate, target=plan.target, output=plan.output, overwrite=overwrite,
        device=str(plan.device),
    )
