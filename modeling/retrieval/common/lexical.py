"""Keyword matching (Okapi BM25) of shopper queries against item descriptions: the third signal of text search.

Dense encoders blur the words a shopper types to narrow a search: "casual flats" also brings casual shoes, a brand
name means little to MiniLM. BM25 (Robertson & Zaragoza, 2009) scores exact word overlap with the item's
description (title, attribute caption, season), weighting rare words more. The search engine adds it, normalised
to [0, 1] per query, to the dense item-text cosine (see `FashionSearchEngine`); a query none of whose words occur
in the catalog scores 0 everywhere and changes nothing.

Words are lower-cased, possessives and plurals folded ("Men's" -> "men", "Dresses" -> "dress", "Watches" ->
"watch", "T-shirts" / "tshirts" / "t shirt" -> "tshirt"), so query and catalog spellings meet.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
_POSSESSIVE = re.compile(r"['\u2019]s\b")
# Spellings of one word that the tokeniser would otherwise split or keep apart.
_COMPOUNDS = (
    (re.compile(r"\bt[\s-]?shirt"), "tshirt"),
    (re.compile(r"\btee[\s-]?shirt"), "tshirt"),
    (re.compile(r"\bflip[\s-]?flop"), "flipflop"),
    (re.compile(r"\bsweat[\s-]?shirt"), "sweatshirt"),
    (re.compile(r"\bnight[\s-]?suit"), "nightsuit"),
)


def fold(word: str) -> str:
    """Light plural folding: "dresses" -> "dress", "accessories" -> "accessory", "shoes" -> "shoe"; words of
    three letters or fewer, and "-ss" / "-us" / "-is" endings, are kept."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2].endswith(("ss", "sh", "ch", "x", "z")):
        return word[:-2]
    return word[:-1]


def tokenize(text: str) -> list[str]:
    """Lower-cased, folded words of `text` (see the module docstring)."""
    text = _POSSESSIVE.sub("", str(text).lower())
    for pattern, replacement in _COMPOUNDS:
        text = pattern.sub(replacement, text)
    return [fold(word) for word in _WORD.findall(text)]


class BM25Index:
    """Okapi BM25 over a fixed list of documents.

    `score(q, d) = sum over distinct words w of q: idf(w) * tf(w, d) * (k1 + 1) / (tf(w, d) + k1 * (1 - b + b *
    len(d) / avgdl))` with `idf(w) = ln(1 + (N - df(w) + 0.5) / (df(w) + 0.5))` (always positive). A query word
    counts once however often it is typed.

    Args:
        documents: one text per item, in index order.
        k1: term-frequency saturation. b: document-length normalisation (0 = none, 1 = full).
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.2, b: float = 0.75):
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = float(k1), float(b)
        self.num_documents = len(documents)
        counts = [Counter(tokenize(d)) for d in documents]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        average = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
        norm = self.k1 * (1.0 - self.b + self.b * lengths / average)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for doc, words in enumerate(counts):
            for word, tf in words.items():
                docs, tfs = postings.setdefault(word, ([], []))
                docs.append(doc)
                tfs.append(tf)
        # Per word: the documents holding it and its precomputed BM25 contribution to each.
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for word, (docs, tfs) in postings.items():
            docs_arr, tf = np.asarray(docs, dtype=np.int64), np.asarray(tfs, dtype=np.float64)
            idf = math.log(1.0 + (self.num_documents - len(docs) + 0.5) / (len(docs) + 0.5))
            self._postings[word] = (docs_arr, (idf * tf * (self.k1 + 1.0) / (tf + norm[docs_arr])).astype(np.float32))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for `query`, float32 `(num_documents,)`."""
        out = np.zeros(self.num_documents, dtype=np.float32)
        for word in dict.fromkeys(tokenize(query)):
            if word in self._postings:
                docs, contribution = self._postings[word]
                out[docs] += contribution
        return out

    def normalised_scores(self, query: str) -> np.ndarray:
        """`scores(query)` divided by their maximum: 1 for the best-matching items, all 0 when no word matches."""
        scores = self.scores(query)
        top = float(scores.max()) if scores.size else 0.0
        return scores / top if top > 0 else scores


__all__ = ["BM25Index", "fold", "tokenize"]
