"""
Rankings and the per-query metrics of one ranking depth, numpy only.

Every ranking orders the gallery by descending similarity, ties broken by lower gallery position, so results are
deterministic and can be checked against a brute-force `sorted(...)` reference (the top items come from the
project's one top-k, `modeling.utils.topk.topk_indices`). [`ranked_relevance`] gives the relevance of each query's
top `k`, from which [`precision_at_k`], [`hit_at_k`] and [`ndcg_at_k`] are computed; [`reciprocal_rank`] looks at the full ranking.

Conventions:

* precision@k divides by `k` even when the gallery holds fewer than `k` items (missing slots count as
  non-relevant);
* hit@k is 1 when at least one relevant item is in the top `k` (its mean is "r@k");
* queries without any relevant item count as misses (hit 0, reciprocal rank 0); nDCG is undefined (NaN) for them.

The argument checks shared by every metric module (`check_k`, `check_ks`, `check_chunk`, `normalise_rows`,
`check_pair`) live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modeling.utils.topk import topk_indices


# -- argument checks -----------------------------------------------------------------------------------------------
def check_k(k: int) -> int:
    """`k` as an int; `ValueError` unless it is a positive integer (bools are not)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_ks(ks: int | Sequence[int], *, sort: bool = True) -> list[int]:
    """Distinct positive depths, ascending (or in first-seen order with `sort=False`); one int is one depth."""
    if isinstance(ks, (int, np.integer)):
        ks = [ks]
    out = list(dict.fromkeys(check_k(k) for k in ks))
    if not out:
        raise ValueError("ks must not be empty")
    return sorted(out) if sort else out


def check_chunk(chunk: int) -> int:
    """`chunk` (queries scored at once, or a batch size) as an int; `ValueError` unless it is positive."""
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return int(chunk)


def normalise_rows(x: Any, name: str) -> np.ndarray:
    """`x` as float32 rows of unit L2 norm (an all-zero row stays zero); `ValueError` unless it is a non-empty
    `(rows, dim)` array of finite numbers."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows, dim), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def check_pair(queries: Any, gallery: Any, query_name: str, gallery_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Both feature arrays through [`normalise_rows`], which must agree on the dimension."""
    queries = normalise_rows(queries, query_name)
    gallery = normalise_rows(gallery, gallery_name)
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"{query_name} dim {queries.shape[1]} != {gallery_name} dim {gallery.shape[1]}")
    return queries, gallery


def _check_scores(scores: np.ndarray, relevance: np.ndarray, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        # Rankings negate scores, which wraps around for unsigned integers.
        scores = scores.astype(np.float64)
    relevance = np.asarray(relevance, dtype=bool)
    if scores.ndim != 2 or relevance.shape != scores.shape:
        raise ValueError(
            f"scores and relevance must be 2-D arrays of the same shape, got {scores.shape} and {relevance.shape}"
        )
    if scores.shape[0] == 0:
        raise ValueError("no queries")
    if exclude_self and scores.shape[0] != scores.shape[1]:
        raise ValueError(f"exclude_self needs a square score matrix, got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, relevance


def check_rel_topk(rel_topk: np.ndarray, k: int) -> np.ndarray:
    """The first `k` columns of a non-empty `(num_queries, depth >= k)` relevance array, as bool."""
    k = check_k(k)
    rel_topk = np.asarray(rel_topk, dtype=bool)
    if rel_topk.ndim != 2 or rel_topk.shape[0] == 0:
        raise ValueError(f"rel_topk must be a non-empty (num_queries, depth) array, got shape {rel_topk.shape}")
    if rel_topk.shape[1] < k:
        raise ValueError(f"rel_topk holds {rel_topk.shape[1]} ranks, fewer than k={k}")
    return rel_topk[:, :k]


# -- rankings ------------------------------------------------------------------------------------------------------
def pad_ranks(ranked: np.ndarray, depth: int) -> np.ndarray:
    """`(num_queries, n <= depth)` values at ranks 1..n, padded with False / 0 up to `depth` ranks (the ranks past
    the end of a short gallery)."""
    if ranked.shape[1] >= depth:
        return ranked
    return np.pad(ranked, ((0, 0), (0, depth - ranked.shape[1])), constant_values=False)


def ranked_relevance(
    scores: np.ndarray, relevance: np.ndarray, k: int, exclude_self: bool = False
) -> np.ndarray:
    """
    Relevance of the top-`k` items of each query's ranking.

    Args:
        scores (`np.ndarray` of shape `(num_queries, num_items)`):
            Similarities; higher ranks first, ties broken by lower item position.
        relevance (`np.ndarray` of shape `(num_queries, num_items)`):
            Whether each item is relevant to each query.
        k (`int`):
            Ranking depth.
        exclude_self (`bool`, *optional*, defaults to `False`):
            Queries are the gallery items themselves (square matrices): item `i` is removed from query `i`'s ranking.

    Returns:
        `np.ndarray` of shape `(num_queries, k)`, bool: relevance at ranks 1..k, `False` past the end of the gallery.
    """
    k = check_k(k)
    scores, relevance = _check_scores(scores, relevance, exclude_self)
    self_index = np.arange(len(scores)) if exclude_self else None
    top = topk_indices(scores, k, self_index)
    return pad_ranks(np.take_along_axis(relevance, top, axis=1), k)


def first_relevant_rank(
    scores: np.ndarray, relevance: np.ndarray, exclude: np.ndarray | None = None
) -> np.ndarray:
    """
    Per row: the 1-based rank of the first relevant item in the full ranking of `scores` (ties broken by lower
    position), 0 when the row has no relevant item. Items where the boolean mask `exclude` is set are removed
    from both the ranking and the relevant set.
    """
    num_items = scores.shape[1]
    if exclude is not None:
        relevance = relevance & ~exclude
    has_relevant = relevance.any(axis=1)
    # The first relevant item in the ranking is the best-scoring relevant one, lowest position among ties.
    best = np.where(relevance, scores, -np.inf).max(axis=1)
    first = np.argmax(relevance & (scores == best[:, None]), axis=1)
    ahead = (scores > best[:, None]) | ((scores == best[:, None]) & (np.arange(num_items) < first[:, None]))
    if exclude is not None:
        ahead &= ~exclude
    return np.where(has_relevant, 1 + ahead.sum(axis=1), 0)


def reciprocal_of_rank(rank: np.ndarray) -> np.ndarray:
    """`1 / rank`, and 0 where `rank` is 0 (no relevant item, as [`first_relevant_rank`] reports it)."""
    return np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)


# -- per-query metrics ---------------------------------------------------------------------------------------------
def precision_at_k(rel_topk: np.ndarray, k: int) -> np.ndarray:
    """Per query: number of relevant items among the first `k` of `rel_topk` (from [`ranked_relevance`]), over `k`."""
    return check_rel_topk(rel_topk, k).sum(axis=1) / k


def hit_at_k(rel_topk: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 if any of the first `k` items of `rel_topk` is relevant, else 0.0 (its mean is R@k)."""
    return check_rel_topk(rel_topk, k).any(axis=1).astype(np.float64)


def ndcg_at_k(rel_topk: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """
    Per query: binary-gain nDCG@k, `sum(rel_i / log2(i + 1))` over ranks `i = 1..k` divided by the same sum for
    an ideal ranking with `min(k, n_relevant)` relevant items first. NaN where `n_relevant == 0`, so callers can
    skip and count those queries.
    """
    rel_topk = check_rel_topk(rel_topk, k)
    n_relevant = np.asarray(n_relevant)
    if n_relevant.shape != (len(rel_topk),) or not np.issubdtype(n_relevant.dtype, np.integer):
        raise ValueError(f"n_relevant must be an integer array of shape ({len(rel_topk)},), got {n_relevant.shape}")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = rel_topk @ discounts
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.clip(n_relevant, 0, k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, dcg / ideal, np.nan)


def reciprocal_rank(scores: np.ndarray, relevance: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """
    Per query: `1 / rank` of the first relevant item in the full ranking (see [`ranked_relevance`] for the
    arguments), 0 when the query has no relevant item.
    """
    scores, relevance = _check_scores(scores, relevance, exclude_self)
    exclude = None
    if exclude_self:
        exclude = np.eye(len(scores), scores.shape[1], dtype=bool)
    return reciprocal_of_rank(first_relevant_rank(scores, relevance, exclude))


__all__ = [
    "check_chunk",
    "check_k",
    "check_ks",
    "check_pair",
    "check_rel_topk",
    "first_relevant_rank",
    "hit_at_k",
    "ndcg_at_k",
    "normalise_rows",
    "pad_ranks",
    "precision_at_k",
    "ranked_relevance",
    "reciprocal_of_rank",
    "reciprocal_rank",
]
