"""Per-locale typology for the embedded synthetic languages, taken from URIEL (lang2vec) and a small script table.

What the generator takes from real typology:
- genetic relatedness: each language's Glottolog family path (lang2vec ``fam`` features). Two languages' genetic distance is
  ``1 - shared/max(len)`` over their paths (URIEL's definition), and an average-linkage (UPGMA) tree over the 51 locales
  decides how many word forms two synthetic languages share;
- word order: basic order (SVO/SOV/VSO/...), adjective, adposition, possessor and demonstrative placement, oblique
  placement, question-particle position and case suffixes, from ``syntax_wals`` where WALS has the value and
  ``syntax_knn`` (URIEL's imputed values) where it does not;
- the locale's real writing system (hand table below) and whether it separates words with spaces;
- where the language is spoken: the Glottolog latitude and longitude that urielplus ships (``lang_fam_geo.csv``, found
  through its ISO 639-3 to Glottocode map; the individual code first, then the macro code, then the locale's own
  override in ``GLOTTOCODE_OVERRIDES``), the basis of URIEL's geographic view and of the synthetic world's contact cause.

The derived table is shipped as ``typology_table.json`` beside this module, so building data needs neither lang2vec nor
urielplus at run time; ``python -m merginguriel.embedded.typology`` regenerates it from the live library, and a test checks
entries against it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from merginguriel.locales import ISO639_3, ISO639_3_MACRO, LOCALES

TABLE_PATH = Path(__file__).with_name("typology_table.json")

# Writing system of each locale as MASSIVE writes it. zh-CN / zh-TW differ only here (simplified vs traditional Han),
# hi-IN / ur-PK share a genetic path but not a script.
SCRIPTS: dict[str, str] = {
    "af-ZA": "Latin", "am-ET": "Ethiopic", "ar-SA": "Arabic", "az-AZ": "Latin", "bn-BD": "Bengali", "ca-ES": "Latin",
    "cy-GB": "Latin", "da-DK": "Latin", "de-DE": "Latin", "el-GR": "Greek", "en-US": "Latin", "es-ES": "Latin",
    "fa-IR": "Arabic", "fi-FI": "Latin", "fr-FR": "Latin", "he-IL": "Hebrew", "hi-IN": "Devanagari", "hu-HU": "Latin",
    "hy-AM": "Armenian", "id-ID": "Latin", "is-IS": "Latin", "it-IT": "Latin", "ja-JP": "Japanese", "jv-ID": "Latin",
    "ka-GE": "Georgian", "km-KH": "Khmer", "kn-IN": "Kannada", "ko-KR": "Hangul", "lv-LV": "Latin", "ml-IN": "Malayalam",
    "mn-MN": "Cyrillic", "ms-MY": "Latin", "my-MM": "Myanmar", "nb-NO": "Latin", "nl-NL": "Latin", "pl-PL": "Latin",
    "pt-PT": "Latin", "ro-RO": "Latin", "ru-RU": "Cyrillic", "sl-SL": "Latin", "sq-AL": "Latin", "sv-SE": "Latin",
    "sw-KE": "Latin", "ta-IN": "Tamil", "te-IN": "Telugu", "th-TH": "Thai", "tl-PH": "Latin", "tr-TR": "Latin",
    "ur-PK": "Arabic", "vi-VN": "Latin", "zh-CN": "Han-Simplified", "zh-TW": "Han-Traditional",
}
# Locales whose writing does not separate words with spaces (MASSIVE's Thai, Khmer, Burmese, Japanese and Chinese).
NO_SPACES: frozenset[str] = frozenset({"th-TH", "km-KH", "my-MM", "ja-JP", "zh-CN", "zh-TW"})

# Locales whose ISO codes (individual and macro) have no Glottolog point in urielplus: the Glottocode to use instead.
GLOTTOCODE_OVERRIDES: dict[str, str] = {"az-AZ": "nort2697"}  # aze (macro) has none; North Azerbaijani (azj) does

BASIC_ORDERS: tuple[str, ...] = ("SVO", "SOV", "VSO", "VOS", "OVS", "OSV")
# Binary word-order parameters: name -> (feature meaning "true", feature meaning "false").
BINARY_FEATURES: dict[str, tuple[str, str]] = {
    "adj_before_noun": ("S_ADJECTIVE_BEFORE_NOUN", "S_ADJECTIVE_AFTER_NOUN"),
    "adp_before_noun": ("S_ADPOSITION_BEFORE_NOUN", "S_ADPOSITION_AFTER_NOUN"),
    "possessor_before_noun": ("S_POSSESSOR_BEFORE_NOUN", "S_POSSESSOR_AFTER_NOUN"),
    "dem_before_noun": ("S_DEMONSTRATIVE_WORD_BEFORE_NOUN", "S_DEMONSTRATIVE_WORD_AFTER_NOUN"),
    "oblique_before_verb": ("S_OBLIQUE_BEFORE_VERB", "S_OBLIQUE_AFTER_VERB"),
    "polarq_final": ("S_POLARQ_MARK_FINAL", "S_POLARQ_MARK_INITIAL"),
}


def _lang2vec():
    import logging
    import warnings

    logging.getLogger("urielplus").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lang2vec imports the deprecated pkg_resources
        import lang2vec.lang2vec as l2v
    return l2v


def _feature_table(l2v, codes: list[str], feature_set: str) -> dict[str, dict[str, Any]]:
    raw = l2v.get_features(codes, feature_set, header=True)
    names = [str(n) for n in raw["CODE"]]
    return {code: dict(zip(names, raw[code])) for code in codes}


def _defined(value: Any) -> bool:
    return not isinstance(value, str)


def _pick(wals: dict[str, Any], knn: dict[str, Any], names: tuple[str, ...]) -> tuple[list[float], str]:
    """Values of ``names`` from WALS when WALS defines them all and one is set, else URIEL's kNN-imputed values."""
    values = [wals[n] for n in names]
    if all(_defined(v) for v in values) and max(values) > 0:
        return [float(v) for v in values], "wals"
    return [float(knn[n]) for n in names], "knn"


def family_paths(l2v, locales: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """Each locale's Glottolog family nodes (lang2vec ``fam``), root first; the macrolanguage code's where the individual one has none."""
    codes = sorted({ISO639_3[loc] for loc in locales} | {ISO639_3_MACRO[loc] for loc in locales if loc in ISO639_3_MACRO})
    fam = _feature_table(l2v, codes, "fam")  # one call: every call reloads lang2vec's whole table

    def path(code: str | None) -> list[str]:
        if code is None:
            return []
        return [name.removeprefix("F_") for name, v in fam[code].items() if _defined(v) and v == 1.0]

    return {loc: path(ISO639_3[loc]) or path(ISO639_3_MACRO.get(loc)) for loc in locales}


def coordinates(locales: tuple[str, ...] | list[str]) -> dict[str, tuple[float, float]]:
    """(latitude, longitude) of each locale's language from urielplus's Glottolog table."""
    import csv
    from importlib.resources import files

    csvs = files("urielplus") / "database" / "urielplus_csvs"
    with (csvs / "uriel_glottocode_map.csv").open(encoding="utf-8") as fh:
        glottocode = {row["iso_code"]: row["glottocode"] for row in csv.DictReader(fh)}
    with (csvs / "lang_fam_geo.csv").open(encoding="utf-8") as fh:
        points = {r["language_id"]: (float(r["latitude"]), float(r["longitude"])) for r in csv.DictReader(fh) if r["latitude"]}
    out = {}
    for loc in locales:
        tried = [glottocode.get(c) for c in (ISO639_3[loc], ISO639_3_MACRO.get(loc))] + [GLOTTOCODE_OVERRIDES.get(loc)]
        found = [points[g] for g in tried if g in points]
        if not found:
            raise RuntimeError(f"urielplus has no Glottolog coordinates for {loc}; add a GLOTTOCODE_OVERRIDES entry")
        out[loc] = found[0]
    return out


def compute_typology(locales: tuple[str, ...] = LOCALES) -> dict[str, Any]:
    """Derive the typology table from the live lang2vec data (what ``typology_table.json`` holds)."""
    import importlib.metadata

    l2v = _lang2vec()
    codes = sorted({ISO639_3[loc] for loc in locales})
    wals = _feature_table(l2v, codes, "syntax_wals")
    knn = _feature_table(l2v, codes, "syntax_knn")
    families = family_paths(l2v, locales)
    points = coordinates(locales)
    table: dict[str, Any] = {}
    for loc in locales:
        code = ISO639_3[loc]
        order_values, order_source = _pick(wals[code], knn[code], tuple(f"S_{o}" for o in BASIC_ORDERS))
        entry: dict[str, Any] = {
            "iso639_3": code,
            "script": SCRIPTS[loc],
            "spaces": loc not in NO_SPACES,
            "families": families[loc],
            "latitude": points[loc][0],
            "longitude": points[loc][1],
            "order": BASIC_ORDERS[max(range(len(BASIC_ORDERS)), key=lambda i: order_values[i])],
        }
        sources = {"order": order_source}
        for key, (yes, no) in BINARY_FEATURES.items():
            (v_yes, v_no), src = _pick(wals[code], knn[code], (yes, no))
            entry[key] = bool(v_yes >= v_no)
            sources[key] = src
        (suffix,), src = _pick(wals[code], knn[code], ("S_CASE_SUFFIX",))
        # Case suffixes only fuse with postpositions: a prepositional language keeps separate words.
        entry["case_suffix"] = bool(suffix >= 0.5) and not entry["adp_before_noun"]
        sources["case_suffix"] = src
        entry["sources"] = sources
        table[loc] = entry
    return {
        "source": {
            "lang2vec": importlib.metadata.version("lang2vec"),
            "feature_sets": ["fam", "syntax_wals", "syntax_knn"],
            "coordinates": f"urielplus {importlib.metadata.version('urielplus')} lang_fam_geo.csv (Glottolog)",
        },
        "locales": table,
    }


@functools.lru_cache(maxsize=1)
def load_typology() -> dict[str, dict[str, Any]]:
    """The shipped per-locale table (locale -> entry)."""
    with open(TABLE_PATH, encoding="utf-8") as fh:
        return json.load(fh)["locales"]


def genetic_distance(path_a: list[str], path_b: list[str]) -> float:
    """URIEL's genetic distance over family paths: 1 - shared nodes / longer path (1.0 when unrelated or unknown)."""
    if not path_a or not path_b:
        return 1.0
    shared = len(set(path_a) & set(path_b))
    return 1.0 - shared / max(len(path_a), len(path_b))


def genetic_distances(locales: tuple[str, ...] | list[str] = LOCALES) -> dict[tuple[str, str], float]:
    """Pairwise genetic distances of the locales, from the shipped table."""
    typ = load_typology()
    return {(a, b): genetic_distance(typ[a]["families"], typ[b]["families"]) for a in locales for b in locales}


def genetic_tree(locales: tuple[str, ...] | list[str] = LOCALES) -> dict[str, Any]:
    """Average-linkage (UPGMA) tree over the locales' genetic distances.

    Nodes are ``{"height": h, "children": [...]}``, leaves ``{"height": 0.0, "locale": loc}``; the tree is ultrametric,
    so the path between two leaves is twice the height of their lowest common ancestor (= their average distance).
    Ties break by locale order, so the tree is deterministic.
    """
    locales = list(locales)
    dist = genetic_distances(locales)
    clusters: list[tuple[list[str], dict[str, Any]]] = [([loc], {"height": 0.0, "locale": loc}) for loc in locales]

    def linkage(a: list[str], b: list[str]) -> float:
        return sum(dist[x, y] for x in a for y in b) / (len(a) * len(b))

    while len(clusters) > 1:
        best = None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                d = linkage(clusters[i][0], clusters[j][0])
                if best is None or d < best[0] - 1e-12:
                    best = (d, i, j)
        d, i, j = best
        (la, na), (lb, nb) = clusters[i], clusters[j]
        merged = (la + lb, {"height": d / 2.0, "children": [na, nb]})
        clusters = [c for k, c in enumerate(clusters) if k not in (i, j)] + [merged]
    return clusters[0][1]


def main() -> None:
    """Regenerate ``typology_table.json`` from lang2vec."""
    from merginguriel.io import write_json_atomic

    data = compute_typology()
    missing = [loc for loc, e in data["locales"].items() if not e["families"]]
    if missing:
        raise SystemExit(f"no lang2vec family data for {missing}")
    write_json_atomic(TABLE_PATH, data)
    print(f"wrote {TABLE_PATH} ({len(data['locales'])} locales)")


if __name__ == "__main__":  # pragma: no cover
    main()
