"""The embedded tokenizer: a unigram vocabulary in which every word form of every synthetic language is one piece.

XLM-R's 250k SentencePiece vocabulary keeps the frequent words of most of its languages whole; here the lexicon is
small enough (about 700 concepts x 52 languages) to keep every word whole, so each piece has a known meaning in the
languages that write it, which is what the planted backbone needs (``plant``). Pieces are laid out as XLM-R's:
<s>=0, <pad>=1, </s>=2, <unk>=3, the pieces, then <mask>. A form that two languages share (a cognate or a borrowed
name in one script, a digit anywhere) is one piece, as shared subwords are in XLM-R.

- ``▁form`` for every form (a word after a space, or first in a text);
- ``form`` for the forms of languages written without spaces (Thai, Khmer, Burmese, Japanese, Chinese), and for the
  case suffixes that agglutinating languages fuse to a noun;
- every character of a kept word, with and without ``▁``, scored far below any word, so unseen strings still
  tokenize (as characters). A word the vocabulary drops (``in_vocabulary``) is written in those characters; where it
  uses a character no kept word writes (rare CJK and Hangul characters: about 1% of the Japanese, Chinese and Korean
  tokens), that character becomes <unk>, as rare characters outside XLM-R's SentencePiece coverage do.
Languages written without spaces are segmented by the unigram model's best path, which can split a run of words
differently from how it was written, as real segmenters do.
"""

from __future__ import annotations

from merginguriel.embedded.meaning import digit_concept
from merginguriel.embedded.seeding import seeded_rng
from merginguriel.embedded.synthetic import SyntheticMassive, concept_inventory

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
WORD_SCORE = -5.0
CHAR_SCORE = -30.0  # a word split into characters always scores below the word itself
DIGITS = tuple(str(i) for i in range(13))
# Share of content words XLM-R's vocabulary splits into characters for the least-resourced language (none for the
# best-resourced): subword vocabularies cover low-resource languages poorly (high fertility), which costs them accuracy
# in their own language and in transfer (Rust et al. 2021, "How good is your tokenizer?").
COVERAGE_GAP = 0.35
Use = tuple[str, str]  # (locale, concept)


def lexicon_concepts() -> list[str]:
    """Every concept a word can express: the generator's inventory plus the digits (written as digits everywhere)."""
    return sorted(concept_inventory()) + [digit_concept(d) for d in DIGITS]


def in_vocabulary(locale: str, concept: str, cls: str, seed: int) -> bool:
    """Whether XLM-R's vocabulary keeps this locale's word for ``concept`` whole: function words always; a content word
    or name with probability 1 - COVERAGE_GAP x (1 - the locale's resource level), seeded per locale and concept."""
    if cls == "function":
        return True
    from merginguriel.embedded.truth import hidden_resource

    missing = COVERAGE_GAP * (1.0 - hidden_resource(locale, seed))
    return float(seeded_rng(seed, "coverage", locale, concept).random()) >= missing


def word_uses(world: SyntheticMassive) -> dict[str, list[Use]]:
    """Piece -> every (locale, concept) written with it, in a fixed order. A word the vocabulary does not keep for its
    locale (``in_vocabulary``) has no piece of its own there: the locale's text still uses the piece when another
    language's word of the same form is kept, and is split into characters otherwise."""
    uses: dict[str, list[Use]] = {}
    seed = world.sizes.seed
    inventory = concept_inventory()
    for locale, lang in world.languages.items():
        for concept, cls in inventory.items():
            if not in_vocabulary(locale, concept, cls, seed):
                continue
            form = lang.word(concept)
            uses.setdefault("▁" + form, []).append((locale, concept))
            if not lang.sep or (lang.typ["case_suffix"] and concept.startswith("adp:")):
                uses.setdefault(form, []).append((locale, concept))
        for d in DIGITS:
            for piece in ("▁" + d, d):
                uses.setdefault(piece, []).append((locale, digit_concept(d)))
    return dict(sorted(uses.items()))


def build_tokenizer(uses: dict[str, list[Use]], max_length: int):
    """The XLM-R tokenizer (fast, tokenizers-backed) over the word pieces of ``uses`` plus character fallbacks.

    The vocabulary is passed as a list: transformers 5 silently ignores ``vocab_file=``.
    """
    from transformers import XLMRobertaTokenizer

    vocab = [(tok, 0.0) for tok in SPECIAL_TOKENS] + [(piece, WORD_SCORE) for piece in uses]
    seen = {piece for piece, _ in vocab}
    chars = sorted({ch for piece in uses for ch in piece if ch != "▁"})
    for piece in ["▁", *(p for ch in chars for p in ("▁" + ch, ch))]:
        if piece not in seen:
            vocab.append((piece, CHAR_SCORE))
            seen.add(piece)
    vocab.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(vocab=vocab, model_max_length=max_length)
