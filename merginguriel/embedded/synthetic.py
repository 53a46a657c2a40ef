"""A seeded generator of MASSIVE-format data in synthetic languages shaped by real typology.

How it works:
1. A shared concept inventory: per-intent verbs and nouns, per-scenario nouns, generic verbs, adjectives, function words,
   adpositions and slot values (names, places, dates...; numbers stay digits in every language).
2. Word forms evolve down the world's hidden genetic tree (``truth.hidden_tree``): the root draws a random form per concept;
   every branch replaces a concept's form with probability ``1 - exp(-replace_rate * length)`` and applies a regular
   sound change (a consonant/vowel map) to the rest. Close languages therefore share many forms, distant ones few.
   Proper names are rarely replaced and never sound-changed (they are borrowed, as in real data).
3. Each row is one "meaning" (intent, verb, object phrase, optional slot phrase, politeness, question particle...),
   drawn once per id and rendered in every locale: words in the locale's real script (``scripts``), constituents in its
   word order (basic order, adjective / possessor / demonstrative / adposition placement, oblique placement,
   question-particle position, case suffixes fused to the noun), without spaces where the script has none.
4. Ambiguity: a meaning uses its intent's own verb only most of the time (else a generic verb or a sister intent's),
   and its object may be a scenario-wide noun, so the task is learnable but not trivial.

Rows are parallel across locales by ``id`` (same meaning, same partition), and a locale's rows do not depend on which
other locales are generated.

The surface forms are only one channel of relatedness: languages that share a script share the pieces of their
common forms (cognates, borrowed names, digits), as XLM-R shares subwords. How languages relate in meaning -- and so
how well a model fine-tuned on one transfers to another, across scripts too -- is planted in the backbone from a
hidden mixture of genetic, contact, word-order and resource causes (``relatedness``, ``plant``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merginguriel.embedded import scripts as S
from merginguriel.embedded.seeding import seeded_rng
from merginguriel.embedded.typology import load_typology
from merginguriel.errors import InputError
from merginguriel.locales import INTENTS, LOCALES, check_locales

GENERATOR_VERSION = "2"

# ---------------------------------------------------------------------------------------------------------------------
# The concept inventory (language independent). A concept id is "<class>:<name>".
FUNCTION_WORDS = ("please", "i", "want", "can", "you", "my", "this", "qpart", "hey", "just", "now", "also", "okay", "the")
FILLERS = ("hey", "just", "now", "also", "okay")
ADPOSITIONS = ("at", "in", "to", "from", "for", "about", "on", "with")
NUM_GENERIC_VERBS = 10
NUM_ADJECTIVES = 20
NOUNS_PER_SCENARIO = 6
VERBS_PER_INTENT = 3
NOUNS_PER_INTENT = 3
# slot type -> (number of values, adposition, proper names?)
SLOT_TYPES: dict[str, tuple[int, str, bool]] = {
    "time": (0, "at", False),
    "date": (12, "on", False),
    "place_name": (15, "in", True),
    "person": (15, "with", True),
    "artist_name": (12, "from", True),
    "business_name": (10, "from", True),
    "device_type": (8, "on", False),
    "media_type": (6, "on", False),
    "food_type": (10, "with", False),
    "event_name": (8, "about", False),
    "house_place": (8, "in", False),
    "list_name": (6, "to", False),
    "news_topic": (8, "about", False),
    "weather_descriptor": (6, "about", False),
    "currency_name": (8, "in", False),
}
SCENARIO_SLOTS: dict[str, tuple[str, ...]] = {
    "alarm": ("time", "date"), "audio": ("device_type",), "calendar": ("date", "time", "person", "event_name"),
    "cooking": ("food_type",), "datetime": ("time", "place_name", "date"), "email": ("person",), "general": (),
    "iot": ("house_place", "device_type", "time"), "lists": ("list_name",), "music": ("artist_name", "media_type"),
    "news": ("news_topic", "media_type"), "play": ("artist_name", "media_type", "person"),
    "qa": ("place_name", "currency_name", "person"), "recommendation": ("place_name", "food_type", "event_name"),
    "social": ("business_name", "person"), "takeaway": ("food_type", "business_name"),
    "transport": ("place_name", "time", "date"), "weather": ("weather_descriptor", "place_name", "date"),
}
TIME_WORDS = ("oclock", "am", "pm", "minutes")

# Rates of change along the tree (per unit of URIEL genetic distance), tuned so that sister languages (distance ~0.1)
# keep about two thirds of their word forms, languages of one branch (~0.4) about a third, and unrelated ones ~5%.
REPLACE_RATE = 2.5
SOUND_CHANGE_RATE = 0.8
NAME_RATE_FACTOR = 0.1  # proper names are borrowed far more than they are replaced
LEAF_BRANCH = 0.04  # every language's own branch, so that languages with identical URIEL codes still differ a little


def _scenario(intent: str) -> str:
    return intent.split("_", 1)[0]


def concept_inventory() -> dict[str, str]:
    """Every concept id -> its class (function, adposition, filler, generic, adjective, scenario, intent, time, slot, name)."""
    inv: dict[str, str] = {}
    for w in FUNCTION_WORDS:
        inv[f"fn:{w}"] = "function"
    for w in ADPOSITIONS:
        inv[f"adp:{w}"] = "function"
    for w in TIME_WORDS:
        inv[f"time:{w}"] = "function"
    for i in range(NUM_GENERIC_VERBS):
        inv[f"gen:{i}"] = "content"
    for i in range(NUM_ADJECTIVES):
        inv[f"adj:{i}"] = "content"
    for sc in sorted({_scenario(i) for i in INTENTS}):
        for k in range(NOUNS_PER_SCENARIO):
            inv[f"sc:{sc}:{k}"] = "content"
    for intent in INTENTS:
        for k in range(VERBS_PER_INTENT):
            inv[f"iv:{intent}:{k}"] = "content"
        for k in range(NOUNS_PER_INTENT):
            inv[f"in:{intent}:{k}"] = "content"
    for slot, (n, _, names) in SLOT_TYPES.items():
        for k in range(n):
            inv[f"slot:{slot}:{k}"] = "name" if names else "content"
    return inv


@dataclass(frozen=True)
class SyntheticSizes:
    """How much synthetic data to generate.

    Args:
        seed: the generator seed (languages and rows).
        train_per_intent: training utterances per intent and locale.
        dev_per_intent: validation ("dev" partition) utterances per intent and locale.
        test_per_intent: test utterances per intent and locale (600 rows by default: a paired test on one target
            then detects differences of about 4 points).
    """

    seed: int = 0
    train_per_intent: int = 20
    dev_per_intent: int = 10
    test_per_intent: int = 10

    def __post_init__(self) -> None:
        for name in ("train_per_intent", "dev_per_intent", "test_per_intent"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1 (got {getattr(self, name)}); every split needs every intent")


# ---------------------------------------------------------------------------------------------------------------------
# Word forms: evolution down the genetic tree.
Form = tuple[S.Syllable, ...]


def _random_syllable(rng: np.random.Generator, coda_p: float) -> S.Syllable:
    onset = int(rng.integers(S.NUM_CONSONANTS)) if rng.random() > 0.1 else -1
    coda = int(S.CODAS[rng.integers(len(S.CODAS))]) if rng.random() < coda_p else -1
    return onset, int(rng.integers(len(S.VOWELS))), coda


def _random_form(rng: np.random.Generator, cls: str) -> Form:
    n = 1 if cls == "function" else int(rng.choice((2, 2, 3)))
    return tuple(_random_syllable(rng, 0.3 if cls != "function" else 0.15) for _ in range(n))


def evolve_lexicons(seed: int) -> dict[str, dict[str, Form]]:
    """Word forms of every concept in every locale (all of LOCALES: a locale's forms never depend on a subset), evolved
    down the world's hidden genetic tree (``truth.hidden_tree``)."""
    from merginguriel.embedded.truth import hidden_tree, leaves

    inventory = concept_inventory()
    concepts = sorted(inventory)
    root_rng = seeded_rng(seed, "root")
    root = {c: _random_form(root_rng, inventory[c]) for c in concepts}
    out: dict[str, dict[str, Form]] = {}

    def descend(node: dict[str, Any], forms: dict[str, Form]) -> None:
        shared = node["branch"]
        length = shared + (LEAF_BRANCH if "locale" in node else 0.0)
        rng = seeded_rng(seed, "branch", sorted(leaves(node)))
        # The leaf's own short branch only replaces words (dialect-level differences); sound change needs real time.
        p_sound = 1.0 - math.exp(-SOUND_CHANGE_RATE * shared)
        cmap = [int(rng.integers(S.NUM_CONSONANTS)) if rng.random() < p_sound else c for c in range(S.NUM_CONSONANTS)]
        vmap = [int(rng.integers(len(S.VOWELS))) if rng.random() < 0.6 * p_sound else v for v in range(len(S.VOWELS))]
        draws = rng.random(len(concepts))
        new: dict[str, Form] = {}
        for c, u in zip(concepts, draws):
            cls = inventory[c]
            rate = REPLACE_RATE * (NAME_RATE_FACTOR if cls == "name" else 1.0)
            if u < 1.0 - math.exp(-rate * length):
                new[c] = _random_form(rng, cls)
            elif cls == "name":
                new[c] = forms[c]
            else:
                new[c] = tuple(
                    (cmap[o] if o >= 0 else -1, vmap[v], cmap[k] if k >= 0 and cmap[k] in S.CODAS else k) for o, v, k in forms[c]
                )
        if "locale" in node:
            out[node["locale"]] = new
        else:
            for child in node["children"]:
                descend(child, new)

    descend(hidden_tree(seed), root)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Meanings: one per row id, shared by every locale.
@dataclass(frozen=True)
class Meaning:
    intent: str
    verb: str
    noun: str | None
    adjective: str | None
    possessor: bool
    demonstrative: bool
    slot: str | None  # slot type
    slot_value: tuple[str, ...]  # concept ids, or digits (kept as written)
    adposition: str | None
    subject: bool
    polite: bool
    filler: str | None
    question: bool


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_meaning(rng: np.random.Generator, intent: str) -> Meaning:
    scenario = _scenario(intent)
    sisters = [i for i in INTENTS if _scenario(i) == scenario and i != intent]
    u = rng.random()
    if u < 0.72 or not sisters:
        verb = f"iv:{intent}:{rng.integers(VERBS_PER_INTENT)}"
    elif u < 0.86:
        verb = f"gen:{rng.integers(NUM_GENERIC_VERBS)}"
    else:
        verb = f"iv:{_pick(rng, sisters)}:{rng.integers(VERBS_PER_INTENT)}"
    u = rng.random()
    if u < 0.12:
        noun = None
    elif u < 0.62:
        noun = f"in:{intent}:{rng.integers(NOUNS_PER_INTENT)}"
    elif u < 0.92 or not sisters:
        noun = f"sc:{scenario}:{rng.integers(NOUNS_PER_SCENARIO)}"
    else:
        noun = f"in:{_pick(rng, sisters)}:{rng.integers(NOUNS_PER_INTENT)}"
    slots = SCENARIO_SLOTS[scenario]
    slot, value, adposition = None, (), None
    if slots and rng.random() < 0.6:
        slot = _pick(rng, slots)
        if slot == "time":
            value = (str(int(rng.integers(1, 13))), f"time:{_pick(rng, TIME_WORDS)}")
        else:
            value = (f"slot:{slot}:{rng.integers(SLOT_TYPES[slot][0])}",)
        adposition = f"adp:{SLOT_TYPES[slot][1]}"
    return Meaning(
        intent=intent,
        verb=verb,
        noun=noun,
        adjective=f"adj:{rng.integers(NUM_ADJECTIVES)}" if noun and rng.random() < 0.3 else None,
        possessor=bool(noun) and rng.random() < 0.3,
        demonstrative=bool(noun) and rng.random() < 0.12,
        slot=slot,
        slot_value=value,
        adposition=adposition,
        subject=rng.random() < 0.3,
        polite=rng.random() < 0.25,
        filler=f"fn:{_pick(rng, FILLERS)}" if rng.random() < 0.2 else None,
        question=rng.random() < (0.5 if intent.endswith("query") or scenario == "qa" else 0.08),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Rendering a meaning in one locale.
class Language:
    """One synthetic language: its word forms, script and word-order parameters."""

    def __init__(self, locale: str, forms: dict[str, Form], typology: dict[str, Any]):
        self.locale = locale
        self.typ = typology
        self.script = typology["script"]
        self.sep = " " if typology["spaces"] else ""
        self._forms = forms
        self._written: dict[str, str] = {}

    def word(self, concept: str) -> str:
        """The written form of a concept (digits stay digits)."""
        if concept.isdigit():
            return concept
        w = self._written.get(concept)
        if w is None:
            script = self.script
            if script == "Japanese":  # kanji for content words, katakana for borrowed names, hiragana for the rest
                cls = concept.split(":", 1)[0]
                name = cls == "slot" and SLOT_TYPES[concept.split(":")[1]][2]
                script = "Katakana" if name else "Han-Traditional" if cls in ("gen", "adj", "sc", "iv", "in", "slot") else "Hiragana"
            w = self._written[concept] = S.write_word(script, self._forms[concept])
        return w

    def render(self, m: Meaning) -> tuple[str, str, list[dict[str, str]]]:
        """(utt, annot_utt, slots) of a meaning in this language."""
        t = self.typ
        W = self.word
        noun_phrase: list[str] = []
        if m.noun:
            pre, post = [], []
            for present, before, concept in (
                (m.demonstrative, t["dem_before_noun"], "fn:this"),
                (m.possessor, t["possessor_before_noun"], "fn:my"),
                (m.adjective is not None, t["adj_before_noun"], m.adjective),
            ):
                if present:
                    (pre if before else post).append(W(concept))
            noun_phrase = pre + [W(m.noun)] + post[::-1]
        slot_span = self.sep.join(W(c) for c in m.slot_value)
        oblique: list[str] = []
        annotated_oblique: list[str] = []
        if m.slot:
            adp = W(m.adposition)
            tagged = f"[{m.slot} : {slot_span}]"
            if t["adp_before_noun"]:
                oblique, annotated_oblique = [adp, slot_span], [adp, tagged]
            elif t["case_suffix"]:
                oblique, annotated_oblique = [slot_span + adp], [tagged + adp]
            else:
                oblique, annotated_oblique = [slot_span, adp], [tagged, adp]
        verb = [W(m.verb)]
        if m.subject:
            modal = W("fn:want")
            verb = verb + [modal] if t["order"].index("O") < t["order"].index("V") else [modal] + verb
        constituents = {"S": [W("fn:i")] if m.subject else [], "V": verb, "O": noun_phrase}

        def clause(obl: list[str]) -> list[str]:
            order = t["order"]
            out: list[str] = []
            for i, c in enumerate(order):
                if c == "V" and t["oblique_before_verb"]:
                    out += obl
                out += constituents[c]
                if not t["oblique_before_verb"] and c in "VO" and order[i + 1 :].replace("S", "") == "":
                    out += obl
            return out

        def sentence(obl: list[str]) -> list[str]:
            words = ([W(m.filler)] if m.filler else []) + ([W("fn:please")] if m.polite else []) + clause(obl)
            if m.question:
                words = words + [W("fn:qpart")] if t["polarq_final"] else [W("fn:qpart")] + words
            return words

        utt = self.sep.join(sentence(oblique))
        annot = self.sep.join(sentence(annotated_oblique))
        slots = [{"slot": m.slot, "method": "translation"}] if m.slot else []
        return utt, annot, slots


class SyntheticMassive:
    """The synthetic MASSIVE world of one seed: the languages and the shared meanings of every row."""

    def __init__(self, sizes: SyntheticSizes = SyntheticSizes()):
        self.sizes = sizes
        typology = load_typology()
        lexicons = evolve_lexicons(sizes.seed)
        self.languages = {loc: Language(loc, lexicons[loc], typology[loc]) for loc in LOCALES}
        self.rows = self._meanings()

    def _meanings(self) -> list[tuple[str, str, Meaning, str]]:
        """(id, partition, meaning, worker_id) for every row, in id order."""
        s = self.sizes
        rng = seeded_rng(s.seed, "meanings")
        parts = ["train"] * s.train_per_intent + ["dev"] * s.dev_per_intent + ["test"] * s.test_per_intent
        drafts = [(p, sample_meaning(rng, intent)) for intent in INTENTS for p in parts]
        order = seeded_rng(s.seed, "ids").permutation(len(drafts))
        workers = seeded_rng(s.seed, "workers").integers(0, 100, len(drafts))
        return [(str(i), drafts[j][0], drafts[j][1], str(workers[i])) for i, j in enumerate(order)]

    def locale_rows(self, locale: str) -> list[dict[str, Any]]:
        """The rows of one locale in the release's field order."""
        lang = self.languages[locale]
        out = []
        for id_, partition, meaning, worker in self.rows:
            utt, annot, slots = lang.render(meaning)
            out.append(
                {
                    "id": id_,
                    "locale": locale,
                    "partition": partition,
                    "scenario": _scenario(meaning.intent),
                    "intent": meaning.intent,
                    "utt": utt,
                    "annot_utt": annot,
                    "worker_id": worker,
                    "slot_method": slots,
                    "judgments": [
                        {
                            "worker_id": worker,
                            "intent_score": 1,
                            "slots_score": 1,
                            "grammar_score": 4,
                            "spelling_score": 2,
                            "language_identification": "target",
                        }
                    ],
                }
            )
        return out


def generate(locales: Iterable[str] | None = None, sizes: SyntheticSizes = SyntheticSizes()) -> dict[str, list[dict[str, Any]]]:
    """MASSIVE-format rows (release fields, partitions train/dev/test, string intents) for each locale (default: all)."""
    locales = check_locales(LOCALES if locales is None else locales)
    world = SyntheticMassive(sizes)
    return {loc: world.locale_rows(loc) for loc in locales}


def write_release(folder: str | os.PathLike, locales: Iterable[str] | None = None, sizes: SyntheticSizes = SyntheticSizes()) -> Path:
    """Write ``<folder>/1.1/data/<locale>.jsonl`` (the official release layout) and return ``folder``."""
    folder = Path(folder)
    data_dir = folder / "1.1" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for loc, rows in generate(locales, sizes).items():
        with open(data_dir / f"{loc}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


def sizes_dict(sizes: SyntheticSizes) -> dict[str, Any]:
    return {**asdict(sizes), "generator_version": GENERATOR_VERSION}
