"""Writing synthetic syllables in real scripts, so that languages sharing a script can share subwords and others cannot.

A syllable is ``(onset, vowel, coda)``: onset a consonant index (or -1 for none), vowel an index into a e i o u, coda a
consonant index or -1. How a syllable is written depends only on the script, never on the language, so a word form two
languages share is the same string whenever they share a script. Alphabets write one letter per sound; abjads
(Arabic, Hebrew) drop short vowels; Brahmic scripts, Thai, Khmer and Myanmar write a consonant with a vowel sign;
Ethiopic and the kana are syllabaries; Hangul composes syllable blocks; Han writes one character per syllable
(traditional characters differ from simplified ones for a third of the syllables).
"""

from __future__ import annotations

import functools
import random
import unicodedata
from collections.abc import Callable

NUM_CONSONANTS = 18
VOWELS = "aeiou"
CODAS = (7, 6, 8, 12, 10, 1, 2)  # n m s l r t k: the consonants that may close a syllable

Syllable = tuple[int, int, int]

_LATIN_C = "ptkbdgmnszfvlrhjwc"
_CYRILLIC_C = "птквдгмнсзфжлрхйшч"
_GREEK_C = "πτκβδγμνσζφθλρχξψω"
_ARMENIAN_C = "պտկբդգմնսզֆվլրհյշչ"
_GEORGIAN_C = "პტკბდგმნსზფვლრჰყშჩ"
_HEBREW_C = "פטכבדגמנסזףקלרהצשת"
_ARABIC_C = "بتكدذجمنسزفقلرهطشح"
_BRAHMIC_BASE = {"Devanagari": 0x900, "Bengali": 0x980, "Tamil": 0xB80, "Telugu": 0xC00, "Kannada": 0xC80, "Malayalam": 0xD00}


def _letters(block: range, count: int, exclude: str = "") -> list[str]:
    out = [chr(cp) for cp in block if unicodedata.category(chr(cp)) == "Lo" and chr(cp) not in exclude]
    if len(out) < count:
        raise ValueError(f"block {block} has only {len(out)} letters")
    return out[:count]


def _alphabet(consonants: str, vowels: tuple[str, ...]) -> Callable[[Syllable], str]:
    def write(s: Syllable) -> str:
        onset, vowel, coda = s
        return (consonants[onset] if onset >= 0 else "") + vowels[vowel] + (consonants[coda] if coda >= 0 else "")

    return write


def _abjad(consonants: str, carrier: str, long_vowels: tuple[str, ...]) -> Callable[[Syllable], str]:
    def write(s: Syllable) -> str:
        onset, vowel, coda = s
        return (consonants[onset] if onset >= 0 else carrier) + long_vowels[vowel] + (consonants[coda] if coda >= 0 else "")

    return write


def _brahmic(script: str) -> Callable[[Syllable], str]:
    name = script.upper()
    base = _BRAHMIC_BASE[script]
    cons = _letters(range(base + 0x15, base + 0x3A), NUM_CONSONANTS)
    signs = ["", *(unicodedata.lookup(f"{name} VOWEL SIGN {v}") for v in "EIOU")]
    independent = [unicodedata.lookup(f"{name} LETTER {v}") for v in "AEIOU"]
    virama = unicodedata.lookup(f"{name} SIGN VIRAMA")

    def write(s: Syllable) -> str:
        onset, vowel, coda = s
        head = cons[onset] + signs[vowel] if onset >= 0 else independent[vowel]
        return head + (cons[coda] + virama if coda >= 0 else "")

    return write


def _sign_script(cons: list[str], carrier: str, after: dict[int, str], before: dict[int, str], coda_mark: str) -> Callable[[Syllable], str]:
    """Thai / Khmer / Myanmar: a consonant with a vowel sign written after it, or (e, o) before it."""

    def write(s: Syllable) -> str:
        onset, vowel, coda = s
        c = cons[onset] if onset >= 0 else carrier
        return before.get(vowel, "") + c + after.get(vowel, "") + (cons[coda] + coda_mark if coda >= 0 else "")

    return write


def _ethiopic() -> Callable[[Syllable], str]:
    rows = [cp for cp in range(0x1200, 0x1358, 8) if all(unicodedata.category(chr(cp + k)) == "Lo" for k in range(7))]
    rows = rows[:NUM_CONSONANTS]
    order = (3, 4, 2, 6, 1)  # Ethiopic vowel orders of a e i o u
    glottal = 0x12A0

    def write(s: Syllable) -> str:
        onset, vowel, coda = s
        row = rows[onset] if onset >= 0 else glottal
        return chr(row + order[vowel]) + (chr(rows[coda] + 5) if coda >= 0 else "")

    return write


def _hangul() -> Callable[[Syllable], str]:
    # consonant -> initial jamo index (19 initials) and final index (28 finals); some sounds merge, as in real borrowings.
    initial = (17, 16, 15, 7, 3, 0, 6, 2, 9, 12, 14, 8, 5, 5, 18, 11, 10, 13)
    final = {7: 4, 6: 16, 8: 19, 12: 8, 10: 8, 1: 7, 2: 1}
    medial = (0, 5, 20, 8, 13)

    def write(s: Syllable) -> str:
        onset, vowel, coda = s
        lead = initial[onset] if onset >= 0 else 11
        return chr(0xAC00 + (lead * 21 + medial[vowel]) * 28 + (final.get(coda, 0) if coda >= 0 else 0))

    return write


def _syllable_index(s: Syllable) -> int:
    onset, vowel, coda = s
    return ((onset + 1) * len(VOWELS) + vowel) * (len(CODAS) + 1) + (CODAS.index(coda) + 1 if coda >= 0 else 0)


@functools.lru_cache(maxsize=1)
def _han_table() -> tuple[list[str], list[str]]:
    n = (NUM_CONSONANTS + 1) * len(VOWELS) * (len(CODAS) + 1)
    rng = random.Random(1956)  # a fixed table: the script does not depend on the data seed
    simplified = [chr(0x4E00 + i) for i in rng.sample(range(6000), n)]
    traditional = [chr(0x6000 + i) if k % 3 == 0 else simplified[k] for k, i in enumerate(rng.sample(range(6000), n))]
    return simplified, traditional


def _han(traditional: bool) -> Callable[[Syllable], str]:
    table = _han_table()[1 if traditional else 0]
    return lambda s: table[_syllable_index(s)]


def _kana(katakana: bool) -> Callable[[Syllable], str]:
    rows = ("P", "T", "K", "B", "D", "G", "M", "N", "S", "Z", "H", "B", "R", "R", "H", "Y", "W", "T")
    kind = "KATAKANA" if katakana else "HIRAGANA"

    def char(row: str, vowel: str) -> str:
        try:
            return unicodedata.lookup(f"{kind} LETTER {row}{vowel}")
        except KeyError:
            return unicodedata.lookup(f"{kind} LETTER {vowel}")

    table = {(o, v): char(rows[o] if o >= 0 else "", VOWELS[v].upper()) for o in range(-1, NUM_CONSONANTS) for v in range(len(VOWELS))}
    nasal = unicodedata.lookup(f"{kind} LETTER N")
    stop = unicodedata.lookup(f"{kind} LETTER SMALL TU")

    def write(s: Syllable) -> str:
        onset, vowel, coda = s
        return table[onset, vowel] + ((nasal if coda in (7, 6) else stop) if coda >= 0 else "")

    return write


@functools.lru_cache(maxsize=None)
def syllable_writer(script: str) -> Callable[[Syllable], str]:
    """The function that writes one syllable in ``script`` (a name from ``typology.SCRIPTS``, or Hiragana/Katakana/Han)."""
    if script == "Latin":
        return _alphabet(_LATIN_C, tuple(VOWELS))
    if script == "Cyrillic":
        return _alphabet(_CYRILLIC_C, ("а", "е", "и", "о", "у"))
    if script == "Greek":
        return _alphabet(_GREEK_C, ("α", "ε", "ι", "ο", "υ"))
    if script == "Armenian":
        return _alphabet(_ARMENIAN_C, ("ա", "ե", "ի", "ո", "ու"))
    if script == "Georgian":
        return _alphabet(_GEORGIAN_C, ("ა", "ე", "ი", "ო", "უ"))
    if script == "Hebrew":
        return _abjad(_HEBREW_C, "א", ("", "", "י", "ו", "ו"))
    if script == "Arabic":
        return _abjad(_ARABIC_C, "ا", ("ا", "", "ي", "و", "و"))
    if script in _BRAHMIC_BASE:
        return _brahmic(script)
    if script == "Thai":
        cons = _letters(range(0x0E01, 0x0E2F), NUM_CONSONANTS)
        return _sign_script(cons, "อ", {0: "า", 2: "ิ", 4: "ุ"}, {1: "เ", 3: "โ"}, "")
    if script == "Khmer":
        cons = _letters(range(0x1780, 0x17A3), NUM_CONSONANTS)
        return _sign_script(cons, "អ", {0: "ា", 2: "ិ", 4: "ុ", 1: "េ", 3: "ោ"}, {}, "")
    if script == "Myanmar":
        cons = _letters(range(0x1000, 0x1021), NUM_CONSONANTS)
        return _sign_script(cons, "အ", {0: "ာ", 2: "ိ", 4: "ု", 1: "ေ", 3: "ော"}, {}, "်")
    if script == "Ethiopic":
        return _ethiopic()
    if script == "Hangul":
        return _hangul()
    if script in ("Han-Simplified", "Han"):
        return _han(traditional=False)
    if script == "Han-Traditional":
        return _han(traditional=True)
    if script in ("Hiragana", "Katakana"):
        return _kana(katakana=script == "Katakana")
    raise ValueError(f"unknown script {script!r}")


def write_word(script: str, form: tuple[Syllable, ...]) -> str:
    """Write a word form (a tuple of syllables) in ``script``."""
    write = syllable_writer(script)
    return "".join(write(s) for s in form)


def script_of_text(text: str) -> str:
    """The dominant Unicode script name of ``text`` (first word of the characters' Unicode names), e.g. LATIN, CYRILLIC, THAI."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isspace() or ch.isdigit() or ch in "[]:":
            continue
        name = unicodedata.name(ch, "UNKNOWN").split()[0]
        counts[name] = counts.get(name, 0) + 1
    return max(counts, key=counts.get) if counts else "NONE"
