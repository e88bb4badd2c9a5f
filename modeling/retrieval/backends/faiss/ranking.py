"""The FAISS backend: a `RankRequest` evaluated in numpy over the in-process `CatalogIndex`.

Signals: `visual` (cosine of the query and the items' image embeddings; the FAISS index alone for a visual-only
request that is not `exact`), `text` + `lexical` (the item-text cosine and the BM25 keyword match of the query text,
fused as `(1 - weight) * visual + weight * (text + lexical weight * keywords)`), and the request's `ScoreTerm`s
(one table lookup per attribute, `AttributeTable`).
"""

from __future__ import annotations

import threading
import numpy as np

from modeling.data.catalog import ATTRIBUTES
from modeling.retrieval.backends.faiss.index import CatalogIndex
from modeling.retrieval.common.ranking import AttributeTable, LocalCatalog, RankRequest, Ranked, Scope, top_k_order

# Fused search scores every allowed item exactly up to this many; above it, candidates come from the top of the
# visual index and of the text matcher (the top max(20 k, FUSION_CANDIDATE_DEPTH) of each) and only those are fused.
EXACT_FUSION_LIMIT = 200_000
FUSION_CANDIDATE_DEPTH = 500


def fuse(visual: np.ndarray, text: np.ndarray, weight: float, lexical=None) -> np.ndarray:
    """`(1 - weight) * visual + weight * (text + lexical weight * keyword scores)` (`lexical` = (weight, scores
    already gathered to the same items), or None)."""
    item_text = text if lexical is None else text + lexical[0] * lexical[1]
    return (1.0 - weight) * visual + weight * item_text


class FaissBackend:
    """Exact (or, past `EXACT_FUSION_LIMIT`, candidate-pool) scoring over a `CatalogIndex`.

    Args:
        local: the engine's catalog (`LocalCatalog`: the index, and the keyword match for requests with a keyword
            weight).
    """

    name = "faiss"
    collapse_growth = 4  # how much deeper a collapsing ranking asks for when too few groups came back

    def __init__(self, local: LocalCatalog):
        self.index: CatalogIndex = local.index
        self.keywords = local.keywords
        self.size = len(self.index.items)
        self._dense: np.ndarray | None = None
        self._table: AttributeTable | None = None
        self._lock = threading.Lock()

    @property
    def num_items(self) -> int:
        return self.size

    def dense_vectors(self) -> np.ndarray:
        """The index's vectors as one read-only matrix (kept for exact fusion, at most EXACT_FUSION_LIMIT rows)."""
        with self._lock:
            if self._dense is None:
                dense = self.index.vectors.reconstruct_batch(np.arange(self.size))
                dense.setflags(write=False)  # shared with callers of `item_vectors`
                self._dense = dense
            return self._dense

    def table(self) -> AttributeTable:
        with self._lock:
            if self._table is None:
                self._table = AttributeTable(self.index.items, ATTRIBUTES)
            return self._table

    def visual_scores(self, query: np.ndarray, positions: np.ndarray) -> np.ndarray:
        if self.size <= EXACT_FUSION_LIMIT:
            return self.dense_vectors()[positions] @ query
        return self.index.vectors.reconstruct_batch(positions) @ query

    def rank(self, request: RankRequest) -> list[Ranked]:
        """The top `request.depth` rows, best first, ties to catalog order."""
        mask, depth, visual_query = request.scope.mask, int(request.depth), request.visual_query
        if request.scope.empty:
            return []
        if request.text_query is None and not request.exact:
            scores, positions = self.index.search(visual_query[None], depth, allowed=mask)
            return [Ranked(int(p), float(s), float(s)) for p, s in zip(positions[0], scores[0]) if p >= 0]
        text = keywords = None
        if request.text_query is None:
            candidates = self.visual_candidates(visual_query, request.k, mask)
            visual = (self.dense_vectors() @ visual_query if candidates.size == self.size
                      else self.visual_scores(visual_query, candidates))
            fused = visual
        else:
            lexical = None
            if request.query_text and request.lexical_weight > 0:
                lexical = (request.lexical_weight, self.keywords(request.query_text))
            candidates = self.fusion_candidates(visual_query, request.text_query, request.k, mask, lexical)
            if candidates.size == self.size:  # everything allowed: whole matrices, no gathering copies
                visual = self.dense_vectors() @ visual_query
                text = self.index.text_embeddings @ request.text_query
            else:
                visual = self.visual_scores(visual_query, candidates)
                text = self.index.text_embeddings[candidates] @ request.text_query
            keywords = None if lexical is None else lexical[1][candidates]
            fused = fuse(visual, text, request.weight, None if lexical is None else (lexical[0], keywords))
        for boost in (self.table().evaluate(request.terms, candidates) if request.terms else None,
                      request.local_scores(candidates) if request.local_scores is not None else None):
            if boost is not None:
                fused = fused + boost
        top = top_k_order(fused, candidates, depth)
        return [Ranked(int(candidates[i]), float(fused[i]), float(visual[i]),
                       None if text is None else float(text[i]), None if keywords is None else float(keywords[i]))
                for i in top]

    def visual_candidates(self, visual_query: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
        """Every allowed item up to EXACT_FUSION_LIMIT, else the visual index's top max(20 k, FUSION_CANDIDATE_DEPTH)
        (re-scored exactly by the caller)."""
        if self.size <= EXACT_FUSION_LIMIT:
            return np.flatnonzero(mask) if mask is not None else np.arange(self.size)
        _, top = self.index.search(visual_query[None], max(20 * k, FUSION_CANDIDATE_DEPTH), allowed=mask)
        return np.sort(top[0][top[0] >= 0])

    def fusion_candidates(self, visual_query, text_query, k, mask, lexical=None) -> np.ndarray:
        n = self.size
        if n <= EXACT_FUSION_LIMIT:
            return np.flatnonzero(mask) if mask is not None else np.arange(n)
        depth = max(20 * k, FUSION_CANDIDATE_DEPTH)
        _, visual_top = self.index.search(visual_query[None], depth, allowed=mask)
        text_scores = self.index.text_embeddings @ text_query
        if lexical is not None:
            text_scores = text_scores + lexical[0] * lexical[1]
        if mask is not None:
            text_scores = np.where(mask, text_scores, -np.inf)
        text_top = np.argpartition(-text_scores, min(depth, n - 1))[:depth]
        text_top = text_top[np.isfinite(text_scores[text_top])]
        return np.union1d(visual_top[0][visual_top[0] >= 0], text_top)

    def nearest(self, query: np.ndarray, n: int, scope: Scope) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `n` nearest allowed items of a unit image query: (cosines, positions, their vectors)."""
        if n < 1 or scope.empty:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, len(query)), np.float32)
        scores, positions = self.index.search(query[None], n, allowed=scope.mask)
        found = positions[0] >= 0
        return (scores[0][found], positions[0][found], self.index.vectors.reconstruct_batch(positions[0][found])
                if found.any() else np.zeros((0, len(query)), np.float32))

    def vector(self, position: int) -> np.ndarray:
        """A catalog item's stored unit image vector."""
        return self.index.vectors.reconstruct(position)




def open_backend(index: CatalogIndex, **_options) -> None:
    """The registry's entry (`modeling.retrieval.backends.registry`): the engine ranks with its own in-process
    index (a `FaissBackend` over its `LocalCatalog`), so there is nothing to open."""
    return None


__all__ = ["EXACT_FUSION_LIMIT", "FUSION_CANDIDATE_DEPTH", "FaissBackend", "fuse", "open_backend"]
