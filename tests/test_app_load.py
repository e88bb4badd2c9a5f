"""Batched serving: concurrent text queries are encoded together and answer exactly what one query at a time does."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from modeling.serving.batching import TextQueryBatcher
from modeling.serving.service import SearchService
from modeling.serving.registry import EngineRegistry

QUERIES = [f"{colour} {item}" for colour in ("red", "black", "white", "blue", "green", "pink", "grey", "brown")
           for item in ("shirt", "dress", "watch", "shoes")]


def test_batcher_encodes_concurrent_queries_together_and_each_once():
    batches, started = [], threading.Event()

    def encode(queries):
        batches.append(list(queries))
        if len(batches) == 1:  # the first pass is slow: the other callers queue up behind it
            started.set()
            time.sleep(0.2)

    batcher = TextQueryBatcher(encode, max_batch=16)
    with ThreadPoolExecutor(len(QUERIES)) as pool:
        first = pool.submit(batcher.prepare, QUERIES[0])
        started.wait(5)
        rest = list(pool.map(batcher.prepare, QUERIES[1:]))
        first.result()
    assert rest == [None] * (len(QUERIES) - 1)
    encoded = [q for batch in batches for q in batch]
    assert sorted(encoded) == sorted(QUERIES)  # every query once
    assert batches[0] == [QUERIES[0]] and max(len(b) for b in batches) == 16 and len(batches) <= 4
    assert batcher.batches == len(batches) and batcher.encoded == len(QUERIES)


def test_a_failing_pass_lets_every_caller_go_on(caplog):
    def encode(queries):
        raise RuntimeError("encoder on fire")

    batcher = TextQueryBatcher(encode)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(batcher.prepare, QUERIES[:8])) == [None] * 8
    assert "encoder on fire" in caplog.text
    with pytest.raises(ValueError, match="max_batch"):
        TextQueryBatcher(encode, max_batch=0)


def _empty_query_cache(engine, monkeypatch):
    """Batched and single encodings must not share cached embeddings: each run starts from an empty cache."""
    monkeypatch.setattr(engine.encoder, "cache", type(engine.encoder.cache)(4096))


@pytest.fixture
def fresh_engine(small_engine, monkeypatch):
    _empty_query_cache(small_engine, monkeypatch)
    return small_engine


def test_batched_answers_equal_one_query_at_a_time(fresh_engine, monkeypatch):
    one_by_one = {q: fresh_engine.search_text(q, k=8) for q in QUERIES}
    _empty_query_cache(fresh_engine, monkeypatch)
    service = SearchService(EngineRegistry.from_engines({"tiny": fresh_engine}), max_batch=32)
    passes = []
    stock = fresh_engine.prepare_text_queries

    threads = set()

    def prepare(queries):  # slow first pass, so the concurrent queries really are batched
        passes.append(len(queries))
        threads.add(threading.current_thread().name)
        if len(passes) == 1:
            time.sleep(0.3)
        return stock(queries)

    monkeypatch.setattr(fresh_engine, "prepare_text_queries", prepare)
    with ThreadPoolExecutor(len(QUERIES)) as pool:
        answers = dict(zip(QUERIES, pool.map(lambda q: service.text(q, 8).data, QUERIES)))
    assert max(passes) > 1 and sum(passes) == len(QUERIES) and len(passes) < len(QUERIES)
    assert threads == {"query-encoder-tiny"}  # torch runs on one thread, whichever request threads call
    for query, expected in one_by_one.items():
        got = answers[query]["results"]
        assert [r["id"] for r in got] == [r.id for r in expected], query
        np.testing.assert_allclose([r["score"] for r in got], [r.score for r in expected], atol=1e-5)
        np.testing.assert_allclose([r["vsc"] for r in got], [r.vsc for r in expected], atol=1e-5)


def test_load_benchmark_workload_is_distinct():
    """The load benchmark sends each text query and item once (no cache hits flatter the figures)."""
    from benchmarks.app_load import Workload, distinct_queries

    queries = distinct_queries()
    assert len(queries) == len(set(queries)) > 15_000
    work = Workload(queries, [str(i) for i in range(100)], k=10)
    sent = [work.next() for _ in range(100)]
    texts = [f["query"] for e, f in sent if e == "search_text"]
    items = [f["item_id"] for e, f in sent if e == "similar_items"]
    assert len(texts) == len(set(texts)) == 50 and len(items) == len(set(items)) == 50
