"""The shared meaning space of the synthetic world: one vector per concept, with the structure a pre-trained
multilingual encoder's embedding space has.

- Topics: every intent, scenario and slot type has a direction, and a concept's vector leans towards the directions of
  the topics it belongs to (a verb of ``alarm_set`` towards alarm_set and alarm), so words of one topic are neighbours,
  as related words are in XLM-R's space; the rest of each vector is the concept's own.
- Salience: one direction carries how much a word matters to what an utterance means (content words high, function
  words low). The backbone's attention reads it (see ``plant``), as trained encoders attend to content words.
- Anchors: digits have no language-specific form, so they keep their meaning in every language.

A locale writes concept c with the vector ``meaning(c) + its distortion of c + its distortions of c's topics``
(``relatedness``), so translations are near each other but never identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from merginguriel.embedded.synthetic import SLOT_TYPES

# How far a concept's vector leans towards each of its topics (its own part has norm about 1).
TOPIC_WEIGHTS = {"intent": 0.6, "scenario": 0.4, "slot": 0.4}
# Salience of each concept class (the prefix of its id); special tokens and unknown pieces get SALIENCE_OTHER.
SALIENCE = {"iv": 1.0, "in": 1.0, "sc": 0.5, "slot": 0.3, "digit": 0.3, "gen": 0.0, "adj": 0.0, "fn": -1.0, "adp": -1.0, "time": -0.5}
SALIENCE_OTHER = -1.0
SALIENCE_SIZE = 1.0  # the salience component's length per unit of salience, next to the unit-norm meaning


def topics_of(concept: str) -> list[tuple[str, float]]:
    """The topics a concept belongs to, with how far it leans towards each."""
    kind, *rest = concept.split(":")
    if kind in ("iv", "in"):
        intent = rest[0]
        return [(f"intent:{intent}", TOPIC_WEIGHTS["intent"]), (f"scenario:{intent.split('_', 1)[0]}", TOPIC_WEIGHTS["scenario"])]
    if kind == "sc":
        return [(f"scenario:{rest[0]}", TOPIC_WEIGHTS["scenario"])]
    if kind == "slot":
        return [(f"slot:{rest[0]}", TOPIC_WEIGHTS["slot"])]
    return []


def salience(concept: str) -> float:
    return SALIENCE.get(concept.split(":", 1)[0], SALIENCE_OTHER)


def digit_concept(text: str) -> str:
    return f"digit:{text}"


@dataclass
class MeaningSpace:
    """Unit-norm own vectors per concept, topic directions and the salience direction, all orthogonal to salience."""

    dim: int
    own: dict[str, np.ndarray]
    topics: dict[str, np.ndarray]
    salience_axis: np.ndarray

    @classmethod
    def draw(cls, concepts: list[str], dim: int, rng: np.random.Generator) -> "MeaningSpace":
        axis = rng.standard_normal(dim)
        axis /= np.linalg.norm(axis)

        def unit() -> np.ndarray:
            v = rng.standard_normal(dim)
            v -= (v @ axis) * axis
            return v / np.linalg.norm(v)

        topic_names = sorted({t for c in concepts for t, _ in topics_of(c)} | {f"slot:{s}" for s in SLOT_TYPES})
        topics = {t: unit() for t in topic_names}
        own = {c: unit() for c in concepts}
        return cls(dim, own, topics, axis)

    def vector(self, concept: str, distortion: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The concept's vector as one locale writes it (``distortion`` maps concepts and topics to that locale's
        shifts; None: the shared meaning), with its salience component."""
        d = distortion or {}
        v = self.own[concept] + d.get(concept, 0.0)
        for topic, weight in topics_of(concept):
            v = v + weight * (self.topics[topic] + d.get(topic, 0.0))
        v = v - (v @ self.salience_axis) * self.salience_axis
        v = v / max(float(np.linalg.norm(v)), 1e-9)
        return v + SALIENCE_SIZE * salience(concept) * self.salience_axis

    def filler(self, rng: np.random.Generator) -> np.ndarray:
        """A vector for a piece with no meaning (special tokens, single characters): random, low salience."""
        v = rng.standard_normal(self.dim)
        v -= (v @ self.salience_axis) * self.salience_axis
        return v / np.linalg.norm(v) + SALIENCE_SIZE * SALIENCE_OTHER * self.salience_axis

