"""Judging a merged model: on each of the job's splits, beside the baselines a user would otherwise pick, on the same
rows, with paired intervals.

Baselines (all on the target's split, all on the same rows):

* ``self``: the target's own fine-tuned model, when it has one;
* ``best_source``: the selected source with the best VALIDATION accuracy -- the honest comparator, the model a user
  would pick without merging; ``oracle_source``: the best selected source on the judged split itself (an oracle when
  that split is test: it is labelled so in the report);
* ``best_overall``: the best of ALL the job's candidate models (every finished fine-tune but the target's, or
  ``selection.candidates``) on the target's VALIDATION split -- the single model a user would otherwise deploy, the
  verdict's comparator (``vs_best_overall``: paired, as ``gain``); it can lie outside the selected sources;
* ``source_mean``: the mean zero-shot accuracy of the selected sources (unweighted; ``source_mean_weighted`` too);
* ``ensembles``: majority, weighted majority, soft and logit vote of the same sources with the same weights;
* ``base``: the untrained shared base.

Vocabulary (the research log's; the same names in the database, the report, the plots and `advise`):
``merging_effect`` = merged - source_mean (positive: synergy, negative: interference);
``gain`` = merged - best_source (chosen on validation), with a paired bootstrap 95% interval (``gain_ci``) and an
exact McNemar p-value (``gain_p``); ``vs_self`` likewise against the target's own model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from merginguriel.data.config import DataConfig
from merginguriel.io.predictions import pack
from merginguriel.jobs.select import Chosen


@dataclass(frozen=True)
class Judging:
    """What a judgement reads, checked once (:func:`plan_judgement`): the target and its data, the splits judged,
    the shared base, the candidates a user could deploy instead (finished fine-tunes, the target's own left out) and
    the target's own fine-tune when it has one."""

    target: str
    data: DataConfig
    splits: tuple[str, ...]
    batch_size: int
    device: str
    base: Path
    pool: dict[str, Path]
    own: Optional[Path]


def best_by_validation(accuracies: dict[str, float]) -> str:
    """The model with the highest accuracy (ties: the earlier in the given order; for selected sources, the more
    similar). Given validation accuracies it is the honest choice; given test ones (``oracle_source``), an oracle."""
    names = list(accuracies)
    return max(names, key=lambda n: (accuracies[n], -names.index(n)))


def _paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    from merginguriel.evaluation.paired import compare

    return compare(a.numpy(), b.numpy()).to_dict()


def judged_rows(target: Optional[str], splits: list[str]) -> list[tuple[str, str]]:
    """The target's splits a judgement reads: validation (where the best source is chosen) and every judged split;
    checked before merging (merginguriel.jobs.run.check_rows), so no merge is made that cannot be judged."""
    return [(target, split) for split in dict.fromkeys(["validation", *splits])] if splits else []


def plan_judgement(checked, splits: list[str]) -> Judging:
    """What a judgement of ``checked`` on ``splits`` reads: the candidates that are finished, the target's own model."""
    from merginguriel.checkpoints import is_finished

    data, target, layout = checked.data, checked.target, checked.layout
    pool = {c: layout.finetuned(c) for c in checked.candidates if c != target and is_finished(layout.finetuned(c))}
    own = layout.finetuned(target)
    return Judging(target, data, tuple(splits), checked.evaluate.batch_size, checked.job.device, checked.base, pool,
                   own if is_finished(own) else None)


def judge(judging: Judging, output: Optional[Path], chosen: Chosen) -> dict[str, dict]:
    """Per split: the merged model's metrics (when ``output`` is given), every baseline, the merging effect, the gain
    over the validation-chosen best source and the comparison with the target's own model."""
    from merginguriel.ensembles.vote import COMBINERS
    from merginguriel.evaluation.outputs import checkpoint_outputs

    data, target, bs, device = judging.data, judging.target, judging.batch_size, judging.device
    names = chosen.names
    weights = torch.tensor([w / sum(chosen.weights) for w in chosen.weights], dtype=torch.float64)

    def outputs(path, split, cache=True):
        return checkpoint_outputs(path, target, split, data, bs, device, cache=cache)

    def accuracy(path, split):
        return float(outputs(path, split).correct.float().mean())

    val_acc = {n: accuracy(p, "validation") for n, p in zip(names, chosen.paths)}
    chosen_best = best_by_validation(val_acc)
    pool = judging.pool
    overall = best_by_validation({c: accuracy(path, "validation") for c, path in pool.items()}) if pool else None
    own = judging.own
    result: dict[str, dict] = {}
    for split in judging.splits:
        srcs = [outputs(p, split) for p in chosen.paths]
        correct = {n: o.correct for n, o in zip(names, srcs)}
        accs = {n: float(c.float().mean()) for n, c in correct.items()}
        mean = sum(accs.values()) / len(accs)
        oracle = best_by_validation(accs)  # the same rule, on the judged split: an oracle when that is test
        labels = srcs[0].labels
        logits = torch.stack([o.logits for o in srcs])
        record = {
            "split": split,
            "n": int(labels.numel()),
            "source_accuracy": accs,
            "source_mean": mean,
            "source_mean_weighted": float(sum(w * accs[n] for w, n in zip(weights.tolist(), names))),
            "best_source": chosen_best,
            "best_source_accuracy": accs[chosen_best],
            "oracle_source": oracle,
            "oracle_source_accuracy": accs[oracle],
            "ensembles": {name: float((fn(logits, weights) == labels).float().mean()) for name, fn in COMBINERS.items()},
            "base_accuracy": accuracy(judging.base, split),
            "labels": pack(labels),
        }
        overall_correct = None
        if overall is not None:
            overall_correct = outputs(pool[overall], split).correct
            record.update(best_overall=overall, best_overall_accuracy=float(overall_correct.float().mean()),
                          candidates=len(pool))
        self_correct = None
        if own is not None:
            self_correct = outputs(own, split).correct
            record["self_accuracy"] = float(self_correct.float().mean())
        if output is not None:
            merged = outputs(output, split, cache=False)
            m = merged.metrics()
            record.update(accuracy=m["accuracy"], macro_f1=m["macro_f1"], predictions=pack(merged.predictions))
            record["merging_effect"] = m["accuracy"] - mean
            vs_best = _paired(merged.correct, correct[chosen_best])
            record.update(gain=vs_best["delta"], gain_ci=[vs_best["ci_low"], vs_best["ci_high"]], gain_p=vs_best["p_value"])
            if overall_correct is not None:
                record["vs_best_overall"] = _paired(merged.correct, overall_correct)
            if self_correct is not None:
                record["vs_self"] = _paired(merged.correct, self_correct)
        result[split] = record
    return result
