"""General ranking metrics (graded and binary) against brute-force pure-Python references."""

import math

import numpy as np
import pytest

from modeling.evaluation.metrics import ranking_metrics

KS = (1, 3, 5, 10)
METRICS = ("recall", "hit", "precision", "map", "ndcg")


# -- brute-force references: every ranking by sorted(), higher score first, ties by lower gallery position ----------
def ref_ranking(row, excluded=()):
    return sorted((j for j in range(len(row)) if j not in excluded), key=lambda j: (-row[j], j))


def ref_query(ranked_gains, relevant_gains, ks, depth=None):
    """Per-query metrics of one ranking: `ranked_gains` in ranking order, `relevant_gains` the gains of all the
    query's relevant items; `depth` truncates the ranking seen by MRR (None: the full ranking)."""
    n_rel = len(relevant_gains)
    ideal = sorted(relevant_gains, reverse=True)
    out = {}
    for k in ks:
        top = ranked_gains[:k]
        hits = sum(1 for g in top if g > 0)
        out[f"recall@{k}"] = hits / n_rel if n_rel else math.nan
        out[f"hit@{k}"] = float(hits > 0)
        out[f"precision@{k}"] = hits / k
        seen, ap = 0, 0.0
        for i, g in enumerate(top, start=1):
            if g > 0:
                seen += 1
                ap += seen / i
        out[f"map@{k}"] = ap / min(k, n_rel) if n_rel else math.nan
        dcg = sum(g / math.log2(i + 1) for i, g in enumerate(top, start=1))
        idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal[:k], start=1))
        out[f"ndcg@{k}"] = dcg / idcg if n_rel else math.nan
    seen_ranks = ranked_gains if depth is None else ranked_gains[:depth]
    ranks = [i for i, g in enumerate(seen_ranks, start=1) if g > 0]
    out["mrr"] = 1 / ranks[0] if ranks else 0.0
    return out


def ref_means(per_query, ks):
    defined = [i for i, values in enumerate(per_query) if not math.isnan(values[f"recall@{ks[0]}"])]
    out = {}
    for name in METRICS:
        for k in ks:
            column = [values[f"{name}@{k}"] for values in per_query]
            if name in ("recall", "map", "ndcg"):
                column = [column[i] for i in defined]
            out[f"{name}@{k}"] = sum(column) / len(column) if column else math.nan
    out["mrr"] = sum(values["mrr"] for values in per_query) / len(per_query)
    out["num_queries"] = len(per_query)
    out["num_queries_without_relevant"] = len(per_query) - len(defined)
    return out


def assert_matches(metrics, values, per_query_ref, ks):
    expected = ref_means(per_query_ref, ks)
    assert list(metrics) == list(expected)  # same keys, grouped by metric
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(metrics[key]), key
        else:
            assert metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    for key, column in values.items():
        np.testing.assert_allclose(column, [v[key] for v in per_query_ref], rtol=1e-12, atol=1e-12, err_msg=key)


def tied_scores(rng, q, n):
    # Rounded to one decimal over a narrow range: many exact ties.
    return np.round(rng.random((q, n)) * 0.6, 1)


def graded_relevance(rng, q, n):
    gains = rng.choice([0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0], size=(q, n))
    gains[0] = 0.0  # a query without any relevant item
    return gains


def _ranked(scores, relevance):
    """The relevance of each row's items in ranking order (higher score first, ties by lower position)."""
    return np.array([[relevance[q][j] for j in ref_ranking(row)] for q, row in enumerate(scores.tolist())])


def test_no_relevant_queries():
    scores = np.arange(12.0).reshape(3, 4)
    relevance = np.zeros((3, 4))
    relevance[2, 0] = 2.0  # ranked last of 4
    metrics = ranking_metrics(_ranked(scores, relevance), np.array([0, 0, 1]), (1, 4), [[], [], [2.0]])
    assert metrics["num_queries"] == 3 and metrics["num_queries_without_relevant"] == 2
    # recall/mAP/nDCG over query 2 only; hit/precision/MRR over all three.
    assert metrics["recall@1"] == 0.0 and metrics["recall@4"] == 1.0
    assert metrics["map@4"] == pytest.approx(0.25) and metrics["ndcg@4"] == pytest.approx(1 / math.log2(5))
    assert metrics["hit@4"] == pytest.approx(1 / 3) and metrics["precision@4"] == pytest.approx(1 / 12)
    assert metrics["mrr"] == pytest.approx(0.25 / 3)
    nothing = ranking_metrics(_ranked(scores, np.zeros((3, 4), dtype=bool)), np.zeros(3, dtype=int), (1,))
    assert math.isnan(nothing["recall@1"]) and math.isnan(nothing["ndcg@1"]) and nothing["hit@1"] == 0.0
    assert nothing["num_queries_without_relevant"] == 3


def _same(a, b):
    return list(a) == list(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a.values(), b.values()))


# -- ranking_metrics ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("graded", [True, False])
def test_ranking_metrics_match_brute_force(graded):
    rng = np.random.default_rng(5)
    q, n, depth = 15, 25, 12  # depth > max(KS): MRR sees 12 ranks
    scores = tied_scores(rng, q, n)
    gains = graded_relevance(rng, q, n)
    if not graded:
        gains = (gains > 0).astype(float)
    rankings = [ref_ranking(row) for row in scores.tolist()]
    gains_topk = np.array([[gains[i, j] for j in ranking[:depth]] for i, ranking in enumerate(rankings)])
    num_relevant = (gains > 0).sum(axis=1)
    ideal = [gains[i][gains[i] > 0] for i in range(q)] if graded else None
    metrics, values = ranking_metrics(gains_topk > 0 if not graded else gains_topk, num_relevant, KS, ideal,
                                      per_query=True)
    reference = [ref_query([gains[i, j] for j in ranking], gains[i][gains[i] > 0].tolist(), KS, depth=depth)
                 for i, ranking in enumerate(rankings)]
    assert_matches(metrics, values, reference, KS)
    # Ideal gains in any order, with zeros mixed in, give the same result.
    if graded:
        shuffled = [np.concatenate([rng.permutation(g), [0.0]]) for g in ideal]
        assert _same(ranking_metrics(gains_topk, num_relevant, KS, shuffled), metrics)


# -- hand-computed ---------------------------------------------------------------------------------------------------
def test_hand_computed_graded_query():
    # One query; ranked gains [2, 0, 3, 0]; its relevant items have gains {3, 2, 1} (the gain-1 item is not in the
    # top 4), so num_relevant = 3.
    #   recall@1 = 1/3, recall@2 = 1/3, recall@4 = 2/3; precision@1 = 1, @2 = 1/2, @4 = 2/4
    #   AP@1 = (1/1) / min(1, 3) = 1;  AP@2 = (1/1) / min(2, 3) = 1/2;  AP@4 = (1/1 + 2/3) / min(4, 3) = 5/9
    #   DCG@1 = 2                      IDCG@1 = 3                          nDCG@1 = 2/3
    #   DCG@2 = 2                      IDCG@2 = 3 + 2/log2(3) = 4.261860   nDCG@2 = 0.469278
    #   DCG@4 = 2 + 3/log2(4) = 3.5    IDCG@4 = 4.261860 + 1/log2(4) = 4.761860   nDCG@4 = 0.735007
    #   MRR = 1
    metrics = ranking_metrics(np.array([[2, 0, 3, 0]]), np.array([3]), (1, 2, 4), [np.array([1, 3, 2])])
    expected = {
        "recall@1": 1 / 3, "recall@2": 1 / 3, "recall@4": 2 / 3,
        "precision@1": 1.0, "precision@2": 0.5, "precision@4": 0.5,
        "map@1": 1.0, "map@2": 0.5, "map@4": 5 / 9,
        "ndcg@1": 2 / 3, "ndcg@2": 0.469278, "ndcg@4": 0.735007,
        "hit@1": 1.0, "hit@2": 1.0, "hit@4": 1.0, "mrr": 1.0,
        "num_queries": 1, "num_queries_without_relevant": 0,
    }
    assert metrics == pytest.approx(expected, abs=1e-6)
    assert 3.5 / (3 + 2 / math.log2(3) + 0.5) == pytest.approx(0.735007, abs=1e-6)


def test_hand_computed_binary_query():
    # Ranked relevance [0, 1, 0, 1], 3 relevant items: AP@4 = (1/2 + 2/4) / 3 = 1/3;
    # nDCG@4 = (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3) + 1/log2(4)) = 1.061606 / 2.130930 = 0.498189; MRR = 1/2.
    metrics = ranking_metrics(np.array([[False, True, False, True]]), np.array([3]), (4,))
    assert metrics["map@4"] == pytest.approx(1 / 3)
    assert metrics["ndcg@4"] == pytest.approx(0.498189, abs=1e-6)
    assert metrics["mrr"] == 0.5 and metrics["recall@4"] == pytest.approx(2 / 3) and metrics["precision@4"] == 0.5


# -- validation ------------------------------------------------------------------------------------------------------
def test_ranking_metrics_invalid_inputs():
    ok = np.array([[1, 0, 1]])
    ranking_metrics(ok, np.array([2]), (1, 3))
    with pytest.raises(ValueError, match="ranks"):
        ranking_metrics(ok, np.array([2]), (5,))  # depth < max(ks)
    with pytest.raises(ValueError):
        ranking_metrics(np.array([1, 0, 1]), np.array([2]), (1,))  # not 2-D
    with pytest.raises(ValueError):
        ranking_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int), (1,))
    with pytest.raises(ValueError, match="negative"):
        ranking_metrics(np.array([[1, -1, 0]]), np.array([1]), (1,))
    with pytest.raises(ValueError, match="smaller"):
        ranking_metrics(ok, np.array([1]), (1,))
    with pytest.raises(ValueError):
        ranking_metrics(ok, np.array([2, 2]), (1,))  # wrong shape
    with pytest.raises(ValueError):
        ranking_metrics(ok, np.array([2.0]), (1,))  # not integer
    with pytest.raises(ValueError, match="graded"):
        ranking_metrics(np.array([[2.0, 0.0, 1.0]]), np.array([2]), (1,))
    with pytest.raises(ValueError):
        ranking_metrics(np.array([[2.0, 0.0, 1.0]]), np.array([2]), (1,), [np.array([2.0])])  # count mismatch
    with pytest.raises(ValueError):
        ranking_metrics(np.array([[2.0, 0.0, 1.0]]), np.array([2]), (1,), [np.array([1.0, 1.0])])  # 2 not ideal
    with pytest.raises(ValueError):
        ranking_metrics(np.array([[2.0, 0.0, 1.0]]), np.array([2]), (1,), [])  # one entry per query
    with pytest.raises(ValueError):
        ranking_metrics(np.array([[np.nan, 0.0, 1.0]]), np.array([2]), (1,), [np.array([1.0, 1.0])])
    with pytest.raises(ValueError):
        ranking_metrics(ok, np.array([2]), ())
    with pytest.raises(ValueError):
        ranking_metrics(ok, np.array([2]), (0,))
