"""A second image encoder for photo queries: the frozen ImageNet EfficientNet-Lite0 beside the trained model.

The trained model learned the catalog's studio shots; a pretrained network notices a shopper's background, framing
and light less. For an uploaded photo (`FashionSearchEngine.search_image`) the engine reads both: the photo's nearest
items (whose catalog colours and types vote in the consistency terms) come from the fused cosine
`(1 - w) * model + w * second`, and the ranked candidates are re-scored the same way, `w` being
`EngineSettings.photo_fusion` (0 = off). The second encoder's vectors of the catalog live in their own index beside
the model's (`<index>/photo-128x96`, built like the model's, refused when built by other weights).
"""

from __future__ import annotations

import threading

import numpy as np

from modeling.retrieval.engine.rerank import VisualReranker

# The second encoder an engine loads for photos unless told otherwise (`modeling.encoders.pretrained`).
DEFAULT_PHOTO_MODEL = "efficientnet-lite0"
# EfficientNet-Lite0 reads photos at 128x96 (height, width), not its 224x168: on dev photos the same P@10 (phone-like
# 0.675 against 0.673, clean 0.868 / 0.873), type + colour 0.02 lower on phone-like photos, about 3x less time to
# encode the catalog and each photo (docs/results.md). The index folder names the size: no index of another size
# is read by mistake.
PHOTO_IMAGE_SIZE = (128, 96)
PHOTO_INDEX = f"photo-{PHOTO_IMAGE_SIZE[0]}x{PHOTO_IMAGE_SIZE[1]}"


def fused_cosines(first: np.ndarray, first_query: np.ndarray, second: np.ndarray, second_query: np.ndarray,
                  weight: float) -> np.ndarray:
    """`(1 - weight) * first @ first_query + weight * second @ second_query` for every row (float32)."""
    return ((1.0 - weight) * (first @ first_query) + weight * (second @ second_query)).astype(np.float32)


def nearest_allowed(scores: np.ndarray, n: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions) of the `n` best allowed rows, best first, ties by position."""
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    n = min(int(n), int(len(scores) if mask is None else mask.sum()))
    if n <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    kth = -np.partition(-scores, n - 1)[n - 1]
    candidates = np.flatnonzero(scores >= kth)  # every item tied at the n-th score, so ties go by position
    order = candidates[np.lexsort((candidates, -scores[candidates]))][:n]
    return scores[order].astype(np.float32), order.astype(np.int64)


def neighbour_values(items, positions: np.ndarray, scores: np.ndarray, attributes, temperature: float,
                     confidence: float) -> dict[str, str]:
    """Per attribute, the catalog value holding at least `confidence` of the nearest items' weight
    (`softmax(score / temperature)`); attributes without one are left out."""
    if len(positions) == 0:
        return {}
    weights = np.exp((scores - scores.max()) / temperature)
    weights = weights / weights.sum()
    out = {}
    for attribute in attributes:
        if attribute not in items:
            continue
        shares: dict[str, float] = {}
        for value, weight in zip(items[attribute].to_numpy()[positions], weights):
            shares[str(value)] = shares.get(str(value), 0.0) + float(weight)
        value, share = max(shares.items(), key=lambda kv: kv[1])
        if share >= confidence and value.strip():
            out[attribute] = value
    return out


class PhotoFusion(VisualReranker):
    """The second image model with its index over the same items (a `VisualReranker` whose vectors are also read
    whole, for the fused nearest items)."""

    def __init__(self, model, processor, index, name: str = DEFAULT_PHOTO_MODEL):
        super().__init__(model, processor, index, name=name)
        self._vectors: np.ndarray | None = None
        self._lock = threading.Lock()

    def vectors(self) -> np.ndarray:
        """Every item's unit vector of the second encoder, in index order (read once, read-only)."""
        with self._lock:
            if self._vectors is None:
                vectors = self.index.vectors.reconstruct_batch(np.arange(len(self.ids)))
                vectors.setflags(write=False)
                self._vectors = vectors
            return self._vectors

    def nearest(self, first: np.ndarray, photo: np.ndarray, second: np.ndarray, weight: float, n: int,
                mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The `n` allowed items nearest the photo by the fused cosine: (scores, positions)."""
        return nearest_allowed(fused_cosines(first, photo, self.vectors(), second, weight), n, mask)


__all__ = ["DEFAULT_PHOTO_MODEL", "PHOTO_IMAGE_SIZE", "PHOTO_INDEX", "PhotoFusion", "fused_cosines", "nearest_allowed", "neighbour_values"]
