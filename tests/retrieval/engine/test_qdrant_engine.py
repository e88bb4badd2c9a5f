"""One engine API, three vector stores: `FashionSearchEngine` loaded with `vector_store="qdrant"` (qdrant-client local
mode) and with `vector_store="qdrant-edge"` (the real Qdrant engine in process, qdrant-edge-py) returns the same
top-10, scores and collapsed duplicates as the in-process FAISS engine, with everything on: query intents and
negations, filters, fused scores, "more like this" consistency (photo and catalog item), near-duplicate collapsing.
The model is a tiny random dual encoder with attribute heads, over 300 real val items."""

from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from modeling.retrieval.engine.signals import ConsistencyScorer

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def heads_model_dir(tiny_text_model, small_gallery, tmp_path_factory):
    """The tiny dual encoder with (random) colour and type heads over the gallery's values: photo consistency on."""
    import torch
    from transformers import AutoTokenizer

    from modeling import DualEncoderImageProcessor, DualEncoderModel

    from tests.conftest import tiny_model_kwargs

    torch.manual_seed(0)
    labels = {a: sorted(set(small_gallery[a])) for a in ("baseColour", "articleType")}
    folder = tmp_path_factory.mktemp("heads-model")
    model = DualEncoderModel.from_text_pretrained(str(tiny_text_model), attribute_labels=labels, **tiny_model_kwargs())
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_text_model).save_pretrained(folder)
    DualEncoderImageProcessor(image_size=model.config.image_size).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def faiss_engine(heads_model_dir, small_gallery, small_engine, tmp_path_factory):
    """(the FAISS engine, its index folder)."""
    from modeling.retrieval.engine.search import FashionSearchEngine

    index_dir = tmp_path_factory.mktemp("heads-index") / "index"
    return FashionSearchEngine.load(heads_model_dir, index_dir, catalog=small_gallery,
                                    sentence_encoder=small_engine.sentence_encoder), index_dir


@pytest.fixture(scope="module", params=["qdrant", "qdrant-edge"])
def engines(request, heads_model_dir, faiss_engine, catalog_dir, tmp_path_factory):
    """(FAISS engine, Qdrant engine, their index folder): the collection built by the build code, the Qdrant engine
    loaded as the app loads it (`EngineRegistry` with `vector_store="qdrant"` or `"qdrant-edge"`)."""
    pytest.importorskip("qdrant_client")
    if request.param == "qdrant-edge":
        pytest.importorskip("qdrant_edge")
    from modeling.encoders.loading import load_model
    from modeling.retrieval.backends.qdrant.store import QdrantConfig
    from modeling.retrieval.engine.stored import build_store
    from modeling.serving.registry import EngineRegistry, ModelSpec

    faiss, index_dir = faiss_engine
    encoder = faiss.sentence_encoder
    config = QdrantConfig(path=str(tmp_path_factory.mktemp("heads-qdrant")), edge=request.param == "qdrant-edge")
    model, _, processor = load_model(heads_model_dir)
    client = config.connect()
    try:
        build_store(model, processor, catalog_dir, config, model_info=faiss.index.manifest["model"],
                    sentence_encoder=encoder, batch_size=100, split="val", max_items=len(faiss.ids), client=client)
    finally:
        client.close()
    registry = EngineRegistry([ModelSpec("heads", str(heads_model_dir), str(index_dir))],
                              vector_store=request.param, qdrant=config)
    store = registry.get()
    assert faiss.backend.name == "faiss" and store.backend.name == request.param
    assert store.backend.store.name.startswith("fashion-search-")
    yield faiss, store, index_dir
    store.backend.store.close()


def assert_same(expected, got):
    assert [r.id for r in got] == [r.id for r in expected]
    for field in ("score", "visual_score", "text_score", "lexical_score", "vsc"):
        want, have = [getattr(r, field) for r in expected], [getattr(r, field) for r in got]
        assert [w is None for w in want] == [h is None for h in have], field
        if want and want[0] is not None:
            np.testing.assert_allclose(have, want, atol=TOLERANCE, err_msg=field)
    assert [r.duplicates for r in got] == [r.duplicates for r in expected]
    assert [(r.title, r.image_path, r.attributes) for r in got] == [(r.title, r.image_path, r.attributes)
                                                                    for r in expected]


@pytest.mark.parametrize("query, filters", [
    ("black sneakers for women", None),
    ("running shoes not black", None),   # a negation: penalised, and removed from what the encoders see
    ("blak tshrt for men", None),        # misspellings, fuzzy-matched to catalog values
    ("casual shirt", {"gender": "Men"}),
    ("red kurta", {"masterCategory": ["Apparel", "Footwear"], "usage": "ethnic"}),
])
def test_text_search(engines, query, filters, monkeypatch):
    faiss, store, _ = engines
    intent = faiss.understand(query)
    assert store.understand(query) == intent
    for plan, collapse in [(plan, collapse) for plan in ("nested", "two-stage") for collapse in (False, True)]:
        monkeypatch.setattr(store.backend.store.config, "plan", plan)
        expected = faiss.search_text(query, k=10, filters=filters, collapse=collapse)
        assert len(expected) == 10
        assert_same(expected, store.search_text(query, k=10, filters=filters, collapse=collapse))


def test_text_search_without_intents_or_keywords(engines):
    faiss, store, _ = engines
    for kwargs in ({"intent": False}, {"lexical_weight": 0.0}, {"text_weight": 0.0}):
        assert_same(faiss.search_text("white tshirt for women", k=10, **kwargs),
                    store.search_text("white tshirt for women", k=10, **kwargs))


def test_image_search_with_and_without_consistency(engines):
    faiss, store, _ = engines
    assert faiss.consistency.available  # the heads make the photo's colour and type terms count
    path = faiss.index.items.iloc[7]["image_path"]
    for kwargs in ({}, {"consistency": {}}, {"expansion": 0}, {"filters": {"gender": "Women"}, "exclude_ids":
                                                               [faiss.ids[3]]}, {"collapse": False}):
        assert_same(faiss.search_image(path, k=10, **kwargs), store.search_image(path, k=10, **kwargs))


def test_item_search(engines):
    faiss, store, _ = engines
    for i in (0, 42, 250):
        for kwargs in ({}, {"consistency": {}}, {"filters": {"masterCategory": "Apparel"}}, {"collapse": False}):
            expected = faiss.search_item(faiss.ids[i], k=10, **kwargs)
            assert faiss.ids[i] not in {r.id for r in expected}
            assert_same(expected, store.search_item(faiss.ids[i], k=10, **kwargs))


def test_composed_search(engines):
    faiss, store, _ = engines
    path = faiss.index.items.iloc[20]["image_path"]
    for kwargs in ({"item_id": faiss.ids[11], "text": "in blue"}, {"item_id": faiss.ids[30], "text": "not black",
                                                                   "filters": {"gender": "Women"}},
                   {"image": path, "text": "for men"}):
        assert_same(faiss.search_composed(k=10, **kwargs), store.search_composed(k=10, **kwargs))


def test_collapse_lists_the_same_duplicates(engines):
    """Deep rankings, where the collapsed groups show: the same kept items and the same duplicates under each."""
    faiss, store, _ = engines
    groups = faiss.duplicates.groups()
    assert len(set(groups.tolist())) < len(groups), "the gallery should hold near-duplicates"
    for run in (lambda e: e.search_text("watch", k=60), lambda e: e.search_item(e.ids[5], k=60)):
        expected = run(faiss)
        assert any(r.duplicates for r in expected)
        assert_same(expected, run(store))


def test_photo_and_item_queries_rank_exactly_from_a_shallow_prefetch(engines, monkeypatch):
    """Visual-only queries with boosts prefetch the visual top few hundred (deepened until no item below can score
    into the top k): force shallow prefetches over the 300 items and deepening, the results stay the same."""
    from modeling.retrieval.backends.qdrant import ranking as store_ranking

    faiss, store, _ = engines
    monkeypatch.setattr(store_ranking, "MIN_BOUNDED_PREFETCH", 4)
    monkeypatch.setattr(store_ranking, "BOUNDED_PREFETCH_FACTOR", 2)
    calls = []
    original = store.backend.store.visual_score_at
    monkeypatch.setattr(store.backend.store, "visual_score_at",
                        lambda *a, **kw: calls.append(a[1]) or original(*a, **kw))
    path = faiss.index.items.iloc[9]["image_path"]
    for run in (lambda e: e.search_image(path, k=10), lambda e: e.search_item(e.ids[17], k=10),
                lambda e: e.search_image(path, k=10, filters={"gender": "Men"}, collapse=False)):
        assert_same(run(faiss), run(store))
    deepened = [b for a, b in pairwise(calls) if b - 1 == 2 * (a - 1)]
    assert deepened, calls  # some prefetch was too shallow to be sure, and deepened


def test_max_boost_is_the_most_one_item_collects():
    pytest.importorskip("qdrant_client")
    from modeling.retrieval.backends.qdrant.store import payload_boost
    from modeling.retrieval.backends.qdrant.ranking import max_boost

    boosts = [payload_boost("baseColour", ["Red"], 0.3), payload_boost("baseColour", ["Blue"], 0.2),
              payload_boost("baseColour", ["Red", "Pink"], 0.1), payload_boost("gender", ["Men"], 0.25),
              payload_boost("gender", ["Women"], -0.4), payload_boost("usage", ["Sports"], -0.1)]
    assert max_boost(boosts) == pytest.approx(0.3 + 0.1 + 0.25)
    assert max_boost([]) == 0.0


def test_store_errors(engines, heads_model_dir, tmp_path):
    from modeling.retrieval.backends.qdrant.store import QdrantConfig, QdrantStoreError
    from modeling.retrieval.common.types import QueryError
    from modeling.retrieval.engine.search import FashionSearchEngine

    faiss, store, index_dir = engines
    with pytest.raises(QueryError, match="Unknown filter"):
        store.search_text("shirt", filters={"split": "val"})  # the store filters on catalog attributes only
    with pytest.raises(ValueError, match="needs a QdrantConfig"):
        FashionSearchEngine.load(heads_model_dir, tmp_path / "index", vector_store="qdrant")
    with pytest.raises(ValueError, match="unknown vector store"):
        FashionSearchEngine.load(heads_model_dir, tmp_path / "index", vector_store="milvus")
    with pytest.raises(QdrantStoreError, match="no collection"):
        FashionSearchEngine.load(heads_model_dir, index_dir, sentence_encoder=faiss.sentence_encoder,
                                 vector_store="qdrant", qdrant=QdrantConfig(path=str(tmp_path / "empty")))


def test_photo_type_term_reads_the_catalog_type():
    """Both backends score a photo's type agreement as the type head's probability of each item's catalog type (a
    vector store can add it as one payload boost per type); without the catalog column, the head-head agreement."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 6)).astype(np.float32)
    projection = rng.normal(size=(6, 3))
    types = ["x", "y", "z"]

    def predict_attributes(x):
        import torch

        return {"articleType": torch.softmax(x @ torch.tensor(projection, dtype=torch.float32), -1)}

    model = SimpleNamespace(config=SimpleNamespace(attribute_labels={"articleType": types}),
                            predict_attributes=predict_attributes)
    items = pd.DataFrame({"articleType": rng.choice(types + ["w"], 40)})  # w: not a head label
    photo = rng.normal(size=6).astype(np.float32)

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p = softmax(photo @ projection)
    positions = np.array([0, 5, 39, 12])
    expected = np.array([0.3 * p[types.index(t)] if t in types else 0.0 for t in items.articleType])
    scorer = ConsistencyScorer(model, lambda: vectors, items, {"articleType": 0.3})
    np.testing.assert_allclose(scorer.scores(photo, positions), expected[positions], atol=1e-6)
    no_column = ConsistencyScorer(model, lambda: vectors, pd.DataFrame(index=range(40)), {"articleType": 0.3})
    np.testing.assert_allclose(no_column.scores(photo, positions),
                               0.3 * softmax(vectors @ projection)[positions] @ p, atol=1e-6)



def test_qdrant_config_for_the_app(monkeypatch, tmp_path):
    pytest.importorskip("qdrant_client")
    from modeling.retrieval.backends.qdrant.store import QdrantStoreError
    from modeling.serving.registry import EngineRegistry, ModelSpec, qdrant_config

    for name in ("FASHION_QDRANT_URL", "FASHION_QDRANT_PATH", "FASHION_QDRANT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(QdrantStoreError, match="needs --qdrant-url"):
        qdrant_config()
    assert qdrant_config(path=tmp_path).path == str(tmp_path)
    monkeypatch.setenv("FASHION_QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("FASHION_QDRANT_API_KEY", "secret")
    config = qdrant_config()
    assert (config.url, config.path, config.api_key) == ("http://qdrant:6333", None, "secret")
    assert "secret" not in repr(config)
    assert qdrant_config(path=tmp_path).url is None  # a flag wins over the environment
    with pytest.raises(ValueError, match="needs a QdrantConfig"):
        EngineRegistry([ModelSpec("m", "m", "i")], vector_store="qdrant")
    with pytest.raises(ValueError, match="unknown vector store"):
        EngineRegistry([ModelSpec("m", "m", "i")], vector_store="milvus")


def test_a_shallow_plan_scores_its_candidates_exactly(engines, monkeypatch):
    """A fused query prefetches each signal's top `prefetch_depth`, then re-scores every signal over their union
    (nested prefetches, or a second request over the union's ids): forced far below the 300 items, every hit's score
    is still its exact fused score (no signal defaulted to 0), and most of the exact top 10 is found."""
    faiss, store, _ = engines
    monkeypatch.setattr(store.backend.store.config, "prefetch_depth", 2)
    for plan, query, filters in [(plan, query, filters) for plan in ("nested", "two-stage") for query, filters in
                                 (("black sneakers for women", None), ("red kurta", {"gender": "Women"}))]:
        monkeypatch.setattr(store.backend.store.config, "plan", plan)
        got = store.search_text(query, k=10, filters=filters, collapse=False)
        everything = faiss.search_text(query, k=300, filters=filters, collapse=False)
        exact = {r.id: (r.score, r.text_score, r.lexical_score) for r in everything}
        assert len(got) == 10
        np.testing.assert_allclose([[r.score, r.text_score, r.lexical_score] for r in got],
                                   [exact[r.id] for r in got], atol=TOLERANCE)
        assert len({r.id for r in got} & {r.id for r in everything[:10]}) >= 7


# -- serving from the collection alone ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served_alone(heads_model_dir, faiss_engine, catalog_dir, tmp_path_factory):
    """A model folder laid out as the app expects (MODEL/index), its qdrant-edge collection built by the build
    command, then the index folder deleted: the app's service and engine over the model folder and the collection."""
    pytest.importorskip("qdrant_edge")
    import shutil

    from modeling.retrieval.backends.qdrant.store import QdrantConfig
    from modeling.retrieval.engine import build_index
    from modeling.serving.registry import EngineRegistry, ModelSpec
    from modeling.serving.service import SearchService

    faiss, index_dir = faiss_engine
    root = tmp_path_factory.mktemp("alone")
    model_dir, shards = root / "model", root / "edge"
    shutil.copytree(heads_model_dir, model_dir)
    shutil.copytree(index_dir, model_dir / "index")
    assert build_index.main(["--model", str(model_dir), "--catalog", str(catalog_dir), "--split", "val",
                             "--max-items", str(len(faiss.ids)), "--batch-size", "100", "--vector-store",
                             "qdrant-edge", "--qdrant-path", str(shards)]) == 0
    shutil.rmtree(model_dir / "index")
    registry = EngineRegistry([ModelSpec.parse(str(model_dir))], vector_store="qdrant-edge",
                              qdrant=QdrantConfig(path=str(shards), edge=True))
    engine = registry.get()
    yield SearchService(registry), engine, model_dir
    engine.backend.store.close()


def test_the_app_serves_from_the_collection_alone(served_alone, faiss_engine):
    """No index folder: the item table, groups, parser vocabulary, intent heads and VSC come from the collection,
    and the engine and the app's JSON routes give the FAISS engine's top 10 (scores, VSC, duplicates) on the parity
    cases."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from modeling.retrieval.backends.qdrant.catalog import StoreCatalog
    from modeling.serving.http import API_PREFIX, app_kwargs
    from modeling.serving.registry import EngineRegistry
    from modeling.serving.service import SearchService

    service, engine, model_dir = served_alone
    faiss, _ = faiss_engine
    assert isinstance(engine.index, StoreCatalog) and engine._local is None and engine.vsc.embeddings is None
    assert engine.ids == faiss.ids and engine.intents.heads is not None
    assert partition(engine.index.group_keys(range(len(faiss.ids)))) == partition(faiss.duplicates.groups())
    path = faiss.index.items.iloc[7]["image_path"]
    runs = [lambda e, q=q, f=f, c=c: e.search_text(q, k=10, filters=f, collapse=c)
            for q, f in [("black sneakers for women", None), ("running shoes not black", None),
                         ("blak tshrt for men", None), ("red kurta", {"masterCategory": ["Apparel", "Footwear"]})]
            for c in (False, True)]
    runs += [lambda e: e.search_image(path, k=10), lambda e: e.search_image(path, k=10, filters={"gender": "Women"}),
             lambda e: e.search_item(e.ids[42], k=10), lambda e: e.search_item(e.ids[0], k=10, collapse=False),
             lambda e: e.search_composed(item_id=e.ids[11], text="in blue", k=10),
             lambda e: e.search_composed(image=path, text="for men", k=10),
             lambda e: e.search_text("watch", k=60)]
    for run in runs:
        assert_same(run(faiss), run(engine))
    reference = SearchService(EngineRegistry.from_engines({model_dir.name: faiss}))
    requests = [("search_text", {"query": "black sneakers for women", "k": 10}),
                ("search_text", {"query": "casual shirt", "k": 10, "gender": "men"}),
                ("similar_items", {"item_id": faiss.ids[42], "k": 10}),
                ("composed_item", {"item_id": faiss.ids[11], "text": "make it blue", "k": 10})]
    with TestClient(FastAPI(**app_kwargs(service)), base_url="http://localhost") as alone, \
            TestClient(FastAPI(**app_kwargs(reference)), base_url="http://localhost") as local:
        for name, values in requests:
            got, want = (c.post(f"{API_PREFIX}/{name}", json=values) for c in (alone, local))
            assert got.status_code == want.status_code == 200, got.text
            assert [r["id"] for r in got.json()["results"]] == [r["id"] for r in want.json()["results"]]
            assert len(want.json()["results"]) == 10
    assert not (model_dir / "index").exists()  # nothing was rebuilt


def partition(groups) -> set[frozenset]:
    """The groups of two or more items (positions), whatever the group labels."""
    members: dict = {}
    for position, group in enumerate(groups):
        members.setdefault(group, set()).add(position)
    return {frozenset(m) for m in members.values() if len(m) > 1}


def test_the_engine_from_a_store_holds_nothing_per_item(served_alone, faiss_engine, monkeypatch):
    """Served from the collection alone, the engine holds no item table, id map, codes, groups or records: items
    are read per request through a bounded cache of the rows hits brought (no scroll at start). With a cache of 4
    rows every read goes to the collection and filters, counts, facets, photos, uniform random picks and the top 10
    with every field are still the FAISS engine's; what a result shows follows the collection at once, any other
    read within the cache's time to live."""
    from modeling.retrieval.backends.qdrant import lookup as lookups
    from modeling.retrieval.backends.qdrant.lookup import CACHE_ROWS, StoreIds, StoreValues
    from modeling.retrieval.backends.qdrant.store import point_id
    from modeling.retrieval.common.types import QueryError
    from modeling.retrieval.engine.catalog import same_ids
    from modeling.serving.registry import EngineRegistry
    from modeling.serving.service import SearchService

    service, engine, _ = served_alone
    faiss, _ = faiss_engine
    index, lookup = engine.index, engine.index.lookup
    assert index.items is None and isinstance(engine.ids, StoreIds) and isinstance(index.catalog_values, StoreValues)
    assert not isinstance(engine.catalog.map, dict) and engine.catalog._records is None
    assert engine.vsc.descriptions is None and engine.vsc.embeddings is None
    assert engine.duplicates._groups is None and not hasattr(index, "groups") and lookup.capacity == CACHE_ROWS
    monkeypatch.setattr(lookup, "capacity", 4)
    lookup.remember([])  # evict down to the capacity
    assert len(lookup) <= 4
    assert engine.ids == faiss.ids and [engine.position(i) for i in faiss.ids[::37]] == list(range(0, 300, 37))
    assert engine.ids[-1] == faiss.ids[-1] and engine.ids[5:9] == tuple(faiss.ids[5:9])
    assert engine.ids[::-100] == tuple(faiss.ids[::-100]) and engine.ids[7:3] == ()
    for outside in (300, -301):
        with pytest.raises(IndexError):
            engine.ids[outside]
    assert faiss.ids[17] in engine.ids and "no such id" not in engine.ids and engine.ids.index(faiss.ids[17]) == 17
    assert engine.catalog.map.get("no such id") is None and "\ud800" not in engine.catalog.map
    with pytest.raises(QueryError, match="local index"):
        engine.duplicates.groups()
    for filters in ({"gender": "men"}, {"masterCategory": ["APPAREL", " footwear "], "usage": "casual"}, None):
        want = faiss.allowed_mask(filters, [faiss.ids[4]])
        assert engine.allowed_mask(filters, [faiss.ids[4]]) is None  # the collection filters
        assert index.count(filters, [faiss.ids[4]]) == (len(faiss.ids) - 1 if want is None else int(want.sum()))
    reference = SearchService(EngineRegistry.from_engines({"faiss": faiss}))
    assert service.filter_choices() == reference.filter_choices()
    assert service.image_folders() == reference.image_folders()
    types = tuple(sorted(set(faiss.index.items["articleType"])))
    assert service.example_photos(types) == reference.example_photos(types)
    assert service.image_path(faiss.ids[9]) == reference.image_path(faiss.ids[9])
    assert same_ids(list(faiss.ids), engine.ids) and not same_ids(list(faiss.ids[::-1]), engine.ids)
    items = faiss.index.items
    rare = items["articleType"].value_counts().index[-1]  # one item
    women = int((items["gender"] == "Women").sum())
    for filters, draws in (({"gender": "women"}, 200), ({"articleType": rare}, 3)):
        picked = []
        for _ in range(draws):
            row = engine.catalog.random_row(filters)
            want = items.iloc[faiss.position(row["id"])]
            assert {k: row[k] for k in ("title", "image_path")} == {k: want[k] for k in ("title", "image_path")}
            assert row[next(iter(filters))].casefold() == next(iter(filters.values())).casefold()
            picked.append(row["id"])
        # uniform: 200 draws over `women` items reach ~women * (1 - exp(-200 / women)) distinct ones
        assert len(set(picked)) >= 0.6 * women * (1 - np.exp(-draws / women)) or draws < 10
    assert engine.catalog.random_row({"gender": "nobody"}) is None
    for query, filters in (("black sneakers for women", None), ("casual shirt", {"gender": "Men"})):
        assert_same(faiss.search_text(query, k=10, filters=filters), engine.search_text(query, k=10, filters=filters))
    assert_same(faiss.search_item(faiss.ids[42], k=10), engine.search_item(faiss.ids[42], k=10))
    assert len(lookup) <= 4
    top = engine.search_text("black sneakers for women", k=10)[0]
    store = engine.backend.store
    store.client.set_payload(store.name, payload={"title": "Renamed in the collection"}, points=[point_id(top.id)])
    try:
        assert engine.search_text("black sneakers for women", k=10)[0].title == "Renamed in the collection"
    finally:
        store.client.set_payload(store.name, payload={"title": top.title}, points=[point_id(top.id)])
    assert engine.search_text("black sneakers for women", k=10)[0].title == top.title
    # a row read outside a ranking (the photo route) is re-read once older than ROW_TTL_S
    item, path = faiss.ids[9], reference.image_path(faiss.ids[9])
    service.image_path(item)
    store.client.set_payload(store.name, payload={"image_path": "moved.jpg"}, points=[point_id(item)])
    try:
        assert service.image_path(item) == path  # cached, younger than the TTL
        monkeypatch.setattr(lookups, "ROW_TTL_S", 0.0)
        assert service.image_path(item) == "moved.jpg"
    finally:
        store.client.set_payload(store.name, payload={"image_path": path}, points=[point_id(item)])


def test_a_missing_or_stale_serving_record_is_refused_clearly(served_alone, catalog_dir):
    """Refused with the command that fixes it and no path; the build command run again on the up-to-date collection
    rewrites a record of an older format without encoding anything."""
    from modeling.encoders.loading import load_model
    from modeling.retrieval.backends.qdrant.catalog import SERVING_KEY, StoreCatalog
    from modeling.retrieval.backends.qdrant.store import QdrantStoreError
    from modeling.retrieval.engine.stored import build_store

    _, engine, model_dir = served_alone
    store = engine.backend.store
    record = engine.index.record
    try:
        for tampered, message in [({}, "holds no serving record"),
                                  (dict(record, format_version=0), "serving record of format 0"),
                                  (dict(record, catalog_signature="0" * 16), "its catalog_signature differs")]:
            store.client.update_collection(store.name, metadata={SERVING_KEY: tampered or None})
            with pytest.raises(QdrantStoreError, match=message) as error:
                StoreCatalog.read(store)
            assert "build_index" in str(error.value) and str(store.config.path) not in str(error.value)
            assert "Error" not in str(error.value)
        store.client.update_collection(store.name, metadata={SERVING_KEY: dict(record, format_version=0)})
        model, _, processor = load_model(model_dir)
        report = build_store(model, processor, catalog_dir, store.config, model_info=engine.index.manifest["model"],
                             sentence_encoder=engine.sentence_encoder, batch_size=100, split="val",
                             max_items=len(engine.ids), client=store.client)
        assert report.up_to_date and report.items == 0  # nothing encoded
        refreshed = StoreCatalog.read(store)
        assert {k: v for k, v in refreshed.record.items() if k != "intent_heads"} == \
            {k: v for k, v in record.items() if k != "intent_heads"}
        everything = range(len(engine.ids))
        assert refreshed.group_keys(everything) == engine.index.group_keys(everything)
    finally:
        store.client.update_collection(store.name, metadata={SERVING_KEY: record})
    assert StoreCatalog.read(store).record == record


def test_a_store_alone_leaves_the_second_photo_encoder_off(heads_model_dir, monkeypatch, caplog):
    """The app asks for the second photo encoder by default; served from a collection alone it would need a local
    index of the whole catalog and the catalog's vectors in process: it stays off, with a warning, and no folder is
    written."""
    from modeling.retrieval.engine import loading, stored
    from modeling.retrieval.backends.qdrant.store import QdrantConfig

    def no_photo_index(*args, **kwargs):
        raise AssertionError("a store alone built the second photo encoder's index")

    monkeypatch.setattr(loading, "load_photo_fusion", no_photo_index)
    monkeypatch.setattr(stored, "load_store_parts", lambda *a, **k: {"index": "the collection's catalog"})
    with caplog.at_level("WARNING"):
        parts = loading.load_engine_parts(heads_model_dir, heads_model_dir / "index", text_encoder=None,
                                          vector_store="qdrant-edge", qdrant=QdrantConfig(path="unused", edge=True),
                                          photo_model="efficientnet-lite0", photo_index=heads_model_dir / "photo")
    assert parts["photo_fusion"] is None and "second photo encoder" in caplog.text
    assert not (heads_model_dir / "photo").exists() and not (heads_model_dir / "index").exists()


def test_store_values_read_per_position_like_the_item_table(served_alone, faiss_engine):
    """The collection's attribute values per position (`StoreValues`: head labels, `ScoreTerm` sums) equal the
    item table's; the display values are the item table's, first appearance first."""
    from modeling.retrieval.common.ranking import AttributeTable, ScoreTerm
    from modeling.retrieval.common.types import QueryError

    _, engine, _ = served_alone
    faiss, _ = faiss_engine
    items, values = faiss.index.items, engine.index.catalog_values
    attributes = ["gender", "baseColour", "articleType"]
    assert {a: values.values[a] for a in attributes} == {a: [str(v) for v in items[a].unique()] for a in attributes}
    positions = np.array([0, 5, 99, 3, 299, 5])
    terms = (ScoreTerm("gender", ("Men", "Unisex"), 0.2), ScoreTerm("gender", ("Women",), -0.1),
             ScoreTerm("baseColour", ("Red",), 0.05), ScoreTerm("articleType", ("Tshirts", "nope"), 0.3),
             ScoreTerm("usage", ("Casual",), 1.0))
    np.testing.assert_array_equal(values.table(attributes).evaluate(terms, positions),
                                  AttributeTable(items, attributes).evaluate(terms, positions))
    labels = ["Black", "Red", "White", "Blue"]
    lookup = {v: i for i, v in enumerate(labels)}
    np.testing.assert_array_equal(values.labels("baseColour", labels)[positions],
                                  [lookup.get(v, -1) for v in items["baseColour"].iloc[positions]])
    with pytest.raises(QueryError, match="local index"):
        values.table(attributes).evaluate(terms)
    with pytest.raises(ValueError, match="unknown filter keys"):
        values.mask({"title": "x"})
