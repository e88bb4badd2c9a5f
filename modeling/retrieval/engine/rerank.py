"""Hybrid search: a second image model (e.g. the VAE) re-scores the primary model's candidates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from modeling.data.images import load_image
from modeling.encoders.loading import encode_images
from modeling.retrieval.backends.faiss.index import CatalogIndex
from modeling.retrieval.common.types import QueryError, SearchResult


def rerank_depth(k: int, rerank_weight: float, depth: int) -> int:
    """How many candidates a hybrid search ranks before re-ranking (`k` without re-ranking)."""
    if not 0.0 <= float(rerank_weight) <= 1.0:
        raise QueryError(f"The re-ranking weight must be between 0 and 1, got {rerank_weight}.")
    return max(int(k), int(depth)) if rerank_weight > 0 else int(k)


class VisualReranker:
    """A second image model with its own index over the same items, used to re-rank image queries (hybrid)."""

    def __init__(self, model, processor, index: CatalogIndex, name: str = "reranker"):
        self.model, self.processor, self.index, self.name = model.eval(), processor, index, name
        self.ids = index.items["id"].astype(str).tolist()

    @torch.inference_mode()
    def encode_images(self, images: Sequence) -> np.ndarray:
        return encode_images(self.model, self.processor, [load_image(image) for image in images])

    def rerank(self, results: list[SearchResult], positions: np.ndarray, query: np.ndarray, weight: float,
               k: int) -> list[SearchResult]:
        """Re-score candidates (at index `positions`) by `(1 - weight) * score + weight * rerank cosine`."""
        if not results:
            return results
        rerank = self.index.vectors.reconstruct_batch(positions) @ query
        scores = np.array([r.score for r in results])
        fused = (1.0 - weight) * scores + weight * rerank
        order = np.lexsort((positions, -fused))[:k]
        out = []
        for rank, i in enumerate(order, start=1):
            r = results[i]
            out.append(SearchResult(**{**r.to_dict(), "rank": rank, "score": float(fused[i]),
                                       "rerank_score": float(rerank[i])}))
        return out
