"""Language similarity (URIEL and REAL) and source selection.

Convention for every similarity frame: ``S.loc[target, source]`` is the score of ``source`` for ``target``.
"""

from merginguriel.similarity.matrix import SIMILARITY_KINDS, check_similarity_kind, select_for_target, similarity_matrix
from merginguriel.similarity.real import read_nxn, real_similarity
from merginguriel.similarity.selection import Selection, select_sources, sinkhorn
from merginguriel.similarity.uriel import URIEL_DISTANCES, uriel_similarity

__all__ = [
    "SIMILARITY_KINDS",
    "URIEL_DISTANCES",
    "check_similarity_kind",
    "Selection",
    "read_nxn",
    "real_similarity",
    "select_for_target",
    "select_sources",
    "similarity_matrix",
    "sinkhorn",
    "uriel_similarity",
]
