"""
Ranking metrics, numpy only: every metric of the evaluation is defined here, once.

Every ranking orders the gallery by descending score, ties broken by lower gallery position (the project's one
top-k, `modeling.utils.topk.topk_indices`), so results are deterministic and can be checked against a brute-force
`sorted(...)` reference.

* One depth, binary relevance: [`ranked_relevance`] gives the relevance of each query's top `k`, from which
  [`precision_at_k`], [`hit_at_k`] and [`ndcg_at_k`] are computed; [`reciprocal_rank`] looks at the full ranking.
* Several depths, binary or graded relevance (non-negative gains; an item is relevant when its gain is > 0):
  [`ranking_metrics`] scores already-ranked results (recall, hit, precision, mAP and nDCG at each depth, MRR).

The evaluation tasks built on them (image -> image, text -> image, composed) are in `modeling.evaluation.tasks`.

Conventions:

* precision@k divides by `k` even when the gallery holds fewer than `k` items (missing slots count as
  non-relevant);
* hit@k is 1 when at least one relevant item is in the top `k` (its mean is the tasks' and protocols' "r@k");
  recall@k is the share of a query's relevant items retrieved in the top `k` (the two agree for single targets);
* AP@k is `sum_{i <= k} precision@i * rel_i / min(k, num_relevant)`; nDCG@k uses linear gains `g / log2(rank + 1)`
  and the ideal DCG of the `k` largest gains of the query's relevant items;
* queries without any relevant item count as misses (hit, precision and reciprocal rank 0); recall, mAP and nDCG
  are undefined (NaN) for them, and [`ranking_metrics`] leaves them out of those means and counts them separately.

The argument checks shared by every metric module (`check_k`, `check_ks`, `check_chunk`, `normalise_rows`,
`check_pair`) live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modeling.utils.topk import topk_indices


# -- argument checks -----------------------------------------------------------------------------------------------
def _positive_int(value: int, name: str) -> int:
    """`value` as an int; `ValueError` naming it unless it is a positive integer (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_k(k: int) -> int:
    """`k` as an int; `ValueError` unless it is a positive integer (bools are not)."""
    return _positive_int(k, "k")


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
    return _positive_int(chunk, "chunk")


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
    ideal = (np.arange(k) < n_relevant[:, None]).astype(np.float64)
    return _ndcg(rel_topk.astype(np.float64), ideal, n_relevant > 0, [k])[k]


def _ndcg(gains: np.ndarray, ideal_topk: np.ndarray, defined: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Per query and for each `k` of the ascending `ks`: the DCG of `gains` (ranks 1..) over the DCG of
    `ideal_topk` (the query's `max(ks)` largest gains, descending, zero-padded), NaN where not `defined`. The DCGs
    are cumulative sums along each row, so a value does not depend on the other rows."""
    discounts = 1.0 / np.log2(np.arange(1, ks[-1] + 1) + 1.0)
    dcg = np.cumsum(gains[:, : ks[-1]] * discounts, axis=1)
    ideal_dcg = np.cumsum(ideal_topk * discounts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {k: np.where(defined, dcg[:, k - 1] / ideal_dcg[:, k - 1], np.nan) for k in ks}


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


# -- several depths, graded relevance ------------------------------------------------------------------------------
def _is_real(dtype: np.dtype) -> bool:
    return dtype == bool or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _as_gains(gains: np.ndarray, name: str) -> np.ndarray:
    """`gains` as float64 (bool -> 0/1), rejecting non-numeric, non-finite and negative values."""
    gains = np.asarray(gains)
    if not _is_real(gains.dtype):
        raise ValueError(f"{name} must hold bool or real non-negative gains, got dtype {gains.dtype}")
    gains = gains.astype(np.float64)
    if not np.isfinite(gains).all():
        raise ValueError(f"{name} contains NaN or infinite gains")
    if (gains < 0).any():
        raise ValueError(f"{name} contains negative gains")
    return gains


def _ranking_per_query(
    gains: np.ndarray, num_relevant: np.ndarray, ideal_topk: np.ndarray, ks: list[int]
) -> dict[str, np.ndarray]:
    """
    Per-query metrics from validated float64 `gains` of shape `(num_queries, depth >= max(ks))`, the relevant
    counts and the `max(ks)` largest ideal gains of each query, descending (zero-padded). Every value is computed
    row by row (cumulative sums, no reductions across rows), so it does not depend on how queries are chunked.
    """
    depth = ks[-1]
    relevant = gains > 0
    positions = np.arange(1, depth + 1)
    retrieved = np.cumsum(relevant[:, :depth], axis=1)  # relevant items among ranks 1..i
    precision_sum = np.cumsum(relevant[:, :depth] * (retrieved / positions), axis=1)
    defined = num_relevant > 0
    safe_relevant = np.maximum(num_relevant, 1)
    ndcg = _ndcg(gains, ideal_topk, defined, ks)

    per_query = {}
    for k in ks:
        per_query[f"recall@{k}"] = np.where(defined, retrieved[:, k - 1] / safe_relevant, np.nan)
        per_query[f"hit@{k}"] = hit_at_k(relevant, k)
        per_query[f"precision@{k}"] = precision_at_k(relevant, k)
        per_query[f"map@{k}"] = np.where(defined, precision_sum[:, k - 1] / np.minimum(k, safe_relevant), np.nan)
        per_query[f"ndcg@{k}"] = ndcg[k]
    first = np.argmax(relevant, axis=1)
    per_query["mrr"] = reciprocal_of_rank(np.where(relevant.any(axis=1), 1 + first, 0))
    return per_query


def _summarise(per_query: dict[str, np.ndarray], num_relevant: np.ndarray) -> dict[str, float]:
    defined = num_relevant > 0
    metrics: dict[str, float] = {}
    # Group the keys by metric ("recall@1", "recall@5", ..., "hit@1", ...) for readable tables.
    names = sorted(per_query, key=lambda key: ["recall", "hit", "precision", "map", "ndcg", "mrr"].index(
        key.split("@")[0]))
    for key in names:
        values = per_query[key]
        if key.split("@")[0] in ("recall", "map", "ndcg"):
            metrics[key] = float(values[defined].mean()) if defined.any() else float("nan")
        else:
            metrics[key] = float(values.mean())
    metrics["num_queries"] = len(num_relevant)
    metrics["num_queries_without_relevant"] = int((~defined).sum())
    return metrics


def _checked_ranking_inputs(gains_topk, num_relevant, ks) -> tuple[np.ndarray, np.ndarray]:
    """`ranking_metrics`'s gains and relevant counts, checked (ValueError with what is wrong)."""
    gains = _as_gains(gains_topk, "gains_topk")
    if gains.ndim != 2 or gains.shape[0] == 0:
        raise ValueError(f"gains_topk must be a non-empty (num_queries, depth) array, got shape {gains.shape}")
    num_queries, depth = gains.shape
    if depth < ks[-1]:
        raise ValueError(f"gains_topk holds {depth} ranks, fewer than max(ks)={ks[-1]}")
    num_relevant = np.asarray(num_relevant)
    if num_relevant.shape != (num_queries,) or not np.issubdtype(num_relevant.dtype, np.integer):
        raise ValueError(
            f"num_relevant must be an integer array of shape ({num_queries},), got {num_relevant.dtype} "
            f"{num_relevant.shape}"
        )
    num_relevant = num_relevant.astype(np.int64)
    visible = (gains > 0).sum(axis=1)
    if (num_relevant < visible).any():
        query = int(np.argmax(num_relevant < visible))
        raise ValueError(
            f"num_relevant[{query}]={num_relevant[query]} is smaller than the {visible[query]} relevant items "
            "visible in gains_topk"
        )

    return gains, num_relevant


def _ideal_topk(gains: np.ndarray, num_relevant: np.ndarray, top: int, ideal_gains) -> np.ndarray:
    """(num_queries, top) ideal gains, largest first: binary from `num_relevant`, or each query's `ideal_gains`."""
    num_queries = gains.shape[0]
    if ideal_gains is None:
        if not np.isin(gains, (0.0, 1.0)).all():
            raise ValueError("gains_topk holds graded gains: pass ideal_gains for graded nDCG")
        ideal_topk = (np.arange(top) < num_relevant[:, None]).astype(np.float64)
    else:
        if len(ideal_gains) != num_queries:
            raise ValueError(f"ideal_gains has {len(ideal_gains)} entries for {num_queries} queries")
        ideal_topk = np.zeros((num_queries, top))
        for query, ideal in enumerate(ideal_gains):
            ideal = _as_gains(ideal, f"ideal_gains[{query}]")
            if ideal.ndim != 1:
                raise ValueError(f"ideal_gains[{query}] must be 1-D, got shape {ideal.shape}")
            ideal = -np.sort(-ideal[ideal > 0])
            if len(ideal) != num_relevant[query]:
                raise ValueError(
                    f"ideal_gains[{query}] holds {len(ideal)} positive gains but num_relevant[{query}]="
                    f"{num_relevant[query]}"
                )
            # The visible gains are some of the query's relevant gains: the i-th largest of them cannot exceed the
            # i-th largest ideal gain (this also keeps nDCG <= 1).
            shown = -np.sort(-gains[query][gains[query] > 0])
            if (shown > ideal[: len(shown)]).any():
                raise ValueError(f"gains_topk[{query}] holds gains that ideal_gains[{query}] does not contain")
            ideal_topk[query, : min(top, len(ideal))] = ideal[:top]

    return ideal_topk


def ranking_metrics(
    gains_topk: np.ndarray,
    num_relevant: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 50),
    ideal_gains: Sequence[np.ndarray] | None = None,
    *,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """
    Ranking metrics of already-ranked results, for binary or graded relevance.

    Args:
        gains_topk (`np.ndarray` of shape `(num_queries, depth)`):
            Non-negative gain of each query's results at ranks 1..depth (bool: binary gains); an item is relevant
            when its gain is > 0. Ranks past the end of a short gallery hold 0. `depth` must be at least `max(ks)`.
        num_relevant (`np.ndarray` of shape `(num_queries,)`, integer):
            Number of items with gain > 0 for each query in the whole gallery (at least the number visible in
            `gains_topk`).
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10, 50)`):
            Depths at which to report the metrics.
        ideal_gains (`Sequence[np.ndarray]`, *optional*):
            Per query, the gains of all its relevant items in any order (zeros are ignored), for graded nDCG.
            Defaults to `num_relevant` gains of 1, which needs binary `gains_topk` (a `ValueError` is raised for
            graded gains without `ideal_gains`).
        per_query (`bool`, *optional*, defaults to `False`):
            Also return the per-query values, e.g. to average over subsets of queries.

    Returns:
        `dict[str, float]` with, for each k, `"recall@{k}"` (share of the query's relevant items in the top k),
        `"hit@{k}"` (share of queries with at least one relevant item in the top k), `"precision@{k}"` (relevant
        items in the top k over k), `"map@{k}"` (mean AP@k, `sum_{i <= k} precision@i * rel_i / min(k,
        num_relevant)`), `"ndcg@{k}"` (linear gains `g / log2(rank + 1)` over the DCG of the k largest ideal
        gains); `"mrr"` (mean reciprocal rank of the first relevant item within the `depth` ranks given, 0 when
        there is none); `"num_queries"` and `"num_queries_without_relevant"` (ints).

        Recall, mAP and nDCG are undefined for queries with `num_relevant == 0`: they are averaged over the other
        queries only (NaN if there are none); hit, precision and MRR average over all queries, counting those as
        misses. With `per_query=True`, a second `dict[str, np.ndarray]` holds the `(num_queries,)` values of every
        metric (NaN where undefined).
    """
    ks = check_ks(ks)
    gains, num_relevant = _checked_ranking_inputs(gains_topk, num_relevant, ks)
    ideal_topk = _ideal_topk(gains, num_relevant, ks[-1], ideal_gains)
    values = _ranking_per_query(gains, num_relevant, ideal_topk, ks)
    metrics = _summarise(values, num_relevant)
    return (metrics, values) if per_query else metrics


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
    "ranking_metrics",
    "reciprocal_of_rank",
    "reciprocal_rank",
]
