import math

import numpy as np
import pytest

from modeling.evaluation.metrics import (
    hit_at_k,
    ndcg_at_k,
    precision_at_k,
    ranked_relevance,
    reciprocal_rank,
)
from modeling.evaluation.tasks import (
    group_by_text,
    image_to_image_metrics,
    text_to_image_metrics,
)


# -- brute-force references: sort every ranking with Python's sorted(), ties by lower position --------------------
def ref_ranking(row, exclude=None):
    return sorted((j for j in range(len(row)) if j != exclude), key=lambda j: (-row[j], j))


def ref_topk(scores, relevance, k, exclude_self=False):
    out = []
    for q, row in enumerate(scores.tolist()):
        ranking = ref_ranking(row, q if exclude_self else None)[:k]
        out.append([bool(relevance[q][j]) for j in ranking] + [False] * (k - len(ranking)))
    return out


def ref_precision(rel_topk, k):
    return [sum(rel[:k]) / k for rel in rel_topk]


def ref_hit(rel_topk, k):
    return [float(any(rel[:k])) for rel in rel_topk]


def ref_reciprocal_rank(scores, relevance, exclude_self=False):
    out = []
    for q, row in enumerate(scores.tolist()):
        ranking = ref_ranking(row, q if exclude_self else None)
        ranks = [rank for rank, j in enumerate(ranking, start=1) if relevance[q][j]]
        out.append(1 / ranks[0] if ranks else 0.0)
    return out


def ref_ndcg(rel_topk, n_relevant, k):
    out = []
    for rel, n in zip(rel_topk, n_relevant):
        if n == 0:
            out.append(math.nan)
            continue
        dcg = sum(1 / math.log2(i + 2) for i, r in enumerate(rel[:k]) if r)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(k, n)))
        out.append(dcg / ideal)
    return out


def exact_unit_vectors(rng, n, dim=8, distinct=None):
    """Unit vectors with four +-0.5 entries: every dot product is a multiple of 0.25, exact in float32 whatever
    the summation order, so chunked and brute-force scores tie exactly where they should."""
    count = distinct or n
    vectors = np.zeros((count, dim), dtype=np.float32)
    for row in vectors:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return vectors if distinct is None else vectors[rng.integers(0, count, n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_ranked_metrics_match_brute_force(seed, exclude_self):
    rng = np.random.default_rng(seed)
    n = 23
    # Few distinct values: plenty of ties.
    scores = rng.integers(0, 4, (n, n)).astype(np.float32)
    relevance = rng.random((n, n)) < 0.2
    relevance[0] = False  # a query without relevant items
    for k in (1, 3, 10, n - 1, n, n + 5):
        rel_topk = ranked_relevance(scores, relevance, k, exclude_self=exclude_self)
        expected = ref_topk(scores, relevance, k, exclude_self)
        assert rel_topk.shape == (n, k) and rel_topk.dtype == bool
        assert rel_topk.tolist() == expected
        np.testing.assert_allclose(precision_at_k(rel_topk, k), ref_precision(expected, k))
        np.testing.assert_allclose(hit_at_k(rel_topk, k), ref_hit(expected, k))
        n_relevant = relevance.sum(axis=1) - (relevance.diagonal() if exclude_self else 0)
        np.testing.assert_allclose(ndcg_at_k(rel_topk, n_relevant, k), ref_ndcg(expected, n_relevant, k))
        # A shorter prefix of a deeper ranking gives the same precision.
        np.testing.assert_allclose(precision_at_k(rel_topk, 1), ref_precision(expected, 1))
    np.testing.assert_allclose(
        reciprocal_rank(scores, relevance, exclude_self), ref_reciprocal_rank(scores, relevance, exclude_self)
    )


def test_ranked_relevance_rectangular_and_continuous_scores():
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((7, 40))
    relevance = rng.random((7, 40)) < 0.3
    assert ranked_relevance(scores, relevance, 12).tolist() == ref_topk(scores, relevance, 12)
    np.testing.assert_allclose(reciprocal_rank(scores, relevance), ref_reciprocal_rank(scores, relevance))


def test_ties_break_by_lower_position():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]])
    relevance = np.array([[False, False, True, True, False]])
    assert ranked_relevance(scores, relevance, 2).tolist() == [[False, True]]
    np.testing.assert_allclose(reciprocal_rank(scores, relevance), [0.5])


def test_ndcg_hand_computed():
    rel = np.array([[True, False, True], [False, True, False], [False, False, False]])
    n_relevant = np.array([3, 1, 0])
    ndcg = ndcg_at_k(rel, n_relevant, 3)
    # Query 0: DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) + 1/log2(4) = 2.1309...
    assert ndcg[0] == pytest.approx(1.5 / (1 + 1 / math.log2(3) + 0.5))
    # Query 1: the only relevant item at rank 2; ideal puts it at rank 1.
    assert ndcg[1] == pytest.approx(1 / math.log2(3))
    assert math.isnan(ndcg[2])
    assert ndcg_at_k(rel, n_relevant, 1)[0] == pytest.approx(1.0)


def test_invalid_inputs():
    with pytest.raises(ValueError):
        ranked_relevance(np.zeros((0, 5)), np.zeros((0, 5), dtype=bool), 3)
    with pytest.raises(ValueError):
        ranked_relevance(np.zeros((2, 5)), np.zeros((2, 5), dtype=bool), 0)
    with pytest.raises(ValueError):
        ranked_relevance(np.zeros((2, 5)), np.zeros((2, 5), dtype=bool), 3, exclude_self=True)
    with pytest.raises(ValueError):
        precision_at_k(np.zeros((2, 3), dtype=bool), 5)
    with pytest.raises(ValueError):
        image_to_image_metrics(np.zeros((0, 4)), {"articleType": [], "baseColour": []})
    with pytest.raises(ValueError):
        image_to_image_metrics(np.ones((3, 4)), {"articleType": ["a", "b", "c"]})
    with pytest.raises(ValueError):
        text_to_image_metrics(np.zeros((0, 4)), np.ones((3, 4)), [])
    with pytest.raises(ValueError):
        text_to_image_metrics(np.ones((1, 4)), np.ones((3, 4)), [np.array([3])])


def ref_image_to_image(embeddings, article, colour, k):
    scores = (embeddings @ embeddings.T).tolist()
    p, top1, p_colour = [], [], []
    for q in range(len(embeddings)):
        ranking = ref_ranking(scores[q], q)[:k]
        p.append(sum(article[j] == article[q] for j in ranking) / k)
        p_colour.append(sum(article[j] == article[q] and colour[j] == colour[q] for j in ranking) / k)
        top1.append(article[ranking[0]] == article[q])
    return {f"p@{k}": np.mean(p), "top1": np.mean(top1), f"p@{k}_colour": np.mean(p_colour)}


@pytest.mark.parametrize("k", [1, 5, 10, 200])
def test_image_to_image_metrics(k):
    rng = np.random.default_rng(k)
    n = 150
    # 30 distinct vectors for 150 items: many exact ties.
    embeddings = exact_unit_vectors(rng, n, distinct=30)
    labels = {
        "articleType": rng.choice(["Tshirts", "Shirts", "Jeans", "Watches"], n),
        "baseColour": rng.choice(["Red", "Blue", "Black"], n),
    }
    expected = ref_image_to_image(embeddings, labels["articleType"].tolist(), labels["baseColour"].tolist(), k)
    unchunked = image_to_image_metrics(embeddings, labels, k=k, chunk=10_000)
    assert set(unchunked) == {f"p@{k}", "top1", f"p@{k}_colour"}
    for key, value in expected.items():
        assert unchunked[key] == pytest.approx(value)
    for chunk in (1, 7, 64):
        assert image_to_image_metrics(embeddings, labels, k=k, chunk=chunk) == unchunked
    # Embeddings are normalised inside: scaling changes nothing.
    assert image_to_image_metrics(embeddings * 4, labels, k=k) == pytest.approx(unchunked)


def ref_text_to_image(queries, gallery, relevant, ks):
    scores = (queries @ gallery.T).tolist()
    hits = {k: [] for k in ks}
    reciprocal = []
    for q, row in enumerate(scores):
        ranking = ref_ranking(row)
        ranks = [rank for rank, j in enumerate(ranking, start=1) if j in set(relevant[q].tolist())]
        for k in ks:
            hits[k].append(bool(ranks) and ranks[0] <= k)
        reciprocal.append(1 / ranks[0] if ranks else 0.0)
    return {**{f"r@{k}": np.mean(hits[k]) for k in ks}, "mrr": np.mean(reciprocal)}


@pytest.mark.parametrize("seed", [0, 1])
def test_text_to_image_metrics(seed):
    rng = np.random.default_rng(seed)
    gallery = exact_unit_vectors(rng, 60, distinct=25)
    queries = exact_unit_vectors(rng, 40)
    relevant = [rng.choice(60, rng.integers(0, 4), replace=False) for _ in range(40)]
    ks = (1, 5, 10, 100)
    expected = ref_text_to_image(queries, gallery, relevant, ks)
    metrics = text_to_image_metrics(queries, gallery, relevant, ks=ks, chunk=1024)
    assert set(metrics) == {"r@1", "r@5", "r@10", "r@100", "mrr"}
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value)
    assert text_to_image_metrics(queries, gallery, relevant, ks=ks, chunk=3) == metrics

    matrix = np.zeros((40, 60), dtype=bool)
    for q, positions in enumerate(relevant):
        matrix[q, positions] = True
    assert text_to_image_metrics(queries, gallery, matrix, ks=ks, chunk=7) == metrics


def test_group_by_text():
    texts, positions = group_by_text(["  Red  Shirt", "red shirt", "", None, "Blue\tJeans", " ", "RED SHIRT\n"])
    assert texts == ["red shirt", "blue jeans"]
    assert [p.tolist() for p in positions] == [[0, 1, 6], [4]]
    assert all(p.dtype == np.int64 for p in positions)
    assert group_by_text([]) == ([], [])
