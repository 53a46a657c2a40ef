"""Ensemble baselines (not merges) over the same K sources: majority, weighted majority, soft vote, logit vote."""

from merginguriel.ensembles.vote import (
    COMBINERS,
    ENSEMBLES,
    evaluate_ensembles,
    logit_vote,
    majority,
    soft_vote,
    weighted_majority,
)

__all__ = ["COMBINERS", "ENSEMBLES", "evaluate_ensembles", "logit_vote", "majority", "soft_vote", "weighted_majority"]
