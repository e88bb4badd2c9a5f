"""The engine's scoring core over the in-process catalog index: which items a query's signals put on top.

`FashionSearchEngine` turns text, photos and catalog items into query vectors; `Ranker.rank` scores the allowed items
and returns the top k as `Ranked` rows (index position and the score of each signal). Signals:

- `visual`: cosine of the query and the items' image embeddings (FAISS for the visual-only top k);
- `text` + `lexical`: the item-text cosine and the keyword match, fused as
  `(1 - weight) * visual + weight * (text + lexical weight * keywords)`;
- `extra`: per-item additive scores (query-intent boosts and penalties, "more like this" consistency), a function
  of the candidate positions;
- `collapse`: near-duplicate items (`modeling.retrieval.dedup`) count once, the others listed under it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from modeling.retrieval.index import CatalogIndex
from modeling.retrieval.ranking import top_k_order

# Fused search scores every allowed item exactly up to this many; above it, candidates come from the top of the
# visual index and of the text matcher (the top max(20 k, FUSION_CANDIDATE_DEPTH) of each) and only those are fused.
EXACT_FUSION_LIMIT = 200_000
FUSION_CANDIDATE_DEPTH = 500


@dataclass
class Ranked:
    """One ranked item: its index `position`, the ranking `score` and the signals it was made of."""

    position: int
    score: float
    visual: float
    text: float | None = None
    lexical: float | None = None
    duplicates: list[int] = field(default_factory=list)  # positions of the near-duplicates collapsed into it


def fuse(visual: np.ndarray, text: np.ndarray, weight: float, lexical=None) -> np.ndarray:
    """`(1 - weight) * visual + weight * (text + lexical weight * keyword scores)` (`lexical` = (weight, scores
    already gathered to the same items), or None)."""
    item_text = text if lexical is None else text + lexical[0] * lexical[1]
    return (1.0 - weight) * visual + weight * item_text


class Ranker:
    """Exact (or, past `EXACT_FUSION_LIMIT`, candidate-pool) scoring over a `CatalogIndex`."""

    def __init__(self, index: CatalogIndex):
        self.index = index
        self.size = len(index.items)
        self._dense: np.ndarray | None = None
        self._lock = threading.Lock()

    def dense_vectors(self) -> np.ndarray:
        """The index's vectors as one read-only matrix (kept for exact fusion, at most EXACT_FUSION_LIMIT rows)."""
        with self._lock:
            if self._dense is None:
                dense = self.index.vectors.reconstruct_batch(np.arange(self.size))
                dense.setflags(write=False)  # shared with callers of `item_vectors`
                self._dense = dense
            return self._dense

    def visual_scores(self, query: np.ndarray, positions: np.ndarray) -> np.ndarray:
        if self.size <= EXACT_FUSION_LIMIT:
            return self.dense_vectors()[positions] @ query
        return self.index.vectors.reconstruct_batch(positions) @ query

    def rank(self, visual_query: np.ndarray, k: int, mask: np.ndarray | None = None,
             text_query: np.ndarray | None = None, weight: float = 0.0,
             lexical: tuple[float, np.ndarray] | None = None) -> list[Ranked]:
        """Top `k` by visual cosine alone (no `text_query`) or fused with the item-text score; `lexical` is
        (weight, per-item keyword scores over the whole catalog) added to the item-text cosine."""
        if mask is not None and not mask.any():
            return []
        if text_query is None:
            scores, positions = self.index.search(visual_query[None], k, allowed=mask)
            return [Ranked(int(p), float(s), float(s)) for p, s in zip(positions[0], scores[0]) if p >= 0]
        candidates = self.fusion_candidates(visual_query, text_query, k, mask, lexical)
        if candidates.size == self.size:  # everything allowed: whole matrices, no gathering copies
            visual = self.dense_vectors() @ visual_query
            text = self.index.text_embeddings @ text_query
        else:
            visual = self.visual_scores(visual_query, candidates)
            text = self.index.text_embeddings[candidates] @ text_query
        keywords = None if lexical is None else lexical[1][candidates]
        fused = fuse(visual, text, weight, None if lexical is None else (lexical[0], keywords))
        top = top_k_order(fused, candidates, k)
        return [Ranked(int(candidates[i]), float(fused[i]), float(visual[i]), float(text[i]),
                       None if keywords is None else float(keywords[i])) for i in top]

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


ExtraScores = Callable[[np.ndarray], np.ndarray | None]

__all__ = ["EXACT_FUSION_LIMIT", "FUSION_CANDIDATE_DEPTH", "ExtraScores", "Ranked", "Ranker", "fuse"]
