"""The engine's scoring core over the in-process catalog index: which items a query's signals put on top.

`FashionSearchEngine` turns text, photos and catalog items into query vectors; `Ranker.rank` scores the allowed items
and returns the top k as `Ranked` rows (index position and the score of each signal). Signals:

- `visual`: cosine of the query and the items' image embeddings (FAISS for the visual-only top k);
- `text` + `lexical`: the item-text cosine and the keyword match, fused as
  `(1 - weight) * visual + weight * (text + lexical weight * keywords)`;
- `extra`: per-item additive scores (query-intent boosts and penalties, "more like this" consistency), a function
  of the candidate positions;
- `collapse`: near-duplicate items (`modeling.retrieval.engine.dedup`) count once, the others listed under it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from modeling.data.text import normalise_title
from modeling.retrieval.engine.dedup import COLLAPSE_OVERFETCH, collapse, duplicate_groups
from modeling.retrieval.backends.faiss.index import CatalogIndex
from modeling.retrieval.engine.exact_ranking import top_k_order

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
        self._groups: np.ndarray | None = None  # near-duplicate group of every item, built on first collapse
        self._members: dict[int, list[int]] = {}
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
             lexical: tuple[float, np.ndarray] | None = None, extra: ExtraScores | None = None,
             collapse: bool = False) -> list[Ranked]:
        """Top `k` by visual cosine alone (no `text_query`) or fused with the item-text score; `lexical` is
        (weight, per-item keyword scores over the whole catalog) added to the item-text cosine; `extra(positions)`
        adds per-item scores (or returns None); with `collapse` near-duplicates count once (`Ranked.duplicates`)."""
        if mask is not None and not mask.any():
            return []
        if text_query is None and extra is None and not collapse:
            scores, positions = self.index.search(visual_query[None], k, allowed=mask)
            return [Ranked(int(p), float(s), float(s)) for p, s in zip(positions[0], scores[0]) if p >= 0]
        text = keywords = None
        if text_query is None:
            candidates = self.visual_candidates(visual_query, k, mask)
            visual = (self.dense_vectors() @ visual_query if candidates.size == self.size
                      else self.visual_scores(visual_query, candidates))
            fused = visual
        else:
            candidates = self.fusion_candidates(visual_query, text_query, k, mask, lexical)
            if candidates.size == self.size:  # everything allowed: whole matrices, no gathering copies
                visual = self.dense_vectors() @ visual_query
                text = self.index.text_embeddings @ text_query
            else:
                visual = self.visual_scores(visual_query, candidates)
                text = self.index.text_embeddings[candidates] @ text_query
            keywords = None if lexical is None else lexical[1][candidates]
            fused = fuse(visual, text, weight, None if lexical is None else (lexical[0], keywords))
        if extra is not None:
            boost = extra(candidates)
            if boost is not None:
                fused = fused + boost
        if collapse:
            top, members = self._collapsed_top(fused, candidates, k, mask)
        else:
            top, members = top_k_order(fused, candidates, k), {}
        return [Ranked(int(candidates[i]), float(fused[i]), float(visual[i]),
                       None if text is None else float(text[i]), None if keywords is None else float(keywords[i]),
                       members.get(int(i), [])) for i in top]

    def visual_candidates(self, visual_query: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
        """Every allowed item up to EXACT_FUSION_LIMIT, else the visual index's top max(20 k, FUSION_CANDIDATE_DEPTH)
        (re-scored exactly by the caller)."""
        if self.size <= EXACT_FUSION_LIMIT:
            return np.flatnonzero(mask) if mask is not None else np.arange(self.size)
        _, top = self.index.search(visual_query[None], max(20 * k, FUSION_CANDIDATE_DEPTH), allowed=mask)
        return np.sort(top[0][top[0] >= 0])

    # -- near-duplicates ---------------------------------------------------------------------------------------------
    def duplicate_groups(self) -> np.ndarray:
        """Group id of every item (`modeling.retrieval.engine.dedup.duplicate_groups` over normalised titles and the
        image vectors), computed once."""
        with self._lock:
            if self._groups is None:
                titles = (self.index.items["title"].map(normalise_title).tolist() if "title" in self.index.items
                          else [""] * self.size)
                vectors = self._dense if self._dense is not None else None
            else:
                return self._groups
        vectors = self.dense_vectors() if vectors is None else vectors
        groups = duplicate_groups(titles, vectors)
        members: dict[int, list[int]] = {}
        for position, group in enumerate(groups.tolist()):
            members.setdefault(group, []).append(position)
        with self._lock:
            self._members = {g: m for g, m in members.items() if len(m) > 1}
            self._groups = groups
        return groups

    def _collapsed_top(self, fused: np.ndarray, candidates: np.ndarray, k: int, mask: np.ndarray | None):
        """Indices (into `candidates`) of the best item of each of the best `k` duplicate groups, and for each the
        positions of the rest of its group that `mask` allows (best first when scored, else catalog order)."""
        groups = self.duplicate_groups()
        depth = min(candidates.size, max(k * COLLAPSE_OVERFETCH, 50))
        while True:
            top = top_k_order(fused, candidates, depth)
            kept, _, short = collapse(top, groups[candidates], k)
            if not short or depth >= candidates.size:
                break
            depth = min(candidates.size, depth * 4)
        members = {}
        for i in kept:
            position = int(candidates[i])
            others = [m for m in self._members.get(int(groups[position]), []) if m != position
                      and (mask is None or mask[m])]
            if others:
                members[i] = others
        return kept, members

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
