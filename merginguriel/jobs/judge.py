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

from pathlib import Path
from typing import Optional

import torch

from merginguriel.io.predictions import pack
from merginguriel.jobs.select import Chosen
from merginguriel.jobs.spec import MergeJob


def best_by_validation(accuracies: dict[str, float]) -> str:
    """The model with the highest accuracy (ties: the earlier in the given order; for selected sources, the more
    similar). Given validation accuracies it is the honest choice; given test ones (``oracle_source``), an oracle."""
    names = list(accuracies)
    return max(names, key=lambda n: (accuracies[n], -names.index(n)))


def _paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    from merginguriel.evaluation.paired import compare

    return compare(a.numpy(), b.numpy()).to_dict()


def check_judged_rows(job: MergeJob, splits: list[str]) -> None:
    """InputError (naming the data file) when the target has no rows in a split the judgement reads (validation, where
    the best source is chosen, and ``splits``): checked before merging, so no merge is made that cannot be judged."""
    from transformers import AutoTokenizer

    from merginguriel.data.tokenized import tokenized_split
    from merginguriel.io import model_files_checked

    with model_files_checked(job.layout.base, "base"):
        tokenizer = AutoTokenizer.from_pretrained(job.layout.base)
    for split in dict.fromkeys(["validation", *splits]):
        tokenized_split(job.data_config, tokenizer, job.target, split)


def judge(job: MergeJob, output: Optional[Path], chosen: Chosen, splits: list[str]) -> dict[str, dict]:
    """Per split: the merged model's metrics (when ``output`` is given), every baseline, the merging effect, the gain
    over the validation-chosen best source and the comparison with the target's own model."""
    from merginguriel.checkpoints import is_finished
    from merginguriel.ensembles.vote import COMBINERS
    from merginguriel.evaluation.outputs import checkpoint_outputs

    data, target, bs, device = job.data_config, job.target, job.evaluate.batch_size, job.device
    layout = job.layout
    names = chosen.names
    weights = torch.tensor([w / sum(chosen.weights) for w in chosen.weights], dtype=torch.float64)

    def outputs(path, split, cache=True):
        return checkpoint_outputs(path, target, split, data, bs, device, cache=cache)

    def accuracy(path, split):
        return float(outputs(path, split).correct.float().mean())

    val_acc = {n: accuracy(p, "validation") for n, p in zip(names, chosen.paths)}
    chosen_best = best_by_validation(val_acc)
    pool = [c for c in job.candidate_pool() if c != target and is_finished(layout.finetuned(c))]
    overall = best_by_validation({c: accuracy(layout.finetuned(c), "validation") for c in pool}) if pool else None
    own = layout.finetuned(target)
    has_self = is_finished(own)
    result: dict[str, dict] = {}
    for split in splits:
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
            "base_accuracy": accuracy(layout.base, split),
            "labels": pack(labels),
        }
        overall_correct = None
        if overall is not None:
            overall_correct = outputs(layout.finetuned(overall), split).correct
            record.update(best_overall=overall, best_overall_accuracy=float(overall_correct.float().mean()),
                          candidates=len(pool))
        self_correct = None
        if has_self:
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
