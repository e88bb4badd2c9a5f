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
from collections.abc import Iterable, Mapping, Sequence

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


def bm25_idf(num_documents: int, document_frequency: int) -> float:
    """`ln(1 + (N - df + 0.5) / (df + 0.5))`: always positive."""
    return math.log(1.0 + (num_documents - document_frequency + 0.5) / (document_frequency + 0.5))


def bm25_weight(idf, tf, length, average_length: float, k1: float, b: float):
    """A word's BM25 contribution to a document (float64; scalars or arrays alike, so every caller computes the
    same bits): `idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))`."""
    return idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * length / average_length))


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
            weight = bm25_weight(bm25_idf(self.num_documents, len(docs)), tf, lengths[docs_arr], average, self.k1,
                                 self.b)
            self._postings[word] = (docs_arr, weight.astype(np.float32))

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


class KeywordEncoder:
    """BM25 term weights as sparse vectors, `BM25Index`'s formula split between documents and queries.

    A document's vector holds, per distinct word w, `idf(w) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl))`
    at the word's index in `terms`; a query's holds 1 per distinct known word (a word counts once however often it
    is typed, and words the catalog lacks contribute nothing). Their dot product is the item's BM25 score.

    Build it with `KeywordStatistics` (one pass over the descriptions: document frequencies and average length).
    """

    def __init__(self, terms: Sequence[str], document_frequency: Sequence[int], num_documents: int,
                 average_length: float, k1: float = 1.2, b: float = 0.75):
        self.terms = list(terms)
        self.index = {term: i for i, term in enumerate(self.terms)}
        self.document_frequency = [int(df) for df in document_frequency]
        self.num_documents, self.average_length = int(num_documents), float(average_length)
        self.k1, self.b = float(k1), float(b)
        # The same float64 expressions as BM25Index (`bm25_idf`, `bm25_weight`): bit-identical float32 weights.
        self.idf = [bm25_idf(self.num_documents, df) for df in self.document_frequency]

    def document_vector(self, description: str) -> tuple[list[int], list[float]]:
        counts = Counter(tokenize(description))
        length = float(sum(counts.values()))
        indices, values = [], []
        for word, tf in counts.items():
            i = self.index.get(word)
            if i is not None:
                indices.append(i)
                weight = bm25_weight(self.idf[i], float(tf), length, self.average_length, self.k1, self.b)
                values.append(float(np.float32(weight)))
        return indices, values

    def query_vector(self, text: str) -> tuple[list[int], list[float]]:
        indices = [self.index[w] for w in dict.fromkeys(tokenize(text)) if w in self.index]
        return indices, [1.0] * len(indices)

    def signature(self) -> dict:
        """What decides every document weight (the catalog's statistics), without the vocabulary itself."""
        return {"num_documents": self.num_documents, "average_length": self.average_length, "k1": self.k1,
                "b": self.b, "num_terms": len(self.terms)}

    def to_dict(self) -> dict:
        return {**self.signature(), "terms": self.terms, "document_frequency": self.document_frequency}

    @classmethod
    def from_dict(cls, data: Mapping) -> "KeywordEncoder":
        return cls(data["terms"], data["document_frequency"], data["num_documents"], data["average_length"],
                   data["k1"], data["b"])


class KeywordStatistics:
    """Accumulates BM25's catalog statistics over a stream of descriptions (memory: the vocabulary, not the items)."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = k1, b
        self.document_frequency: Counter = Counter()
        self.num_documents = 0
        self.total_length = 0

    def add(self, descriptions: Iterable[str]) -> None:
        for description in descriptions:
            counts = Counter(tokenize(description))
            self.document_frequency.update(counts.keys())
            self.num_documents += 1
            self.total_length += sum(counts.values())

    def encoder(self) -> KeywordEncoder:
        average = self.total_length / self.num_documents if self.num_documents else 0.0
        terms = sorted(self.document_frequency)
        return KeywordEncoder(terms, [self.document_frequency[t] for t in terms], self.num_documents,
                              average if average > 0 else 1.0, self.k1, self.b)


__all__ = ["BM25Index", "KeywordEncoder", "KeywordStatistics", "bm25_idf", "bm25_weight", "fold", "tokenize"]
