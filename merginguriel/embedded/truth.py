"""The synthetic world's hidden causes: what really makes two of its languages alike, drawn once per seed.

Real typology is the starting point (``typology``: Glottolog family paths, WALS/URIEL word order, Glottolog
coordinates, CC-100 sizes), but the world plants its own perturbed, partial version of it:

- genetic: the UPGMA tree over the family paths with every branch length multiplied by a seeded log-normal factor
  (``BRANCH_NOISE``): family databases record which languages group together, not how long each lineage has been
  apart, so two sisters may be near-identical or far apart; and families the database leaves unrelated are joined
  by seeded deep branches (``DEEP_BRANCH``), as proposed macro-families and ancient contact would;
- syntax: the recorded word-order parameters, each wrong for the synthetic language with probability ``SYNTAX_ERROR``
  (URIEL's syntax is partly imputed by k-NN and coarse), plus ``HIDDEN_SYNTAX`` binary features that no database
  records, evolved down the hidden tree;
- contact: the Glottolog point of each language moved by a seeded ``CONTACT_JITTER_KM`` (a language is spoken over an
  area), and seeded long-distance networks that no database records (trade, media, migration, a common second
  language: ``CONTACT_NETWORKS``), each language taking part in a few;
- resource: the CC-100 level plus seeded noise (``RESOURCE_NOISE``): how well XLM-R aligned a language depends on the
  quality and the domain of its text, not only on its size.

Both the word forms (``synthetic``) and the meaning distortions (``relatedness``) follow this truth. URIEL's views
(lang2vec ``syntax_knn``, urielplus genetic and geographic distances) read the real typology, so they observe the
world's causes imperfectly, as they observe real languages; ``benchmarks/calibration.py`` reports how imperfectly.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from merginguriel.embedded.resources import resource_level
from merginguriel.embedded.seeding import seeded_rng
from merginguriel.embedded.typology import BASIC_ORDERS, BINARY_FEATURES, genetic_tree, load_typology
from merginguriel.locales import LOCALES

BRANCH_NOISE = 0.6  # standard deviation of the log of each branch's length multiplier
DEEP_BRANCH = 0.08  # mean length of the deep branches that join recorded families (the root's height is about 0.5)
SYNTAX_ERROR = 0.15  # chance that a recorded word-order parameter is wrong for the synthetic language
HIDDEN_SYNTAX = 8  # binary syntactic features no database records
HIDDEN_SYNTAX_RATE = 1.5  # their change rate per unit of (hidden) branch length
CONTACT_JITTER_KM = 400.0  # standard deviation of each coordinate's displacement, in km
CONTACT_NETWORKS = 6  # hidden long-distance contact networks (trade, media, a common second language)
NETWORK_MEMBERSHIP = 0.25  # chance that a language takes part in each network
NETWORK_SHARE = 0.5  # the networks' share of the contact cause (the rest is geographic distance)
RESOURCE_NOISE = 0.08  # standard deviation of the noise on the [0, 1] resource level
KM_PER_DEGREE = 111.2


def _rng(seed: int, *key: Any) -> np.random.Generator:
    return seeded_rng(seed, "truth", *key)


def leaves(node: dict[str, Any]) -> list[str]:
    return [node["locale"]] if "locale" in node else [loc for c in node["children"] for loc in leaves(c)]


@functools.lru_cache(maxsize=8)
def _hidden_tree(seed: int) -> dict[str, Any]:
    def perturb(node: dict[str, Any], parent_height: float) -> dict[str, Any]:
        rng = _rng(seed, "branch", sorted(leaves(node)))
        recorded = parent_height - node["height"]
        factor = math.exp(BRANCH_NOISE * float(rng.standard_normal()))
        # groupings above the recorded families (unrelated in the database, joined at no height): a deep branch of
        # the world's own, so some "unrelated" families share a little history and others none
        deep = DEEP_BRANCH * float(rng.exponential()) if recorded == 0.0 and "locale" not in node else 0.0
        out = {"branch": recorded * factor + deep}
        if "locale" in node:
            return {**out, "locale": node["locale"]}
        return {**out, "children": [perturb(c, node["height"]) for c in node["children"]]}

    tree = genetic_tree(LOCALES)
    return perturb(tree, tree["height"])


def hidden_tree(seed: int = 0) -> dict[str, Any]:
    """The world's genetic tree over all 52 locales: nodes ``{"branch": length above, "children": [...]}``, leaves
    ``{"branch": ..., "locale": loc}``; the recorded UPGMA topology with perturbed branch lengths (not ultrametric)."""
    return _hidden_tree(seed)


def _depths(seed: int) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """Each leaf's depth (path length from the root) and each pair's shared depth (their common ancestor's)."""
    leaf_depth: dict[str, float] = {}
    shared: dict[tuple[str, str], float] = {}

    def visit(node: dict[str, Any], depth: float) -> None:
        if "locale" in node:
            leaf_depth[node["locale"]] = depth + node["branch"]
            return
        below = leaves(node)
        here = depth + node["branch"]
        for a in below:
            for b in below:
                shared[a, b] = here  # deeper nodes visited later overwrite with their larger depth
        for child in node["children"]:
            visit(child, here)

    root = hidden_tree(seed)
    visit({**root, "branch": 0.0}, 0.0)
    return leaf_depth, shared


def genetic_kernel(seed: int = 0) -> np.ndarray:
    """Brownian motion down the hidden tree, as a correlation matrix over LOCALES: shared depth over the geometric
    mean of the two depths (0 across families, 1 on the diagonal)."""
    depth, shared = _depths(seed)
    n = len(LOCALES)
    out = np.eye(n)
    for i, a in enumerate(LOCALES):
        for j, b in enumerate(LOCALES):
            if i != j:
                out[i, j] = shared.get((a, b), 0.0) / math.sqrt(depth[a] * depth[b])
    return out


def _observed_syntax(entry: dict[str, Any]) -> np.ndarray:
    onehot = [float(entry["order"] == o) for o in BASIC_ORDERS]
    return np.array(onehot + [float(entry[k]) for k in (*BINARY_FEATURES, "case_suffix")])


def syntax_vectors(seed: int = 0) -> np.ndarray:
    """Each locale's true syntax (rows in LOCALES order): its recorded word-order parameters with seeded errors,
    then the hidden features."""
    typ = load_typology()
    rows = []
    for loc in LOCALES:
        x = _observed_syntax(typ[loc])
        rng = _rng(seed, "syntax", loc)
        n_order = len(BASIC_ORDERS)
        if rng.random() < SYNTAX_ERROR:
            x[:n_order] = np.eye(n_order)[int(rng.integers(n_order))]
        flips = rng.random(len(x) - n_order) < SYNTAX_ERROR
        x[n_order:] = np.where(flips, 1.0 - x[n_order:], x[n_order:])
        rows.append(x)
    hidden = _hidden_features(seed)
    return np.hstack([np.stack(rows), hidden])


def _hidden_features(seed: int) -> np.ndarray:
    """HIDDEN_SYNTAX binary features evolved down the hidden tree: each branch flips each with probability
    (1 - exp(-2 rate length)) / 2 (a symmetric two-state chain)."""
    out: dict[str, np.ndarray] = {}

    def visit(node: dict[str, Any], state: np.ndarray) -> None:
        rng = _rng(seed, "hidden-syntax", sorted(leaves(node)))
        p = (1.0 - math.exp(-2.0 * HIDDEN_SYNTAX_RATE * node["branch"])) / 2.0
        state = np.where(rng.random(HIDDEN_SYNTAX) < p, 1.0 - state, state)
        if "locale" in node:
            out[node["locale"]] = state
        else:
            for child in node["children"]:
                visit(child, state)

    root = hidden_tree(seed)
    start = (_rng(seed, "hidden-syntax-root").random(HIDDEN_SYNTAX) < 0.5).astype(float)
    for child in root["children"]:
        visit(child, start)
    return np.stack([out[loc] for loc in LOCALES])


def syntax_kernel(seed: int = 0) -> np.ndarray:
    """Cosine between the locales' centred true-syntax vectors (what sets a language apart, not what all share)."""
    x = syntax_vectors(seed)
    x = x - x.mean(axis=0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    return x @ x.T


def coordinates(seed: int = 0) -> np.ndarray:
    """(latitude, longitude) in degrees per locale: the Glottolog point moved by a seeded displacement."""
    typ = load_typology()
    out = []
    for loc in LOCALES:
        lat, lon = typ[loc]["latitude"], typ[loc]["longitude"]
        d_north, d_east = _rng(seed, "coordinates", loc).standard_normal(2) * CONTACT_JITTER_KM / KM_PER_DEGREE
        lat = float(np.clip(lat + d_north, -89.0, 89.0))
        out.append((lat, lon + d_east / max(math.cos(math.radians(lat)), 0.1)))
    return np.array(out)


def contact_networks(seed: int = 0) -> np.ndarray:
    """Cosine between the locales' seeded membership vectors of the hidden contact networks (0 for a language in none)."""
    rng = _rng(seed, "networks")
    member = (rng.random((len(LOCALES), CONTACT_NETWORKS)) < NETWORK_MEMBERSHIP) * rng.uniform(0.5, 1.0, (len(LOCALES), CONTACT_NETWORKS))
    norms = np.linalg.norm(member, axis=1, keepdims=True)
    unit = np.divide(member, norms, out=np.zeros_like(member), where=norms > 0)
    out = unit @ unit.T
    np.fill_diagonal(out, 1.0)
    return out


def hidden_resource(locale: str, seed: int = 0) -> float:
    """The resource level the world plants: CC-100's, plus seeded noise, clipped to [0, 1]."""
    noise = RESOURCE_NOISE * float(_rng(seed, "resource", locale).standard_normal())
    return float(np.clip(resource_level(locale) + noise, 0.0, 1.0))
