"""Spelling that respects English: a word is corrected only when it is in neither a real English vocabulary nor the
catalog's own words.

"most comfortable flip flops" must not become "mist ..." (Perfume and Body Mist), nor "watch for a nurse" "... a
purse". `EnglishVocabulary` says how common a word is in English (wordfreq's Zipf frequency: 3 = once per million
words, the 20,000th most frequent word is about 3.25; or the frequency list bundled with symspellpy, measured against
it by `python -m modeling.evaluation.spelling`). `Speller.correct` leaves alone any word that is English (Zipf at or
above `ENGLISH_MIN_ZIPF`), any word of the catalog's titles and any stopword, and otherwise proposes the closest
product word (optimal string alignment distance 1, 2 for words of 6+ letters: "snikers" -> "sneakers"), ranked by
distance, then the typed word's first and last letters kept, then (two edits away) the most of its letters kept in
order, then the candidate's English frequency. The parser gives what a correction finds
a reduced confidence (never a full-confidence intent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import lru_cache
from importlib import resources

# A word at least this frequent in English (Zipf scale) is a real word, never "corrected". Chosen on the dev files'
# misspellings and real-word lookalikes (see docs/results.md): 3.0 protects every word of wordfreq's top 20,000
# (the 20,000th is at 3.25) while typical typos ("sandles" 1.43, "earings" 1.6, "sneekers" 0) stay below it.
ENGLISH_MIN_ZIPF = 3.0
MIN_LENGTH = 4  # shorter words are left alone: too many real words lie one edit apart
TWO_EDITS_FROM = 6  # words this long may be two edits away from the product word meant ("snikers" -> "sneakers")
VOCABULARIES = ("wordfreq", "symspell")


@lru_cache(maxsize=None)
def _symspell_counts() -> dict[str, float]:
    """symspellpy's bundled English frequency list as Zipf values (log10 of occurrences per billion words)."""
    try:
        package = resources.files("symspellpy")
    except ModuleNotFoundError:
        raise ModuleNotFoundError("The symspell vocabulary needs symspellpy: pip install symspellpy (the package's "
                                  "english-alternatives extra).") from None
    text = package.joinpath("frequency_dictionary_en_82_765.txt").read_text(encoding="utf-8")
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            counts[parts[0]] = float(parts[1])
    total = sum(counts.values())
    return {word: math.log10(count / total * 1e9) for word, count in counts.items()}


class EnglishVocabulary:
    """How frequent a word is in English, on the Zipf scale (0 for an unknown word), from `source`: "wordfreq"
    (default) or "symspell"."""

    def __init__(self, source: str = "wordfreq"):
        if source not in VOCABULARIES:
            raise ValueError(f"unknown English vocabulary {source!r}: choose one of {', '.join(VOCABULARIES)}")
        self.source = source
        if source == "wordfreq":
            from wordfreq import zipf_frequency

            self._zipf: Callable[[str], float] = lru_cache(maxsize=65536)(lambda w: zipf_frequency(w, "en"))
        else:
            table = _symspell_counts()
            self._zipf = lambda w: table.get(w, 0.0)

    def zipf(self, word: str) -> float:
        return float(self._zipf(word))


class Speller:
    """Corrects misspelt product words towards `targets` (the parser's single-word phrases), never touching English
    words, the catalog's words (`known_words`) or `stopwords`.

    Args:
        targets: the words a correction may produce.
        known_words: words never corrected (the catalog's title words and the lexicon's own words).
        stopwords: words never corrected.
        vocabulary: an `EnglishVocabulary` (wordfreq by default).
        min_zipf: a word at least this frequent in English is left alone.
    """

    def __init__(self, targets: Iterable[str], known_words: Iterable[str] = (), stopwords: Iterable[str] = (),
                 vocabulary: EnglishVocabulary | None = None, min_zipf: float = ENGLISH_MIN_ZIPF):
        self.targets = sorted(t for t in set(targets) if len(t) >= MIN_LENGTH)
        self.protected = frozenset(known_words) | frozenset(stopwords)
        self.vocabulary = vocabulary or EnglishVocabulary()
        self.min_zipf = min_zipf

    def is_english(self, *forms: str) -> bool:
        """Whether any of a word's forms (as typed, plural folded) is a real English word."""
        return any(self.vocabulary.zipf(form) >= self.min_zipf for form in forms if form)

    def may_correct(self, word: str, *forms: str) -> bool:
        """Whether `word` may be corrected: long enough, not a number, and neither it nor its other forms, nor their
        plurals (the singular a plural folds to, "scarve" of "scarves"), is protected or English."""
        if len(word) < MIN_LENGTH or word.isdigit():
            return False
        forms = tuple(f for f in (word, *forms) if f)
        forms += tuple(f + "s" for f in forms)
        return not any(f in self.protected for f in forms) and not self.is_english(*forms)

    def correct(self, word: str, *forms: str) -> str | None:
        """The product word `word` (plural-folded; `forms`: other spellings of it, such as the word as typed) was
        meant to be, or None when it is a real word or nothing is close enough."""
        if not self.may_correct(word, *forms):
            return None
        from rapidfuzz.distance import OSA, Indel
        from rapidfuzz.process import extract

        limit = 2 if len(word) >= TWO_EDITS_FROM else 1
        found = extract(word, self.targets, scorer=OSA.distance, score_cutoff=limit, limit=None)
        if not found:
            return None
        # Ties: the typed word's first and last letters kept, then, two edits away, most of its letters kept in
        # order ("sniker" is "sneaker", not "shaker"; one edit away a swap "tshrit" is "tshirt" as much as a
        # letter dropped), then the more frequent English word.
        return min(found, key=lambda c: (c[1], c[0][0] != word[0], c[0][-1] != word[-1],
                                         Indel.distance(word, c[0]) if c[1] > 1 else 0, -self.vocabulary.zipf(c[0]),
                                         c[0]))[0]


__all__ = ["ENGLISH_MIN_ZIPF", "EnglishVocabulary", "Speller", "VOCABULARIES"]
