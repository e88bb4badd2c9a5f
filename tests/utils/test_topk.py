"""The one top-k with tie-breaking (`modeling.utils.topk`) against a brute-force full sort (`np.lexsort`)."""

import numpy as np
import pytest

from modeling.utils.topk import topk_indices


def tied_scores(rng, rows, columns):
    """Few distinct values, so most rows hold ties at the k-th score (and -inf, which ties too)."""
    scores = rng.integers(0, 5, size=(rows, columns)).astype(np.float32) / 4
    scores[rng.random((rows, columns)) < 0.05] = -np.inf
    return scores


@pytest.mark.parametrize("k", [1, 3, 10, 39, 40, 41])
@pytest.mark.parametrize("seed", [0, 1])
def test_topk_matches_lexsort_with_ties(k, seed):
    rng = np.random.default_rng(seed)
    scores = tied_scores(rng, 12, 40)
    expected = np.lexsort((np.broadcast_to(np.arange(40), scores.shape), -scores), axis=-1)[:, :k]
    np.testing.assert_array_equal(topk_indices(scores, k), expected)

    # A tie key (e.g. catalog positions of candidates listed in another order) decides among equal scores.
    key = np.stack([rng.permutation(1000)[:40] for _ in range(12)])
    np.testing.assert_array_equal(topk_indices(scores, k, tie_key=key),
                                  np.lexsort((key, -scores), axis=-1)[:, :k])
    # Repeated keys fall back to the lower column, as a stable lexsort does.
    repeated = key // 300
    np.testing.assert_array_equal(topk_indices(scores, k, tie_key=repeated),
                                  np.lexsort((repeated, -scores), axis=-1)[:, :k])


@pytest.mark.parametrize("k", [1, 5, 29, 30])
def test_topk_leaves_out_each_rows_own_column(k):
    rng = np.random.default_rng(k)
    scores = tied_scores(rng, 30, 30)
    got = topk_indices(scores, k, self_index=np.arange(30))
    for row in range(30):
        others = np.array([j for j in range(30) if j != row])
        expected = others[np.lexsort((others, -scores[row, others]))][:k]
        np.testing.assert_array_equal(got[row], expected)


def test_topk_edges():
    scores = np.array([[0.5, 0.5, 1.0]])
    assert topk_indices(scores, 0).shape == (1, 0)
    np.testing.assert_array_equal(topk_indices(scores, 10), [[2, 0, 1]])  # k beyond the row: the whole row
    assert topk_indices(np.zeros((2, 1)), 3, self_index=np.array([0, 0])).shape == (2, 0)
    np.testing.assert_array_equal(topk_indices(scores, 2, tie_key=np.array([9, 3, 0])), [[2, 1]])
