"""The Qdrant backend (qdrant-client local mode) against the in-process engine on 300 real val items: same top-10 and
scores for text, image, composed, filtered and fused queries; idempotent, resumable builds; clear configuration
errors. Tests marked `qdrant_server` run against a real server at QDRANT_URL and are skipped without one."""

import inspect
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from modeling.data.text import item_description  # noqa: E402
from modeling.encoders.loading import load_model  # noqa: E402
from modeling.retrieval.backends.qdrant.ingest import build_collection, iter_catalog  # noqa: E402
from modeling.retrieval.common.lexical import BM25Index  # noqa: E402
from modeling.retrieval.backends.qdrant.store import (COMPLETE_KEY, KeywordStatistics, QdrantConfig,  # noqa: E402
                                                      QdrantStore, QdrantStoreError, check_collection, payload_boost,
                                                      point_id)
from modeling.retrieval.common.types import QueryError  # noqa: E402

ITEMS, BATCH = 300, 64  # small_engine's catalog: the first 300 val items
TOLERANCE = 1e-4


def _build(engine, model_dir, catalog_dir, client, config, **kwargs):
    model, _, processor = load_model(model_dir)
    return build_collection(model, processor, catalog_dir, config, model_info=engine.index.manifest["model"],
                            sentence_encoder=engine.sentence_encoder, batch_size=BATCH, split="val",
                            max_items=ITEMS, client=client, **kwargs)


@pytest.fixture(scope="module", params=["local", "edge"])
def store(request, small_engine, tiny_model_dir, catalog_dir, tmp_path_factory):
    """The collection built by the build code, in qdrant-client's local mode and on qdrant-edge shards (the real
    engine): every test taking `store` runs on both."""
    if request.param == "edge":
        pytest.importorskip("qdrant_edge")
    config = QdrantConfig(path=str(tmp_path_factory.mktemp("qdrant")), edge=request.param == "edge")
    client = config.connect()
    _build(small_engine, tiny_model_dir, catalog_dir, client, config)
    yield QdrantStore.open(config, small_engine.index.manifest["model"], small_engine.sentence_encoder.dim,
                           client=client)
    client.close()


class RankCalls:
    """Records the query vectors the engine's `_rank` receives, so the store ranks the very same queries; the
    engine then ranks by its base formula (no extra score terms, no near-duplicate collapsing), what `rank`
    computes without boosts."""

    def __init__(self, engine, monkeypatch):
        self.calls, original = [], engine._rank
        base = {"collapse": False} if "collapse" in inspect.signature(original).parameters else {}

        def record(visual_query, text_query, weight, k, mask, lexical=None, *args, **kwargs):
            self.calls.append((visual_query, text_query, weight))
            return original(visual_query, text_query, weight, k, mask, lexical, **base)

        monkeypatch.setattr(engine, "_rank", record)


def _shown(hit):
    """What a result shows of a hit, from the payload alone (no catalog lookup)."""
    payload = hit.payload
    return SimpleNamespace(title=str(payload.get("title", "")), image_path=str(payload.get("image_path", "")),
                           attributes=dict(payload.get("attributes", {})))


def assert_same_ranking(results, hits, fused: bool):
    assert_same_up_to_ties(hits, results)
    by_id = {r.id: r for r in results}
    for hit in hits:  # what the engine will show from a hit
        shown, result = _shown(hit), by_id[hit.id]
        assert (shown.title, shown.image_path, shown.attributes) == (result.title, result.image_path,
                                                                     result.attributes)
        np.testing.assert_allclose([hit.score, hit.visual_score], [result.score, result.visual_score],
                                   atol=TOLERANCE)
    if fused:
        np.testing.assert_allclose([h.text_score for h in hits], [by_id[h.id].text_score for h in hits],
                                   atol=TOLERANCE)
        if results[0].lexical_score is not None:
            np.testing.assert_allclose([h.lexical_score for h in hits], [by_id[h.id].lexical_score for h in hits],
                                       atol=TOLERANCE)


def test_keyword_vectors_reproduce_bm25(small_engine):
    descriptions = [item_description(row) for row in small_engine.index.items.to_dict("records")]
    statistics = KeywordStatistics()
    statistics.add(descriptions)
    encoder = statistics.encoder()
    bm25 = BM25Index(descriptions)
    for query in ("red summer dress", "Men's casual shirts shirts", "black watch", "zzz unknown words"):
        indices, _ = encoder.query_vector(query)
        scores = []
        for description in descriptions:
            doc_indices, values = encoder.document_vector(description)
            scores.append(sum(v for i, v in zip(doc_indices, values) if i in set(indices)))
        np.testing.assert_allclose(scores, bm25.scores(query), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("query, filters, lexical_weight", [
    ("red summer dress", None, None),
    ("blue casual shirt for men", None, 0.0),
    ("black watch", {"gender": "men"}, None),  # filters compare case-insensitively, like the engine's
    ("white tshirt", {"gender": ["Women", "Men"], "usage": "Casual"}, 1.4),
])
def test_text_search_matches_the_engine(small_engine, store, monkeypatch, query, filters, lexical_weight):
    calls = RankCalls(small_engine, monkeypatch)
    results = small_engine.search_text(query, k=10, filters=filters, lexical_weight=lexical_weight)
    visual_query, text_query, weight = calls.calls[-1]
    lexical = small_engine.lexical_weight if lexical_weight is None else lexical_weight
    hits = store.rank(visual_query, text_query, query, weight, lexical, k=10, filters=filters)
    assert len(results) == 10
    assert_same_ranking(results, hits, fused=True)
    if filters and "gender" in filters:
        allowed = {str(v).casefold() for v in np.atleast_1d(filters["gender"])}
        assert all(h.payload["gender"] in allowed for h in hits)


def assert_same_up_to_ties(hits, results):
    """The same ids in the same order, except among results whose scores tie (identical products): the raw store
    breaks ties as its segments come (the edge shard differently from run to run), where `QdrantBackend` sorts them
    the engine's way. Each run of tied scores holds the same ids."""
    assert len(hits) == len(results)
    start = 0
    while start < len(results):
        end = start + 1
        while end < len(results) and abs(results[end].score - results[start].score) <= TOLERANCE:
            end += 1
        assert {h.id for h in hits[start:end]} == {r.id for r in results[start:end]}, start
        start = end


def test_image_and_item_search_match_the_engine(small_engine, store, monkeypatch):
    calls = RankCalls(small_engine, monkeypatch)
    item = small_engine.ids[5]
    path = small_engine.index.items.iloc[7]["image_path"]
    for run, exclude in ((lambda: small_engine.search_item(item, k=10), [item]),
                         (lambda: small_engine.search_image(path, k=10, filters={"masterCategory": "apparel"},
                                                            exclude_ids=[item]), [item])):
        results = run()
        visual_query, text_query, _ = calls.calls[-1]
        assert text_query is None  # visual only
        filters = {"masterCategory": "apparel"} if len(calls.calls) == 2 else None
        hits = store.rank(visual_query, k=10, filters=filters, exclude_ids=exclude)
        # The engine reports the cosine to the photo itself as visual_score; what ranked is `score`.
        assert_same_up_to_ties(hits, results)
        np.testing.assert_allclose([h.score for h in hits], [r.score for r in results], atol=TOLERANCE)
        assert item not in {h.id for h in hits}


def test_neighbours_and_item_vectors_match_the_index(small_engine, store):
    """What the engine needs for α-query expansion and "more like this" (`_expand`, `reconstruct`)."""
    query = small_engine.item_vectors([3])[0]
    ids, scores, vectors = store.neighbours(query, 5, exclude_ids=[small_engine.ids[3]])
    mask = small_engine.allowed_mask(None, [small_engine.ids[3]])
    expected_scores, positions = small_engine.index.search(query[None], 5, allowed=mask)
    # The same neighbours up to exact ties (identical products, which the edge shard orders differently from run to
    # run): rank by rank, the store's neighbour has the engine's cosine.
    position = {item_id: p for p, item_id in enumerate(small_engine.ids)}
    found = [position[i] for i in ids]
    assert len(set(found)) == 5 and 3 not in found
    np.testing.assert_allclose(small_engine.item_vectors(found) @ query, expected_scores[0], atol=TOLERANCE)
    np.testing.assert_allclose(scores, expected_scores[0], atol=TOLERANCE)
    np.testing.assert_allclose(vectors, small_engine.item_vectors(found), atol=1e-5)
    np.testing.assert_allclose(store.item_vectors([small_engine.ids[3]])[0], query, atol=1e-5)
    with pytest.raises(QueryError, match="No item"):
        store.item_vectors(["no-such-item"])


def test_composed_search_matches_the_engine(small_engine, store, monkeypatch):
    calls = RankCalls(small_engine, monkeypatch)
    item = small_engine.ids[11]
    results = small_engine.search_composed(item_id=item, text="make it blue", k=10, filters={"gender": "Women"})
    visual_query, text_query, weight = calls.calls[-1]
    hits = store.rank(visual_query, text_query, None, weight, 0.0, k=10, filters={"gender": "Women"},
                      exclude_ids=[item])
    assert_same_ranking(results, hits, fused=True)


def test_payload_boost_is_one_more_formula_term(small_engine, store, monkeypatch):
    calls = RankCalls(small_engine, monkeypatch)
    small_engine.search_text("casual shoes", k=10)
    visual_query, text_query, weight = calls.calls[-1]
    args = (visual_query, text_query, "casual shoes", weight, small_engine.lexical_weight)
    base = {h.id: h.score for h in store.rank(*args, k=300)}
    boosted = store.rank(*args, k=300, boosts=[payload_boost("articleType", ["Casual Shoes"], 0.25)])
    for hit in boosted:
        bonus = 0.25 if hit.payload["articleType"] == "casual shoes" else 0.0
        assert hit.score == pytest.approx(base[hit.id] + bonus, abs=TOLERANCE)
    assert any(hit.payload["articleType"] == "casual shoes" for hit in boosted[:10])


def test_boost_candidates_reach_items_below_every_signal(small_engine, store, monkeypatch):
    """A strong boost lifts items of a type into the top 10 although they are far from the query: with 10 candidates
    per signal, the plan without boost lists misses some of them; with one (`boost_prefetches`), the type's own top
    10 by the heavier signal joins the candidates, so every item of a type of at most 10 items is found, each with
    its exact fused score."""
    calls = RankCalls(small_engine, monkeypatch)
    small_engine.search_text("black watch", k=10)
    visual_query, text_query, weight = calls.calls[-1]
    args = (visual_query, text_query, "black watch", weight, small_engine.lexical_weight)
    counts = small_engine.index.items["articleType"].value_counts()
    rare = [t for t, n in counts.items() if 2 <= n <= 10]
    assert rare
    monkeypatch.setattr(store.config, "prefetch_depth", 10)
    missed = 0
    for article_type in rare:
        boosts = [payload_boost("articleType", [article_type], 5.0)]
        exact = {h.id: h.score for h in store.rank(*args, k=10, boosts=boosts, depth=ITEMS)}
        wanted = {h for h, score in exact.items() if score > 4}  # every item of the type, and only those
        assert len(wanted) == counts[article_type]
        monkeypatch.setattr(store.config, "boost_prefetches", 0)
        missed += len(wanted - {h.id for h in store.rank(*args, k=10, boosts=boosts)})
        monkeypatch.setattr(store.config, "boost_prefetches", 1)
        hits = store.rank(*args, k=10, boosts=boosts)
        assert wanted <= {h.id for h in hits}, article_type
        for hit in hits[:len(wanted)]:
            assert hit.score == pytest.approx(exact[hit.id], abs=TOLERANCE)
    assert missed > 0  # the scenario exists: without the boost's list, the plan loses boosted items


def test_filters_are_checked_like_the_engine(store):
    query = np.ones(store.client.get_collection(store.name).config.params.vectors["visual"].size, np.float32)
    with pytest.raises(QueryError, match="Unknown filter"):
        store.rank(query, filters={"colour": "red"})
    assert store.rank(query, filters={"colour": ""}, k=3)  # empty values are ignored
    with pytest.raises(QueryError, match="k must be"):
        store.rank(query, k=0)


def _points(client, name):
    points, offset = [], None
    while True:
        page, offset = client.scroll(name, limit=256, offset=offset, with_payload=True, with_vectors=True)
        points.extend(page)
        if offset is None:
            return {str(p.id): p for p in points}


def test_rerun_is_a_no_op_and_rebuild_replaces_without_duplicates(small_engine, tiny_model_dir, catalog_dir, store):
    config, client = store.config, store.client
    again = _build(small_engine, tiny_model_dir, catalog_dir, client, config)
    assert again.up_to_date and again.total_points == ITEMS
    rebuilt = _build(small_engine, tiny_model_dir, catalog_dir, client, config, rebuild=True)
    assert rebuilt.collection != store.name and rebuilt.total_points == ITEMS
    names = [c.name for c in client.get_collections().collections]
    assert rebuilt.collection in names and len(names) == 1  # the replaced collection is dropped
    reopened = QdrantStore.open(config, small_engine.index.manifest["model"], client=client)
    assert reopened.count() == ITEMS
    assert set(_points(client, reopened.name)) == {point_id(i) for i in small_engine.ids}


def test_interrupted_build_resumes_to_the_same_collection(small_engine, tiny_model_dir, catalog_dir, store,
                                                          tmp_path, monkeypatch):
    config = QdrantConfig(path=str(tmp_path / "qdrant"), edge=store.config.edge)
    client = config.connect()

    def crash(index):
        if index == 1:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        _build(small_engine, tiny_model_dir, catalog_dir, client, config, on_batch=crash)
    with pytest.raises(QdrantStoreError, match="no collection"):  # nothing is served half-written
        QdrantStore.open(config, small_engine.index.manifest["model"], client=client)
    (partial,) = [c.name for c in client.get_collections().collections]
    assert COMPLETE_KEY not in client.get_collection(partial).config.metadata
    with pytest.raises(QdrantStoreError, match="interrupted build"):
        QdrantStore.open(QdrantConfig(path=config.path, collection=partial, edge=config.edge),
                         small_engine.index.manifest["model"], client=client)

    # A crash after batch 2 is written but before it is recorded: the re-run writes it again (same point ids).
    original = client.update_collection

    def lose_record(name, metadata=None, **kwargs):
        if any(key.endswith("_batch_64") for key in metadata or {}) and 3 in metadata.values():
            raise ConnectionError("killed before the progress record")
        return original(name, metadata=metadata, **kwargs)

    monkeypatch.setattr(client, "update_collection", lose_record)
    with pytest.raises(ConnectionError):
        _build(small_engine, tiny_model_dir, catalog_dir, client, config)
    monkeypatch.setattr(client, "update_collection", original)
    resumed = _build(small_engine, tiny_model_dir, catalog_dir, client, config)
    assert resumed.collection == partial
    assert resumed.items == ITEMS - 2 * BATCH  # batches 0 and 1 were recorded; 2 is written again
    assert resumed.total_points == ITEMS
    rebuilt, reference = _points(client, resumed.name), _points(store.client, store.name)
    assert rebuilt.keys() == reference.keys()
    for key, point in reference.items():
        assert rebuilt[key].payload == point.payload
        for name in ("visual", "title"):
            np.testing.assert_allclose(rebuilt[key].vector[name], point.vector[name], atol=1e-5)
        assert rebuilt[key].vector["keywords"].indices == point.vector["keywords"].indices
        np.testing.assert_allclose(rebuilt[key].vector["keywords"].values, point.vector["keywords"].values)
    client.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_bad_configuration_fails_clearly(small_engine, store):
    secret = "s3cr3t-key-value"
    config = QdrantConfig(url="http://127.0.0.1:9", api_key=secret, timeout=1)
    assert secret not in repr(config) and secret not in str(config) and "***" in repr(config)
    with pytest.raises(QdrantStoreError, match="cannot reach Qdrant at http://127.0.0.1:9") as error:
        config.connect()
    assert secret not in str(error.value)
    with pytest.raises(QdrantStoreError, match="exactly one of"):
        QdrantConfig()

    model = dict(small_engine.index.manifest["model"])
    other = QdrantConfig(path=store.config.path, collection=store.name, edge=store.config.edge)
    with pytest.raises(QdrantStoreError, match="built by model .* fingerprint"):
        QdrantStore.open(other, {**model, "fingerprint": "0123456789abcdef"}, client=store.client)
    with pytest.raises(QdrantStoreError, match="dimension 16, the loaded model makes 32"):
        QdrantStore.open(other, {**model, "embedding_dim": 32}, client=store.client)
    with pytest.raises(QdrantStoreError, match="'title' vectors of dimension 384"):
        QdrantStore.open(other, model, text_dim=768, client=store.client)
    with pytest.raises(QdrantStoreError, match="no collection 'fashion-search-0123456789abcdef'.*modeling.retrieval"):
        QdrantStore.open(QdrantConfig(path=store.config.path, edge=store.config.edge),
                         {**model, "fingerprint": "0123456789abcdef"}, client=store.client)

    # Servers report payload indexes (local mode keeps none): one missing is named.
    info = store.client.get_collection(store.name)
    info.payload_schema = {name: "keyword" for name in ("id", "gender", "masterCategory", "subCategory",
                                                        "articleType", "baseColour", "usage", "group", "position",
                                                        "description")}
    with pytest.raises(QdrantStoreError, match=r"lacks the payload index\(es\) \['season'\]"):
        check_collection(info, store.metadata, model, None, name=store.name, location="test")
    del info.payload_schema["position"]  # the engine reads items by position: a scan of every point without it
    with pytest.raises(QdrantStoreError, match=r"lacks the payload index\(es\) \['season', 'position'\]"):
        check_collection(info, store.metadata, model, None, name=store.name, location="test")


def test_streamed_rows_equal_load_catalog(small_engine, catalog_dir):
    rows = list(iter_catalog(catalog_dir, split="val", max_items=ITEMS))
    items = small_engine.index.items
    assert [r["id"] for r in rows] == list(items["id"])
    assert [item_description(r) for r in rows] == [item_description(r) for r in items.to_dict("records")]
    assert [r["image_path"] for r in rows] == list(items["image_path"])


@pytest.mark.qdrant_server
def test_server_backend(small_engine, tiny_model_dir, catalog_dir, monkeypatch):
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("set QDRANT_URL to run the backend suite against a Qdrant server")
    config = QdrantConfig(url=url, api_key=os.environ.get("QDRANT_API_KEY"), collection="fashion-search-test",
                          exact=True)
    client = config.connect()
    _build(small_engine, tiny_model_dir, catalog_dir, client, config, rebuild=True)
    server_store = QdrantStore.open(config, small_engine.index.manifest["model"], small_engine.sentence_encoder.dim)
    calls = RankCalls(small_engine, monkeypatch)
    results = small_engine.search_text("black watch", k=10, filters={"gender": "Men"})
    visual_query, text_query, weight = calls.calls[-1]
    hits = server_store.rank(visual_query, text_query, "black watch", weight, small_engine.lexical_weight, k=10,
                             filters={"gender": "Men"})
    assert_same_ranking(results, hits, fused=True)
    if os.environ.get("QDRANT_API_KEY"):
        with pytest.raises(QdrantStoreError, match="refused the API key"):
            QdrantConfig(url=url, api_key="wrong-key").connect()


class FakeProcess:
    """`accelerate.PartialState` of process `rank` of `world`, run one after the other in this test."""

    def __init__(self, rank, world):
        self.process_index, self.num_processes, self.is_main_process = rank, world, rank == 0
        self.device = None

    def wait_for_everyone(self):
        pass


def test_processes_split_the_batches_and_the_last_one_publishes(small_engine, tiny_model_dir, catalog_dir, store,
                                                                tmp_path):
    config = QdrantConfig(path=str(tmp_path / "qdrant"), edge=store.config.edge)
    client = config.connect()
    written = []
    # Process 0 creates the collection and writes batches 0, 2, 4; it cannot publish before process 1 is done.
    with pytest.raises(QdrantStoreError, match=r"processes \[1\] did not finish"):
        _build(small_engine, tiny_model_dir, catalog_dir, client, config, state=FakeProcess(0, 2),
               on_batch=written.append)
    second = _build(small_engine, tiny_model_dir, catalog_dir, client, config, state=FakeProcess(1, 2),
                    on_batch=written.append)
    assert second.total_points is None  # only the main process publishes
    final = _build(small_engine, tiny_model_dir, catalog_dir, client, config, state=FakeProcess(0, 2))
    assert written == [0, 2, 4, 1, 3] and final.items == 0 and final.total_points == ITEMS
    assert _points(client, final.name).keys() == _points(store.client, store.name).keys()
    client.close()


def test_build_command(tiny_model_dir, catalog_dir, tmp_path, capsys, monkeypatch):
    from modeling.retrieval.engine.build_index import main

    for key in ("FASHION_QDRANT_URL", "FASHION_QDRANT_PATH", "FASHION_QDRANT_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    common = ["--model", str(tiny_model_dir), "--catalog", str(catalog_dir), "--split", "val", "--max-items", "40",
              "--batch-size", "16"]
    with pytest.raises(QdrantStoreError, match="needs --qdrant-url"):
        main([*common, "--vector-store", "qdrant"])
    assert main([*common, "--vector-store", "qdrant", "--qdrant-path", str(tmp_path / "q")]) == 0
    assert "40 items in" in capsys.readouterr().out
    assert main([*common, "--vector-store", "qdrant", "--qdrant-path", str(tmp_path / "q")]) == 0
    assert "is up to date (40 points)" in capsys.readouterr().out
    assert main([*common, "--vector-store", "faiss", "--index-dir", str(tmp_path / "faiss")]) == 0
    assert "40 items in" in capsys.readouterr().out and (tmp_path / "faiss" / "manifest.json").is_file()


def test_streams_a_dataset_repository_with_embedded_images(small_engine, tmp_path):
    """The Hub layout (`data/<split>-*.parquet`, images embedded as bytes) streams like `load_catalog` reads it."""
    import datasets

    from modeling.data.catalog import load_catalog

    items = small_engine.index.items.iloc[:12]
    table = {column: list(items[column]) for column in ("id", "title", "gender", "articleType")}
    table["image"] = [{"bytes": Path(path).read_bytes(), "path": None} for path in items["image_path"]]
    (tmp_path / "data").mkdir()
    part = datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())
    part.select(range(8)).to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    part.select(range(8, 12)).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    rows = list(iter_catalog(tmp_path))
    expected = load_catalog(tmp_path)
    assert [r["id"] for r in rows] == list(expected["id"])
    assert all(r["image"]["bytes"] and r["image_path"] == "" for r in rows)
    assert [item_description(r) for r in rows] == [item_description(r) for r in expected.to_list()]
    assert [r["id"] for r in iter_catalog(tmp_path, split="test")] == list(items["id"][8:])
