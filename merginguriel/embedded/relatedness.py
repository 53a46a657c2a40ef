"""Why two synthetic languages transfer: a hidden mixture of causes.

Every locale L distorts the shared meaning space in its own way: for each semantic unit k (a concept such as one verb,
or a topic such as one intent or scenario) it has a vector D_L(k) that shifts how L expresses k. The distortion is a
weighted sum of independent Gaussian fields over the languages, each with the covariance of one cause, all taken from
the world's hidden truth (``truth``), not from the databases URIEL reads:

- genetic relatedness: Brownian motion down the hidden genetic tree (the recorded family grouping with perturbed
  branch lengths and deep links): two languages share every change made on their common branches;
- contact: a Gaussian process over where the languages are spoken (displaced Glottolog points), covariance
  exp(-great-circle km / CONTACT_KM), mixed with hidden long-distance contact networks;
- syntax: the cosine between the languages' centred true-syntax vectors (recorded word order with errors, plus
  features no database records);
- seeded affinity: a random kernel (the cosine between random vectors, one per language, drawn from the seed): the
  idiosyncratic affinities no cause above explains;
- own noise: independent per language;
- resource level (CC-100 size with noise, ``truth.hidden_resource``): the less XLM-R saw of a language, the larger its
  whole distortion and the larger the unshared part of it. Languages XLM-R saw much of are aligned best, so they are
  good sources for everyone and good targets (English above all), as in XLM-R;
- a seeded quality factor per language scales its whole distortion a little.

Two languages transfer well when their distortions are small and correlated. URIEL observes the recorded typology, not
this mixture, so how well URIEL predicts measured transfer is an empirical question, as it is for XLM-R
(``benchmarks/results/calibration.md``). The weights below are fixed (not options) so that every build of a seed is the
same world; ``cause_kernels`` exposes the covariances for analysis.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from merginguriel.embedded import truth
from merginguriel.embedded.seeding import seeded_rng
from merginguriel.locales import LOCALES, check_locale

CONTACT_KM = 2000.0
EARTH_KM = 6371.0
# Standard deviations of each cause's share of a distortion (per unit, in units of the meaning vectors' norm).
CAUSE_SCALES: dict[str, float] = {"genetic": 0.55, "contact": 0.45, "word_order": 0.45, "affinity": 0.5}
AFFINITY_DIM = 8
OWN_SCALE = 0.35  # own noise of the best-resourced language
OWN_LOW_RESOURCE_FACTOR = 2.5  # the least-resourced language's own noise is this many times larger
RESOURCE_SCALES = (0.7, 1.3)  # whole-distortion scale of the best- and the least-resourced language
QUALITY_SPREAD = 0.1  # standard deviation of the log of each language's distortion scale


def _contact_covariance(seed: int) -> np.ndarray:
    lat, lon = (np.radians(c) for c in truth.coordinates(seed).T)
    cos = np.sin(lat)[:, None] * np.sin(lat)[None] + np.cos(lat)[:, None] * np.cos(lat)[None] * np.cos(lon[:, None] - lon[None])
    km = EARTH_KM * np.arccos(np.clip(cos, -1.0, 1.0))
    geographic = np.exp(-km / CONTACT_KM)  # the exponential kernel is positive definite for great-circle distance
    return (1.0 - truth.NETWORK_SHARE) * geographic + truth.NETWORK_SHARE * truth.contact_networks(seed)


@functools.lru_cache(maxsize=4)
def _planted_kernels(seed: int) -> dict[str, np.ndarray]:
    """Every cause's kernel over all 52 locales (the hidden truth's, see ``truth``)."""
    return {"genetic": truth.genetic_kernel(seed), "contact": _contact_covariance(seed), "word_order": truth.syntax_kernel(seed),
            "affinity": _affinity_kernel(seed)}


def _affinity_kernel(seed: int) -> np.ndarray:
    x = seeded_rng(seed, "affinity").standard_normal((len(LOCALES), AFFINITY_DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def cause_kernels(locales: list[str] | tuple[str, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """The across-language correlation matrix of each cause, rows and columns in ``locales`` order.

    Always computed over all 52 locales (the tree, the centring, the seeded affinities) and then sliced, so a pair's
    value never depends on which other locales are asked for.
    """
    idx = [LOCALES.index(check_locale(loc)) for loc in locales]
    return {name: k[np.ix_(idx, idx)].copy() for name, k in _planted_kernels(seed).items()}


def _square_root(kernel: np.ndarray) -> np.ndarray:
    """S with S @ S.T == kernel (clipping the tiny negative eigenvalues of near-duplicate languages)."""
    values, vectors = np.linalg.eigh((kernel + kernel.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


@dataclass
class Distortions:
    """The distortion vectors of every locale for a list of semantic units: ``vectors[i, u]`` for locale i, unit u."""

    locales: list[str]
    units: list[str]
    vectors: np.ndarray  # (locales, units, dim), float32

    def of(self, locale: str) -> dict[str, np.ndarray]:
        i = self.locales.index(locale)
        return {u: self.vectors[i, j] for j, u in enumerate(self.units)}


def own_scale(locale: str, seed: int = 0) -> float:
    """The standard deviation of a locale's own (unshared) noise: larger the less XLM-R saw of the language."""
    return OWN_SCALE * (1.0 + (OWN_LOW_RESOURCE_FACTOR - 1.0) * (1.0 - truth.hidden_resource(locale, seed)))


def distortion_scale(locales: list[str] | tuple[str, ...], seed: int = 0) -> np.ndarray:
    """Each locale's whole-distortion scale: its resource level's, times a seeded log-normal quality factor."""
    quality = np.exp(QUALITY_SPREAD * seeded_rng(seed, "quality").standard_normal(len(LOCALES)))
    high, low = RESOURCE_SCALES
    return np.array([(low + (high - low) * truth.hidden_resource(loc, seed)) * quality[LOCALES.index(loc)] for loc in locales])


def distortions(locales: list[str] | tuple[str, ...], units: list[str], dim: int, seed: int) -> Distortions:
    """Draw every locale's distortion of every unit: the weighted sum of one Gaussian field per cause plus own noise,
    scaled by the locale's ``distortion_scale``.

    Each field has independent N(0, 1/dim) entries per unit and dimension (norm about 1), correlated across languages
    by the cause's kernel; every draw comes from a generator keyed by the seed and the cause, so a seed gives the same
    world whatever else ran before.
    """
    locales = list(locales)
    n, m = len(locales), len(units)
    total = np.zeros((n, m, dim))
    for name, kernel in cause_kernels(locales, seed).items():
        white = seeded_rng(seed, "field", name, dim).standard_normal((n, m * dim)) / math.sqrt(dim)
        total += CAUSE_SCALES[name] * (_square_root(kernel) @ white).reshape(n, m, dim)
    own = seeded_rng(seed, "field", "own", dim).standard_normal((n, m, dim)) / math.sqrt(dim)
    total += np.array([own_scale(loc, seed) for loc in locales])[:, None, None] * own
    total *= distortion_scale(locales, seed)[:, None, None]
    return Distortions(locales, list(units), total.astype(np.float32))


def expected_similarity(locales: list[str] | tuple[str, ...], seed: int = 0) -> np.ndarray:
    """Correlation of two locales' distortions implied by the mixture (the planted relatedness, for analysis only)."""
    locales = list(locales)
    cov = sum(CAUSE_SCALES[k] ** 2 * K for k, K in cause_kernels(locales, seed).items())
    own = np.array([own_scale(loc, seed) ** 2 for loc in locales])
    var = np.diag(cov) + own
    out = cov / np.sqrt(var[:, None] * var[None])
    np.fill_diagonal(out, 1.0)  # own noise is shared with oneself
    return out
