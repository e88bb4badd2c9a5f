"""The one top-k of the project, numpy only: the best `k` columns of each row of a score matrix, best first, ties
broken by the lower tie key (by default the lower column, i.e. gallery / catalog position).

The result equals the first `k` of `np.lexsort((tie_key, -scores), axis=-1)` (column order among equal keys), but
rows are not sorted whole: `np.partition` finds the k-th largest score, and only the selected columns are sorted.
Evaluation ranks galleries with it (`modeling.evaluation.metrics`) and retrieval ranks candidates with it
(`modeling.retrieval.engine.exact_ranking.top_k_order`, the compressed FAISS index's re-ranking). Scores must not
hold NaN.
"""

from __future__ import annotations

import numpy as np


def topk_indices(
    scores: np.ndarray, k: int, self_index: np.ndarray | None = None, tie_key: np.ndarray | None = None
) -> np.ndarray:
    """
    Column positions of the top `min(k, num_columns)` items per row of `scores`, best first, ties broken by lower
    `tie_key` (then lower column); without `tie_key`, by lower column.

    Args:
        scores (`np.ndarray` of shape `(num_rows, num_columns)`): higher ranks first; no NaN.
        k (`int`): how many columns to keep per row (an empty `(num_rows, 0)` result when 0 or less).
        self_index (`np.ndarray` of shape `(num_rows,)`, *optional*): a column that row `i` must not return
            (then at most `num_columns - 1` columns come back).
        tie_key (`np.ndarray` broadcastable to `scores`, *optional*): the order among equal scores, e.g. the catalog
            positions of candidates listed in another order.

    Returns:
        `np.ndarray` of shape `(num_rows, top)`, int64.
    """
    num_rows, num_items = scores.shape
    top = min(k, num_items - (self_index is not None))
    if top <= 0:
        return np.empty((num_rows, 0), dtype=np.int64)
    rows = np.arange(num_rows)
    if self_index is not None:
        scores = scores.astype(np.result_type(scores.dtype, np.float32), copy=True)
        scores[rows, self_index] = -np.inf
    if tie_key is not None:
        tie_key = np.broadcast_to(tie_key, scores.shape)

    # Select exactly `top` columns per row without sorting whole rows: everything above the top-th largest value,
    # then the items equal to it that come first in the tie order.
    threshold = np.partition(scores, num_items - top, axis=1)[:, num_items - top]
    selected = scores > threshold[:, None]
    equal = scores == threshold[:, None]
    if self_index is not None:
        # The excluded item is -inf and could only tie with a -inf threshold.
        equal[rows, self_index] = False
    need = top - selected.sum(axis=1)
    tied = equal.sum(axis=1) > need
    if tied.any():
        if tie_key is None:
            ties = equal[tied]
            ties &= np.cumsum(ties, axis=1, dtype=np.int32) <= need[tied, None]
            equal[tied] = ties
        else:
            for row in np.flatnonzero(tied):
                columns = np.flatnonzero(equal[row])
                first = columns[np.argsort(tie_key[row, columns], kind="stable")[: need[row]]]
                equal[row] = False
                equal[row, first] = True
    selected |= equal

    # np.nonzero walks row by row in column order, so each row's `top` positions come out ascending and the
    # stable sorts keep lower positions first among equal keys.
    columns = np.nonzero(selected)[1].reshape(num_rows, top)
    best = -np.take_along_axis(scores, columns, axis=1)
    if tie_key is None:
        order = np.argsort(best, axis=1, kind="stable")
    else:
        order = np.lexsort((np.take_along_axis(tie_key, columns, axis=1), best), axis=-1)
    return np.take_along_axis(columns, order, axis=1)


__all__ = ["topk_indices"]
