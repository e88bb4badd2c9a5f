"""From a backend's ranked rows to the engine's `SearchResult`s, and the VSC of each result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from modeling.retrieval.common.ranking import Ranked
from modeling.retrieval.common.types import SearchResult


class ResultTable:
    """A backend's ranked rows as `SearchResult`s: the item fields a result shows come from `rows(positions)`
    (`CatalogPositions.rows`: the item table's records, or a vector store's payloads)."""

    def __init__(self, attributes, ids, rows: Callable[[Sequence[int]], list[dict]]):
        self.attributes, self.ids, self.rows = list(attributes), ids, rows

    def results(self, ranked: list[Ranked]) -> list[SearchResult]:
        results = []
        for rank, (row_ranked, row) in enumerate(zip(ranked, self.rows([r.position for r in ranked])), start=1):
            results.append(SearchResult(
                id=str(row["id"]), title=str(row.get("title", "")), image_path=str(row.get("image_path", "")),
                rank=rank, score=row_ranked.score, visual_score=row_ranked.visual, text_score=row_ranked.text,
                lexical_score=row_ranked.lexical, attributes={a: str(row[a]) for a in self.attributes if str(row[a])},
                duplicates=[self.ids[m] for m in row_ranked.duplicates],
            ))
        return results


def with_visual_cosine(results: list[SearchResult], vectors: np.ndarray, query: np.ndarray) -> list[SearchResult]:
    """`visual_score` = cosine to the query photo itself (what the UI shows; `vectors`: the results' stored
    vectors); `score` keeps the expanded query's cosine that ranked them."""
    if not results:
        return results
    return [replace(r, visual_score=float(c)) for r, c in zip(results, vectors @ query)]


def with_vsc(results: list[SearchResult], vsc, encoder, description: str | None, positions,
             embedding: np.ndarray | None = None) -> list[SearchResult]:
    """Fill each result's VSC against the query's `description` (left None when there is none); `positions`: the
    results' index positions; `encoder`: the engine's `QueryEncoder` (its cache)."""
    if vsc is None or not description or not results:
        return results
    # Same encoder and cache key as the fused item-text score when the engine's sentence encoder is VSC's.
    key = "sentence" if vsc.encoder is encoder.sentence_encoder else "vsc"
    query = embedding if embedding is not None else encoder.cached(key, description, lambda q: vsc.encode([q])[0])
    for result, score in zip(results, vsc.scores(query, positions)):
        result.vsc = float(score)
    return results


__all__ = ["ResultTable", "with_visual_cosine", "with_vsc"]
