"""The engine's public catalog API (`ids`, `position`, `positions`, `item_vectors`) and its exact batched rankings
(`item_queries`, `item_rankings`, `fused_scores`) against brute force on 300 real items; evaluation ranks through
them."""

import numpy as np
import pytest

from modeling.retrieval.engine import exact_ranking as ranking
from modeling.retrieval.engine.search import DEFAULT_QUERY_EXPANSION, QueryError, top_k_order
from modeling.retrieval.engine import batch


def _brute_force_item_ranking(vectors: np.ndarray, position: int, depth: int, expansion: int):
    """One item's "more like this" by hand: its `expansion` nearest other items join it weighted by their cosine
    (α = 1), then every other item is ranked by cosine to that query. (query, scores, ranking)."""
    own = vectors[position]
    cosines = vectors @ own
    cosines[position] = -np.inf
    nearest = np.argsort(-cosines, kind="stable")[:expansion]
    query = own + (np.clip(cosines[nearest], 0, None)[:, None] * vectors[nearest]).sum(0)
    query = query / np.linalg.norm(query)
    scores = vectors @ query
    scores[position] = -np.inf
    return query, scores, np.argsort(-scores, kind="stable")[:depth]


def test_ids_and_positions_round_trip(small_engine):
    engine = small_engine
    ids = engine.ids
    assert isinstance(ids, tuple) and len(ids) == len(engine.index) == 300
    assert list(ids) == engine.index.items["id"].astype(str).tolist()
    assert all(engine.position(item_id) == i for i, item_id in enumerate(ids))
    np.testing.assert_array_equal(engine.positions(ids), np.arange(len(ids)))
    assert engine.positions([]).dtype == np.int64 and engine.positions([]).size == 0
    numeric = next(item_id for item_id in ids if item_id.isdigit())
    assert engine.position(int(numeric)) == ids.index(numeric)  # ids compare as strings
    with pytest.raises(AttributeError):
        engine.ids = ()  # read-only


def test_unknown_id_is_a_clear_error(small_engine):
    engine = small_engine
    with pytest.raises(QueryError, match="No item with id 'no-such-item' in this catalog"):
        engine.position("no-such-item")
    with pytest.raises(QueryError, match="no-such-item"):
        engine.positions([engine.ids[0], "no-such-item"])


def test_item_vectors_are_the_stored_unit_vectors_read_only(small_engine):
    engine = small_engine
    vectors = engine.item_vectors()
    np.testing.assert_array_equal(vectors, engine.index.vectors.reconstruct_batch(np.arange(len(engine.ids))))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(engine.item_vectors([4, 2]), vectors[[4, 2]])
    with pytest.raises(ValueError):
        vectors[0, 0] = 1.0


def test_item_rankings_equal_a_brute_force_ranking_with_expansion(small_engine):
    engine = small_engine
    vectors = engine.item_vectors()
    top = batch.item_rankings(engine, depth=10)
    queries = batch.item_queries(engine)
    assert top.shape == (300, 10) and top.dtype == np.int64
    identical = 0
    for position in range(len(vectors)):
        query, scores, expected = _brute_force_item_ranking(vectors, position, 10, DEFAULT_QUERY_EXPANSION)
        np.testing.assert_allclose(queries[position], query, atol=1e-5)
        assert position not in top[position] and len(set(top[position])) == 10
        # The same ranking up to near-ties (matrix and vector products round differently): equal scores in order.
        np.testing.assert_allclose(scores[top[position]], scores[expected], atol=1e-5)
        identical += np.array_equal(top[position], expected)
    assert identical >= 0.95 * len(vectors)


def test_item_rankings_are_search_item_without_filters(plain_engine):
    engine = plain_engine
    top = batch.item_rankings(engine, depth=10)
    queries = batch.item_queries(engine)
    vectors = engine.item_vectors()
    for position in (0, 11, 42, 299):
        results = engine.search_item(engine.ids[position], k=10)
        # FAISS and numpy round differently: identical scores in the same order, nearly the same items.
        np.testing.assert_allclose(vectors[top[position]] @ queries[position], [r.score for r in results], atol=1e-5)
        assert len(set(top[position]) & set(engine.positions(r.id for r in results))) >= 8


def test_item_rankings_options(small_engine):
    engine = small_engine
    vectors = engine.item_vectors()
    full = batch.item_rankings(engine, depth=10)
    subset = batch.item_rankings(engine, [42, 7], depth=10)
    queries = batch.item_queries(engine, [42, 7])
    for row, position in enumerate((42, 7)):
        np.testing.assert_allclose(vectors[subset[row]] @ queries[row], vectors[full[position]] @ queries[row],
                                   atol=1e-6)
    # Without expansion: plain cosine to the item's own vector.
    plain = batch.item_rankings(engine, depth=5, expansion=0)
    np.testing.assert_array_equal(batch.item_queries(engine, expansion=0), vectors)
    for position in (3, 150):
        scores = vectors @ vectors[position]
        scores[position] = -np.inf
        np.testing.assert_allclose(scores[plain[position]], np.sort(scores)[::-1][:5], atol=1e-6)
    # Deeper than the catalog: every other item once.
    everything = batch.item_rankings(engine, [0], depth=1000)
    assert everything.shape == (1, 299) and sorted(everything[0]) == list(range(1, 300))
    with pytest.raises(QueryError, match="expansion"):
        batch.item_rankings(engine, expansion=-1)
    with pytest.raises(QueryError, match="at least 1"):
        batch.item_rankings(engine, depth=0)


def test_rankings_without_an_engine_are_the_engines(small_engine):
    """Features without a model (evaluation's baselines) are ranked by the same function over their vectors."""
    engine = small_engine
    np.testing.assert_array_equal(ranking.item_rankings(engine.item_vectors(), depth=10),
                                  batch.item_rankings(engine, depth=10))


def test_rank_excluding_breaks_ties_by_catalog_order():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    top = ranking.rank_excluding(vectors, vectors, np.arange(5), depth=4)
    np.testing.assert_array_equal(top, [[3, 1, 2, 4], [2, 4, 0, 3], [1, 4, 0, 3], [0, 1, 2, 4], [1, 2, 0, 3]])


def test_fused_scores_are_what_search_text_ranks_by(small_engine):
    engine = small_engine
    query = "black casual shoes for men"
    scores = batch.fused_scores(engine, query)
    weight, lexical_weight = engine.text_weight, engine.lexical_weight
    expected = (1 - weight) * scores["visual"] + weight * (scores["text"] + lexical_weight * scores["lexical"])
    np.testing.assert_allclose(scores["score"], expected + scores["intent"], atol=1e-6)  # plus the intent boosts
    np.testing.assert_allclose(scores["text"], engine.index.text_embeddings @ engine.sentence_encoder.encode([query])[0],
                               atol=1e-5)
    assert 0.0 <= scores["lexical"].min() and scores["lexical"].max() <= 1.0
    assert scores["intent"].max() > 0  # black, casual shoes and men are all catalog values
    order = top_k_order(scores["score"], np.arange(len(engine.ids)), 10)
    results = engine.search_text(query, k=10, collapse=False)
    assert [r.id for r in results] == [engine.ids[p] for p in order]
    np.testing.assert_allclose([r.score for r in results], scores["score"][order], atol=1e-6)
    visual_only = batch.fused_scores(engine, query, text_weight=0.0)
    assert visual_only["text"] is None and visual_only["lexical"] is None
    order = top_k_order(visual_only["score"], np.arange(len(engine.ids)), 10)
    np.testing.assert_allclose([r.score for r in engine.search_text(query, k=10, text_weight=0.0)],
                               visual_only["score"][order], atol=1e-5)
    with pytest.raises(QueryError):
        batch.fused_scores(engine, "   ")
