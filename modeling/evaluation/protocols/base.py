"""What every protocol shares: the ranking of features by cosine, recall at k, the argument checks, and the
batched calls of the encoder callables that runners take."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from modeling.data.images import open_image
from modeling.evaluation.metrics import check_chunk, hit_at_k
from modeling.utils.topk import topk_indices

EncodeImages = Callable[[list[Image.Image]], np.ndarray]
Compose = Callable[[np.ndarray, list[str]], np.ndarray]


def check_positions(positions: Any, name: str, num_queries: int, num_items: int, allow_none: bool) -> np.ndarray:
    """Integer positions, one per query, in [0, num_items) (or -1 = "not in the gallery" with `allow_none`)."""
    array = np.asarray(positions)
    if array.shape != (num_queries,):
        raise ValueError(f"{name} must have shape ({num_queries},) (one per query), got {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer gallery positions, got dtype {array.dtype}")
    array = array.astype(np.int64)
    low = -1 if allow_none else 0
    if array.size and (array.min() < low or array.max() >= num_items):
        allowed = f"[-1, {num_items})" if allow_none else f"[0, {num_items})"
        raise ValueError(f"{name} must be in {allowed}, got values from {array.min()} to {array.max()}")
    return array


def check_max_queries(max_queries: int | None) -> None:
    """`ValueError` unless `max_queries` is None or a positive integer."""
    if max_queries is not None and (
        isinstance(max_queries, bool) or not isinstance(max_queries, (int, np.integer)) or max_queries < 1
    ):
        raise ValueError(f"max_queries must be a positive integer or None, got {max_queries!r}")


def sample_in_order(items: list, max_queries: int | None, seed: int) -> list:
    """`items`, or `max_queries` of them drawn without replacement by `default_rng(seed)`, kept in their order."""
    if max_queries is None or len(items) <= max_queries:
        return items
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=int(max_queries), replace=False))
    return [items[index] for index in chosen]


def ranked_positions(
    queries: np.ndarray, gallery: np.ndarray, depth: int, excluded: np.ndarray | None, chunk: int
) -> np.ndarray:
    """Top-`depth` gallery positions per query (cosine, ties -> lower position), `-1` past the end.

    `excluded[i] >= 0` removes that gallery item from query `i`'s ranking (it gets -inf, so it can only show up
    as the very last item, where it is replaced by -1).
    """
    num_queries, num_items = len(queries), len(gallery)
    depth = min(depth, num_items)
    out = np.empty((num_queries, depth), dtype=np.int64)
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        scores = queries[start:stop] @ gallery.T
        if excluded is not None:
            rows = np.nonzero(excluded[start:stop] >= 0)[0]
            scores[rows, excluded[start:stop][rows]] = -np.inf
        top = topk_indices(scores, depth)
        if excluded is not None:
            top[top == excluded[start:stop, None]] = -1
        out[start:stop] = top
    return out


def recall_dict(hits: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """`hits` (Q, depth) bool at ranks 1..depth -> `{"r@k": share of queries with a hit in the top k}`."""
    return {f"r@{k}": float(hit_at_k(hits, k).mean()) for k in ks}


def _check_encoded(embeds: Any, expected_rows: int, what: str) -> np.ndarray:
    embeds = np.asarray(embeds)
    if embeds.ndim != 2 or embeds.shape[0] != expected_rows:
        raise ValueError(f"{what} must return an array of shape ({expected_rows}, dim), got shape {embeds.shape}")
    return embeds.astype(np.float32, copy=False)


def _load_rgb(path: str) -> Image.Image:
    image = open_image(path)
    return image if image.mode == "RGB" else image.convert("RGB")


def encode_image_files(paths: Sequence[str], encode_images: EncodeImages, batch_size: int = 64) -> np.ndarray:
    """Opens `paths` (RGB) batch by batch and stacks `encode_images`' `(batch, D)` outputs into `(len(paths), D)`."""
    batch_size = check_chunk(batch_size)
    if not paths:
        raise ValueError("no image to encode")
    parts = []
    for start in range(0, len(paths), batch_size):
        batch = [_load_rgb(path) for path in paths[start : start + batch_size]]
        parts.append(_check_encoded(encode_images(batch), len(batch), "encode_images"))
    return np.concatenate(parts)


def compose_batches(compose: Compose, references: np.ndarray, texts: list[str], batch_size: int) -> np.ndarray:
    """`compose(references, texts)` batch by batch, stacked into `(len(texts), D)`."""
    parts = []
    for start in range(0, len(texts), batch_size):
        stop = start + batch_size
        parts.append(_check_encoded(compose(references[start:stop], texts[start:stop]), len(texts[start:stop]),
                                    "compose"))
    return np.concatenate(parts)


def encode_gallery_and_queries(
    gallery_paths: Sequence[str],
    references: np.ndarray,
    texts: list[str],
    encode_images: EncodeImages,
    compose: Compose,
    batch_size: int,
    reference_paths: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(gallery_embeds, query_embeds)` of a composed-retrieval protocol.

    Every gallery image is encoded once; query `i`'s reference embedding is the gallery embedding at
    `references[i]` or, when that is -1 (not in the gallery), `reference_paths[i]` encoded from its file; the
    query embedding is `compose(reference_embeds, texts)`, batch by batch.
    """
    gallery_embeds = encode_image_files(gallery_paths, encode_images, batch_size)
    reference_embeds = gallery_embeds[np.maximum(references, 0)].copy()
    outside = np.nonzero(references < 0)[0]
    if len(outside):
        reference_embeds[outside] = encode_image_files([reference_paths[i] for i in outside], encode_images,
                                                       batch_size)
    return gallery_embeds, compose_batches(compose, reference_embeds, texts, batch_size)


__all__ = ["Compose", "EncodeImages", "check_max_queries", "check_positions", "compose_batches", "encode_image_files",
           "encode_gallery_and_queries", "ranked_positions", "recall_dict", "sample_in_order"]
