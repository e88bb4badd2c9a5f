"""
General ranking metrics, numpy only: recall, hit, precision, mAP and nDCG at several depths and MRR, for graded
relevance (non-negative gains; an item is relevant when its gain is > 0) as well as binary relevance and single
targets.

* [`ranking_metrics`] scores already-ranked results (the gains at ranks 1..depth);
* [`score_metrics`] ranks a score matrix first (in chunks of queries), optionally excluding items per query;
* [`single_target_metrics`] is the published Recall@K of one target per query.

Rankings follow `modeling.evaluation.ranking`: descending score, ties broken by lower gallery position. In these:

* recall@k is the share of a query's relevant items retrieved in the top `k` (not the hit rate), hit@k the share of
  queries with at least one relevant item in the top `k` (the two agree for single targets);
* AP@k is `sum_{i <= k} precision@i * rel_i / min(k, num_relevant)`; nDCG@k uses linear gains `g / log2(rank + 1)`
  and the ideal DCG of the `k` largest gains of the query's relevant items;
* recall, mAP and nDCG are undefined for queries without any relevant item: they are left out of those means
  (NaN per query) and counted separately, while hit, precision and MRR count them as misses (0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modeling.evaluation.ranking import (check_chunk, check_ks, first_relevant_rank, pad_ranks, reciprocal_of_rank)
from modeling.utils.topk import topk_indices


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
    discounts = 1.0 / np.log2(positions + 1.0)
    retrieved = np.cumsum(relevant[:, :depth], axis=1)  # relevant items among ranks 1..i
    precision_sum = np.cumsum(relevant[:, :depth] * (retrieved / positions), axis=1)
    dcg = np.cumsum(gains[:, :depth] * discounts, axis=1)
    ideal_dcg = np.cumsum(ideal_topk * discounts, axis=1)
    defined = num_relevant > 0
    safe_relevant = np.maximum(num_relevant, 1)

    per_query = {}
    for k in ks:
        count = retrieved[:, k - 1]
        per_query[f"recall@{k}"] = np.where(defined, count / safe_relevant, np.nan)
        per_query[f"hit@{k}"] = (count > 0).astype(np.float64)
        per_query[f"precision@{k}"] = count / k
        per_query[f"map@{k}"] = np.where(defined, precision_sum[:, k - 1] / np.minimum(k, safe_relevant), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_query[f"ndcg@{k}"] = np.where(defined, dcg[:, k - 1] / ideal_dcg[:, k - 1], np.nan)
    any_relevant = relevant.any(axis=1)
    first = np.argmax(relevant, axis=1)
    per_query["mrr"] = np.where(any_relevant, 1.0 / (1 + first), 0.0)
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

    top = ks[-1]
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

    values = _ranking_per_query(gains, num_relevant, ideal_topk, ks)
    metrics = _summarise(values, num_relevant)
    return (metrics, values) if per_query else metrics


def _check_exclude(exclude: np.ndarray | str | None, shape: tuple[int, int]) -> np.ndarray | str | None:
    if exclude is None:
        return None
    if isinstance(exclude, str):
        if exclude != "self":
            raise ValueError(f"exclude must be None, 'self' or a boolean mask, got {exclude!r}")
        if shape[0] != shape[1]:
            raise ValueError(f"exclude='self' needs a square score matrix, got {shape}")
        return exclude
    exclude = np.asarray(exclude)
    if exclude.dtype != bool or exclude.shape != shape:
        raise ValueError(f"exclude must be a boolean mask of shape {shape}, got {exclude.dtype} {exclude.shape}")
    return exclude


def _exclude_rows(exclude: np.ndarray | str | None, start: int, stop: int, num_items: int) -> np.ndarray | None:
    if exclude is None:
        return None
    if isinstance(exclude, str):  # "self"
        rows = np.zeros((stop - start, num_items), dtype=bool)
        rows[np.arange(stop - start), np.arange(start, stop)] = True
        return rows
    return exclude[start:stop]


def _check_score_matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if not _is_real(scores.dtype):
        raise ValueError(f"scores must be a real-valued array, got dtype {scores.dtype}")
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty 2-D array, got shape {scores.shape}")
    return scores


def _score_rows(scores: np.ndarray, start: int, stop: int) -> np.ndarray:
    rows = scores[start:stop]
    if not np.issubdtype(rows.dtype, np.floating):
        # Rankings negate scores, which wraps around for unsigned integers.
        rows = rows.astype(np.float64)
    if np.isnan(rows).any():
        raise ValueError("scores contain NaN")
    return rows


def _ranked_gains(scores: np.ndarray, gains: np.ndarray, exclude: np.ndarray | None, depth: int) -> np.ndarray:
    """Gains at ranks 1..depth of each row's ranking, excluded items removed, zero-padded past the gallery's end."""
    if exclude is None or not exclude.any():
        top = topk_indices(scores, depth)
        return pad_ranks(np.take_along_axis(gains, top, axis=1), depth)
    # Excluded items sink to -inf, below every other item unless some scores are -inf themselves: then they tie
    # with those, and looking `max excluded` ranks deeper guarantees `depth` items that are not excluded.
    masked = np.where(exclude, -np.inf, scores)
    extra = int(exclude.sum(axis=1).max()) if np.isneginf(scores[~exclude]).any() else 0
    top = topk_indices(masked, depth + extra)
    kept = ~np.take_along_axis(exclude, top, axis=1)
    # A stable sort moves the kept ranks first, in ranking order.
    order = np.argsort(~kept, axis=1, kind="stable")[:, :depth]
    ranked = np.where(kept, np.take_along_axis(gains, top, axis=1), 0.0)
    return pad_ranks(np.take_along_axis(ranked, order, axis=1), depth)


def _largest(gains: np.ndarray, depth: int) -> np.ndarray:
    """The `depth` largest values of each row, descending, zero-padded."""
    num_items = gains.shape[1]
    if num_items > depth:
        gains = np.partition(gains, num_items - depth, axis=1)[:, num_items - depth :]
    largest = np.sort(gains, axis=1)[:, ::-1]
    return pad_ranks(largest, depth)


def score_metrics(
    scores: np.ndarray,
    relevance: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 50),
    exclude: np.ndarray | str | None = None,
    chunk: int = 1024,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """
    [`ranking_metrics`] of the rankings of a score matrix, for binary or graded relevance.

    Args:
        scores (`np.ndarray` of shape `(num_queries, num_items)`):
            Query-item similarities; higher ranks first, ties broken by lower item position.
        relevance (`np.ndarray` of shape `(num_queries, num_items)`):
            Bool relevance or non-negative gains (graded nDCG uses the gains; relevant means gain > 0).
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10, 50)`):
            Depths at which to report the metrics; depths beyond the gallery count the missing ranks as misses.
        exclude (`np.ndarray` or `"self"`, *optional*):
            Boolean `(num_queries, num_items)` mask of items removed from each query's ranking and from its relevant
            set (e.g. the query image itself); `"self"` removes item `i` from query `i` (square matrices).
        chunk (`int`, *optional*, defaults to 1024):
            Queries ranked at once; bounds memory at a few `chunk * num_items` arrays.
        per_query (`bool`, *optional*, defaults to `False`):
            Also return the per-query values (see [`ranking_metrics`]).

    Returns:
        The same as [`ranking_metrics`] (ideal gains taken from each relevance row after exclusion), except that
        `"mrr"` is the reciprocal rank of the first relevant item in the full ranking, not only within `max(ks)`
        ranks (as in [`reciprocal_rank`]).
    """
    ks = check_ks(ks)
    chunk = check_chunk(chunk)
    scores = _check_score_matrix(scores)
    relevance = np.asarray(relevance)
    if relevance.shape != scores.shape:
        raise ValueError(f"relevance must have the shape of scores {scores.shape}, got {relevance.shape}")
    exclude = _check_exclude(exclude, scores.shape)
    num_queries, num_items = scores.shape
    depth = ks[-1]

    parts: list[dict[str, np.ndarray]] = []
    num_relevant = np.empty(num_queries, dtype=np.int64)
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        rows = _score_rows(scores, start, stop)
        gains = _as_gains(relevance[start:stop], "relevance")
        excluded = _exclude_rows(exclude, start, stop, num_items)
        if excluded is not None:
            gains[excluded] = 0.0
        relevant = gains > 0
        num_relevant[start:stop] = relevant.sum(axis=1)
        values = _ranking_per_query(
            _ranked_gains(rows, gains, excluded, depth), num_relevant[start:stop], _largest(gains, depth), ks
        )
        values["mrr"] = reciprocal_of_rank(first_relevant_rank(rows, relevant, excluded))
        parts.append(values)
    values = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    metrics = _summarise(values, num_relevant)
    return (metrics, values) if per_query else metrics


def single_target_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 50),
    exclude: np.ndarray | str | None = None,
    chunk: int = 1024,
    *,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """
    Recall@K of single-target retrieval (one relevant item per query), the published Recall@K convention.

    Args:
        scores (`np.ndarray` of shape `(num_queries, num_items)`):
            Query-item similarities; higher ranks first, ties broken by lower item position.
        targets (`np.ndarray` of shape `(num_queries,)`, integer):
            The gallery position of each query's target.
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10, 50)`):
            Depths at which to report recall.
        exclude (`np.ndarray` or `"self"`, *optional*):
            Items removed from each query's ranking, as in [`score_metrics`]; a query's target must not be excluded.
        chunk (`int`, *optional*, defaults to 1024):
            Queries scored at once.
        per_query (`bool`, *optional*, defaults to `False`):
            Also return the per-query values: `"rank"` (1-based rank of the target), `"r@{k}"` and `"mrr"`.

    Returns:
        `dict[str, float]` with `"r@{k}"` for each k (share of queries whose target is in the top k) and `"mrr"`
        (mean of 1 / the target's rank in the full ranking, not truncated at `max(ks)`).
    """
    ks = check_ks(ks)
    chunk = check_chunk(chunk)
    scores = _check_score_matrix(scores)
    num_queries, num_items = scores.shape
    targets = np.asarray(targets)
    if targets.shape != (num_queries,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be an integer array of shape ({num_queries},), got {targets.dtype} "
                         f"{targets.shape}")
    if targets.min() < 0 or targets.max() >= num_items:
        raise ValueError(f"targets must be gallery positions in [0, {num_items})")
    exclude = _check_exclude(exclude, scores.shape)

    ranks = np.empty(num_queries, dtype=np.int64)
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        rows = _score_rows(scores, start, stop)
        local = np.arange(stop - start)
        relevance = np.zeros(rows.shape, dtype=bool)
        relevance[local, targets[start:stop]] = True
        excluded = _exclude_rows(exclude, start, stop, num_items)
        if excluded is not None and excluded[local, targets[start:stop]].any():
            query = start + int(np.argmax(excluded[local, targets[start:stop]]))
            raise ValueError(f"the target of query {query} is excluded from its ranking")
        ranks[start:stop] = first_relevant_rank(rows, relevance, excluded)
    values = {f"r@{k}": (ranks <= k).astype(np.float64) for k in ks}
    values["mrr"] = 1.0 / ranks
    metrics = {key: float(value.mean()) for key, value in values.items()}
    return (metrics, {"rank": ranks, **values}) if per_query else metrics


__all__ = ["ranking_metrics", "score_metrics", "single_target_metrics"]
