"""What goes in and comes out of the search engine: query validation, composed query text, `SearchResult`.

Re-exported by `modeling.retrieval.engine.search`, where callers import them from.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

MAX_QUERY_CHARS = 500
# Attributes of the reference item named in a composed query's text (what a modification keeps).
COMPOSED_CONTEXT = ("articleType", "gender")


class QueryError(ValueError):
    """A query the engine cannot run (empty or overlong text, unusable image); the message is for the user."""


@dataclass
class SearchResult:
    """One retrieved item; the same type for every mode, model and caller."""

    id: str
    title: str
    image_path: str
    rank: int
    score: float  # what the ranking used
    visual_score: float  # cosine of the query and item embeddings
    text_score: float | None = None  # cosine of query and item text (fused text search only)
    lexical_score: float | None = None  # BM25 keyword match of query and item text, in [0, 1] (fused text search)
    rerank_score: float | None = None  # cosine under the re-ranking model (hybrid search only)
    # visual-semantic consistency (modeling/retrieval/engine/vsc.py); None when the query has no description
    vsc: float | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)  # ids of near-duplicates collapsed into this result

    def to_dict(self) -> dict:
        return asdict(self)


def composed_query_text(modification: str, reference: Mapping | None = None) -> str:
    """The text side of a composed query: the modification, then what stays of the reference
    (e.g. "make it blue, tshirts for men")."""
    reference = reference or {}
    article, gender = (str(reference.get(a) or "").strip() for a in COMPOSED_CONTEXT)
    context = article + (f" for {gender}" if gender else "") if article else gender
    text = f"{modification}, {context}" if context else modification
    return " ".join(text.lower().split())


def validate_text(query: str) -> str:
    """The query with its invisible format characters (zero-width spaces and joiners, soft hyphens, byte-order
    marks: Unicode category Cf) dropped and its whitespace collapsed; `QueryError` when nothing visible is left or
    it is longer than MAX_QUERY_CHARS."""
    if isinstance(query, str) and len(query) <= 4 * MAX_QUERY_CHARS:
        query = "".join(c for c in query if unicodedata.category(c) != "Cf") if not query.isascii() else query
    if not isinstance(query, str) or not query.strip():
        raise QueryError("Type what you are looking for, e.g. 'red summer dress'.")
    query = " ".join(query.split())
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"The query is {len(query)} characters long; keep it under {MAX_QUERY_CHARS}.")
    return query
