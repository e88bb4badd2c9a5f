"""The serving layer on its own (no Gradio page): the endpoint table generates both transports, a field refuses a value
with the same message on both, `text` and `text_async` are one implementation, and the service's model and catalog
methods the app's handlers call."""

import asyncio
import inspect

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modeling.models.composition import COMPOSITION_METHODS as MODEL_METHODS
from modeling.serving import service as service_module
from modeling.serving.endpoints import ENDPOINTS, REQUIRED, gradio_function
from modeling.serving.http import API_PREFIX, app_kwargs
from modeling.serving.registry import EngineRegistry
from modeling.serving.service import COMPOSITION_METHODS, QueryError, SearchService

LONG_ID = "7" * 5000


@pytest.fixture(scope="module")
def service(small_engine, small_vae_engine):
    registry = EngineRegistry.from_engines({"tiny-dual-encoder": small_engine, "tiny-vae": small_vae_engine})
    return SearchService(registry)


@pytest.fixture(scope="module")
def client(service):
    with TestClient(FastAPI(**app_kwargs(service)), base_url="http://localhost") as client:  # an allowed host
        yield client


@pytest.fixture(scope="module")
def item_id(small_engine):
    return str(small_engine.index.items["id"].iloc[5])


def test_the_table_generates_the_json_routes(client):
    paths = {route.path: route.methods for route in client.app.routes if route.path.startswith(API_PREFIX)}
    assert {p for p in paths if "{" not in p} == {f"{API_PREFIX}/{name}" for name in ENDPOINTS}
    assert all(paths[f"{API_PREFIX}/{name}"] == {"POST"} for name in ENDPOINTS)


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_the_table_generates_the_gradio_functions(service, name):
    endpoint = ENDPOINTS[name]
    fn = gradio_function(endpoint, service)
    parameters = inspect.signature(fn).parameters
    assert fn.__name__ == endpoint.gradio_name == f"{name}_data" and fn.__doc__ == endpoint.doc
    assert list(parameters) == [f.name for f in endpoint.fields]
    assert [p.default for p in parameters.values()] == [f.default for f in endpoint.fields]
    assert fn.__annotations__ == {**{f.name: f.type for f in endpoint.fields}, "return": "dict"}
    # the JSON route takes the same fields: the required ones, then the optional ones with the same defaults
    assert endpoint.required == tuple(f.name for f in endpoint.fields if f.default is REQUIRED)
    assert endpoint.optional == {f.name: f.default for f in endpoint.fields if f.default is not REQUIRED}


def test_both_transports_answer_the_same(service, client, item_id):
    for name, values in [("search_text", {"query": "red dress", "k": 4, "gender": "women"}),
                         ("similar_items", {"item_id": item_id, "k": 3}),
                         ("composed_item", {"item_id": item_id, "text": "make it blue", "k": 3})]:
        via_json = client.post(f"{API_PREFIX}/{name}", json=values)
        assert via_json.status_code == 200, via_json.text
        via_gradio = gradio_function(ENDPOINTS[name], service)(**values)
        assert [r["id"] for r in via_json.json()["results"]] == [r["id"] for r in via_gradio["results"]]
        assert via_json.json()["query"] == via_gradio["query"] and len(via_gradio["results"]) == values["k"]


# endpoint, the other fields, the field refused, its value, what the message says
BAD_VALUES = [
    ("search_text", {"query": "red dress"}, "k", 0, "whole number from 1 to 50"),
    ("search_text", {"query": "red dress"}, "k", 3.7, "whole number from 1 to 50"),
    ("search_text", {"query": "red dress"}, "k", "abc", "whole number from 1 to 50"),
    ("search_text", {}, "query", "", "Type what you are looking for"),
    ("search_text", {}, "query", "x" * 5000, "characters long"),
    ("search_text", {"query": "red dress"}, "gender", "Nobody", "Unknown gender"),
    ("search_text", {"query": "red dress"}, "model", "no-such-model", "Unknown model"),
    ("similar_items", {}, "item_id", LONG_ID, "5,000 characters"),
    ("similar_items", {}, "item_id", None, "id of a catalog item"),
    ("similar_items", {}, "item_id", "no-such-item", "No item"),
    ("similar_items", {"item_id": "{item}"}, "rerank_weight", "abc", "re-ranking weight"),
    ("similar_items", {"item_id": "{item}"}, "rerank_weight", -1, "re-ranking weight"),
    ("similar_items", {"item_id": "{item}"}, "rerank_weight", 0.5, "not available"),
    ("composed_item", {"text": "make it blue"}, "item_id", None, "id of a catalog item"),
    ("composed_item", {"item_id": "{item}"}, "text", "", "Type what you are looking for"),
    ("composed_item", {"item_id": "{item}", "text": "make it blue"}, "colour", "Plaid", "Unknown colour"),
]


@pytest.mark.parametrize(("name", "others", "field", "value", "expected"), BAD_VALUES,
                         ids=[f"{n}-{f}-{i}" for i, (n, _, f, _, _) in enumerate(BAD_VALUES)])
def test_a_field_refuses_a_value_with_the_same_message_on_both_transports(service, client, item_id, name, others,
                                                                           field, value, expected):
    values = {k: item_id if v == "{item}" else v for k, v in others.items()} | {field: value}
    response = client.post(f"{API_PREFIX}/{name}", json=values)
    assert response.status_code == 400, response.text
    with pytest.raises(QueryError) as refused:
        gradio_function(ENDPOINTS[name], service)(**values)
    assert response.json()["error"] == service_module.user_message(refused.value)
    assert expected in response.json()["error"]


def test_text_and_text_async_take_the_same_arguments_and_answer_the_same(service):
    assert inspect.signature(SearchService.text) == inspect.signature(SearchService.text_async)
    assert inspect.iscoroutinefunction(SearchService.text_async)
    arguments = dict(query="black shoes for women", k=4, model="tiny-dual-encoder", gender="Any", category="Any",
                     colour="Any", ignore=["gender"])
    sync = service.text(**arguments).data
    awaited = asyncio.run(service.text_async(**arguments)).data
    assert {**sync, "took_ms": 0} == {**awaited, "took_ms": 0}
    assert sync["understood"]["ignored"] == ["gender"]
    with pytest.raises(QueryError, match="Unknown chip key"):
        asyncio.run(service.text_async("red dress", ignore=["nope"]))


def test_call_async_awaits_the_same_methods(service, item_id):
    sync = service.similar(item_id, 3).data
    awaited = asyncio.run(service.call_async("similar", item_id=item_id, k=3)).data
    assert [r["id"] for r in sync["results"]] == [r["id"] for r in awaited["results"]]


def test_model_info_and_random_items(service, small_engine):
    info = service.model_info()
    assert info["name"] == "tiny-dual-encoder" and info["products"] == len(small_engine.index)
    assert info["supports_text"] is True and isinstance(info["text_weight"], float)
    assert service.model_info("tiny-vae")["supports_text"] is False
    for _ in range(5):
        item, photo = service.random_item(None, "Women")
        row = small_engine.index.items.set_index("id").loc[item]
        assert row["gender"] == "Women" and row["image_path"] == photo
    with pytest.raises(QueryError, match="Unknown gender"):
        service.random_item(None, "Nobody")
    assert len(service.catalog_items()) == len(small_engine.index)


def test_composition_methods_are_the_models_in_the_apps_order():
    assert COMPOSITION_METHODS is MODEL_METHODS
    assert COMPOSITION_METHODS == ("combiner", "sum")
