"""What a query parser reads of a catalog, as JSON-ready values: the words of its titles (never spell-corrected),
each intent attribute's value counts and the usage shares per article type. `QueryParser.from_items` reads them of
an item table; a vector store keeps them with its collection (`modeling.retrieval.engine.stored`) and the parser is
made from them (`QueryParser.from_catalog_words`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from modeling.retrieval.understanding.context import WORD
from modeling.retrieval.understanding.implied import usage_shares


def catalog_words(titles: Iterable[str]) -> set[str]:
    """The words of a catalog's titles, lower-cased as typed: the words spelling correction never touches. Numbers
    are left out: spelling never corrects one (`Speller.may_correct`), and a catalog of numbered titles would
    otherwise hold a word per item (1,000,001 words at 1M items of "item N")."""
    words = set()
    for title in titles:
        words.update(w for w in WORD.findall(str(title).lower()) if not w.isdigit())
    return words


def catalog_vocabulary(items, attributes: Sequence[str]) -> dict:
    """`values` (each of `attributes`' value counts, most frequent first), `known_words` (`catalog_words` of the
    titles, sorted) and, with article type and usage columns, `type_usage` (article type -> {usage: share})."""
    vocabulary = {"values": {a: {str(v): int(n) for v, n in items[a].astype(str).value_counts().items()}
                             for a in attributes if a in items},
                  "known_words": sorted(catalog_words(items["title"].astype(str) if "title" in items else []))}
    if {"articleType", "usage"} <= set(items.columns):
        vocabulary["type_usage"] = usage_shares(items)
    return vocabulary


__all__ = ["catalog_vocabulary", "catalog_words"]
