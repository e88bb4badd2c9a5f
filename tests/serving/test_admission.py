"""Admission control: every queue of the served search is bounded, and a request over a bound is refused at once
(`Overloaded`: 503 with Retry-After on the JSON routes, the same message on the Gradio endpoints) before any work."""

import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modeling.serving.admission import BUSY, Gate, Overloaded, PacedGate
from modeling.serving.batching import TextQueryBatcher
from modeling.serving.endpoints import ENDPOINTS, gradio_function
from modeling.serving.http import app_kwargs
from modeling.serving.registry import EngineRegistry
from modeling.serving.service import SearchService


def test_a_gate_refuses_past_its_limit_and_frees_its_places():
    gate = Gate(2)
    gate.enter()
    with gate.admitted():
        with pytest.raises(Overloaded, match="busy"):
            gate.enter()
    gate.enter()  # the place the context freed
    assert gate.held == 2 and gate.refused == 1
    gate.leave()
    gate.leave()
    assert gate.held == 0
    with pytest.raises(ValueError):
        Gate(0)


def test_a_paced_gate_takes_what_it_serves_within_its_budget():
    now = [0.0]
    gate = PacedGate(64, floor=4, budget_s=0.5, window_s=1.0, clock=lambda: now[0])
    assert gate.current_limit() == 4  # nothing served yet: the floor
    for _ in range(4):
        gate.enter()
    with pytest.raises(Overloaded):
        gate.enter()
    for _ in range(40):  # 40 answered within the last second: 40/s x 0.5 s = 20 at once
        gate.held += 1
        gate.leave()
    assert gate.current_limit() == 20
    now[0] = 0.5
    for _ in range(16):
        gate.enter()
    with pytest.raises(Overloaded):
        gate.enter()
    now[0] = 5.0  # a quiet spell: the rate is forgotten, the floor stays
    assert gate.current_limit() == 4
    for _ in range(1000):
        gate.held += 1
        gate.leave()
    assert gate.current_limit() == 64  # never over its limit


def test_a_paced_gate_counts_only_completed_work():
    # cheap refusals (an unknown model, a full search queue) must not raise the limit: only answered requests count
    gate = PacedGate(64, floor=4, budget_s=0.5, window_s=1.0, clock=lambda: 0.0)
    for _ in range(100):
        with pytest.raises(ValueError):
            with gate.admitted():
                raise ValueError("Unknown model 'nope'")
    assert gate.held == 0 and gate.current_limit() == 4
    for _ in range(40):
        with gate.admitted():
            pass
    assert gate.held == 0 and gate.current_limit() == 20


def test_the_batchers_pending_list_is_bounded():
    release, started = threading.Event(), threading.Event()

    def encode(queries):
        started.set()
        release.wait(10)

    batcher = TextQueryBatcher(encode, max_batch=2, max_pending=3)
    first = batcher.submit("q0")  # taken by the encoder thread: not pending any more
    assert started.wait(10)
    waiting = [batcher.submit(f"q{i}") for i in range(1, 4)]
    with pytest.raises(Overloaded):
        batcher.submit("one too many")
    release.set()
    for future in [first, *waiting]:
        assert future.result(10) is None
    batcher.submit("room again").result(10)
    assert batcher.encoded == 5


@pytest.fixture
def bounded(small_engine):
    registry = EngineRegistry.from_engines({"tiny-dual-encoder": small_engine})
    service = SearchService(registry, max_in_flight=2, search_slots=1, max_waiting=1, latency_budget_s=None)
    with TestClient(FastAPI(**app_kwargs(service)), base_url="http://localhost") as client:
        yield service, client


def test_a_full_service_answers_503_at_once_on_both_transports(bounded, small_engine):
    service, client = bounded
    item = str(small_engine.index.items["id"].iloc[3])
    assert client.post("/api/v1/search_text", json={"query": "red dress"}).status_code == 200
    with service.admission.admitted(), service.admission.admitted():  # two requests in: the service is full
        for name, body in [("search_text", {"query": "red dress"}), ("similar_items", {"item_id": item})]:
            response = client.post(f"/api/v1/{name}", json=body)
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert response.json() == {"error": BUSY}
            assert "content-security-policy" in response.headers
        with pytest.raises(Overloaded, match="busy"):
            gradio_function(ENDPOINTS["search_text"], service)("red dress")
    assert service.admission.held == 0 and service.admission.refused == 3
    assert client.post("/api/v1/similar_items", json={"item_id": item}).status_code == 200


def test_the_search_threads_queue_is_bounded(bounded, small_engine):
    service, client = bounded
    release = threading.Event()
    with ThreadPoolExecutor(2) as pool:  # one call on the search thread, one waiting for it: full
        blocked = [pool.submit(asyncio.run, service.run_async(release.wait, 10)) for _ in range(2)]
        for _ in range(200):
            if service.waiting.held == 2:
                break
            time.sleep(0.05)
        assert service.waiting.held == 2
        with pytest.raises(Overloaded):
            asyncio.run(service.run_async(release.wait, 10))
        response = client.post("/api/v1/similar_items", json={"item_id": str(small_engine.index.items["id"].iloc[1])})
        assert response.status_code == 503 and response.json() == {"error": BUSY}
        release.set()
        assert [f.result(10) for f in blocked] == [True, True]
    assert service.waiting.held == 0


def _nice() -> int:
    import os

    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_search_and_encoder_threads_run_below_the_event_loop(small_engine):
    """The loop that answers and refuses requests gets a core before the ranking and encoding threads."""
    registry = EngineRegistry.from_engines({"tiny-dual-encoder": small_engine})
    service = SearchService(registry, search_slots=1, worker_nice=5)
    own = _nice()
    assert asyncio.run(service.run_async(_nice)) == min(19, own + 5)
    batcher = TextQueryBatcher(lambda queries: None, on_start=service.lower_worker_priority)
    seen = []
    batcher.encode = lambda queries: seen.append(_nice())
    batcher.submit("red dress").result(10)
    assert seen == [min(19, own + 5)] and _nice() == own  # the caller's own thread is left as it was
    assert asyncio.run(SearchService(registry, search_slots=1, worker_nice=0).run_async(_nice)) == own
