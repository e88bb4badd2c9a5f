"""The app: handlers without a server, then the real server called through gradio_client (every endpoint)."""

import io
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from modeling.serving.registry import EngineRegistry


@pytest.fixture(scope="module")
def registry(small_engine, small_vae_engine):
    return EngineRegistry.from_engines({"tiny-dual-encoder": small_engine, "tiny-vae": small_vae_engine})


@pytest.fixture(scope="module")
def handlers(registry):
    return app.Handlers(registry)


def test_text_handler_returns_gallery_and_structured_results(handlers, small_engine):
    gallery, data = handlers.search_text("black watches for men", 7)
    assert len(data["results"]) == 7 and len(gallery) == 7
    assert data["model"] == "tiny-dual-encoder" and data["mode"] == "text"
    first = data["results"][0]
    assert {"id", "title", "score", "visual_score", "text_score", "vsc", "attributes"} <= set(first)
    path, caption = gallery[0]  # the gallery shows the photo from inside the server; the data names it publicly
    assert Path(path).is_absolute() and first["image_path"] == f"images/{Path(path).name}"
    assert first["image_url"] == f"/api/v1/images/{first['id']}" and first["title"] in caption
    assert f"VSC {first['vsc']:.2f}" in caption and f"cosine {first['visual_score']:.3f}" in caption
    assert data["summary"]["vsc@k"] == pytest.approx(np.mean([r["vsc"] for r in data["results"]]))
    line = app.summary_line(data)
    assert line.startswith("**7 results** · mean cosine") and f"VSC@7 {data['summary']['vsc@k']:.3f}" in line
    expected = small_engine.search_text("black watches for men", k=7)
    assert [r["id"] for r in data["results"]] == [r.id for r in expected]


def test_filters_reach_the_engine(handlers):
    _, data = handlers.search_text("shirt", 5, None, "Women", app.ANY, app.ANY)
    assert data["results"] and all(r["attributes"]["gender"] == "Women" for r in data["results"])
    _, data = handlers.search_text("shirt", 5, None, app.ANY, app.ANY, "Black")
    assert data["results"] and all(r["attributes"]["baseColour"] == "Black" for r in data["results"])


def test_image_upload_has_no_vsc_but_a_catalog_item_does(handlers, small_engine):
    row = small_engine.index.items.iloc[3]
    gallery, data = handlers.search_image(row["image_path"], 5)
    assert data["results"][0]["id"] == row["id"]  # the photo itself comes first
    assert all(r["vsc"] is None for r in data["results"]) and "VSC n/a" in gallery[0][1]
    assert "VSC@5 n/a" in app.summary_line(data)
    _, data = handlers.search_image(None, 5, item_id=row["id"])
    assert row["id"] not in [r["id"] for r in data["results"]]  # "more like this" leaves the item out
    assert all(r["vsc"] is not None for r in data["results"]) and data["query"] == {"item_id": row["id"]}


def test_hybrid_reranking_needs_a_reranker(handlers, small_engine):
    photo = small_engine.index.items["image_path"].iloc[0]
    with pytest.raises(gr.Error, match="Hybrid re-ranking is not available"):
        handlers.search_image(photo, 5, None, app.ANY, app.ANY, app.ANY, True, 0.3)
    _, data = handlers.search_image(photo, 5, None, app.ANY, app.ANY, app.ANY, False, 0.3)  # off: plain search
    assert all(r["rerank_score"] is None for r in data["results"])


def test_image_only_model_answers_images_and_refuses_text(handlers, small_engine):
    photo = small_engine.index.items["image_path"].iloc[0]
    _, data = handlers.search_image(photo, 4, "tiny-vae")
    assert data["model"] == "tiny-vae" and len(data["results"]) == 4
    with pytest.raises(gr.Error, match="image only"):
        handlers.search_text("red dress", 4, "tiny-vae")
    with pytest.raises(gr.Error, match="Unknown model"):
        handlers.search_text("red dress", 4, "no-such-model")


def test_composed_handler_methods_and_reference_item(handlers, small_engine):
    photo = small_engine.index.items["image_path"].iloc[0]
    _, data = handlers.search_composed(photo, "make it blue", 6, None, app.ANY, app.ANY, app.ANY,
                                       app.WEIGHTED_SUM, 0.8)
    expected = small_engine.search_composed(photo, "make it blue", k=6, text_weight=0.8, method="sum")
    assert [r["id"] for r in data["results"]] == [r.id for r in expected]
    # The tiny model has no learned combiner: choosing it falls back to the weighted sum.
    _, data = handlers.search_composed(photo, "make it blue", 6, method=app.COMBINER, text_weight=0.8)
    assert data["query"]["method"] == "sum" and [r["id"] for r in data["results"]] == [r.id for r in expected]
    item = small_engine.index.items["id"].iloc[0]
    _, data = handlers.search_composed(None, "make it blue", 6, item_id=item)
    assert item not in [r["id"] for r in data["results"]] and all(r["vsc"] is not None for r in data["results"])


class _Select:
    """What Gradio passes to a gallery's select handler."""

    def __init__(self, index):
        self.index = index


def test_clicking_a_result_makes_it_the_query_and_keeps_the_text(handlers, small_engine):
    _, data = handlers.search_text("blue shirt", 6)
    clicked = data["results"][2]
    image, ref, image_item, ref_item, tabs, gallery, new = handlers.refine(
        _Select(2), data, "text", "", 6, None, app.ANY, app.ANY, app.ANY, False, 0.3, app.COMBINER, 0.5)
    photo = small_engine.index.items.set_index("id").loc[clicked["id"], "image_path"]
    assert image == photo and image_item == clicked["id"] and tabs.constructor_args["selected"] == "image"
    assert new["query"] == {"item_id": clicked["id"]} and clicked["id"] not in [r["id"] for r in new["results"]]
    # In composed mode with a change text, the clicked product becomes the reference; the text stays.
    image, ref, image_item, ref_item, tabs, gallery, again = handlers.refine(
        _Select(0), new, "composed", "make it red", 6, None, app.ANY, app.ANY, app.ANY, False, 0.3, app.COMBINER,
        0.5)
    assert ref == small_engine.index.items.set_index("id").loc[new["results"][0]["id"], "image_path"]
    assert ref_item == new["results"][0]["id"]
    assert again["mode"] == "composed" and again["query"]["text"] == "make it red"
    with pytest.raises(gr.Error, match="no longer"):
        handlers.refine(_Select(99), new, "text", "", 6, None, app.ANY, app.ANY, app.ANY, False, 0.3, app.COMBINER,
                        0.5)


def test_compare_runs_every_model(handlers, small_engine):
    *galleries, data = handlers.compare("red dress", None, 5)
    assert set(data) == {"tiny-dual-encoder", "tiny-vae"} and len(galleries) == 2
    assert len(data["tiny-dual-encoder"]["results"]) == 5 and "image only" in data["tiny-vae"]["error"]
    assert "image only" in galleries[1].constructor_args["label"]
    photo = small_engine.index.items["image_path"].iloc[0]
    *galleries, data = handlers.compare("", photo, 3)
    assert all(len(data[m]["results"]) == 3 for m in data)
    *_, data = handlers.compare("make it black", photo, 3)
    assert data["tiny-dual-encoder"]["mode"] == "composed" and data["tiny-vae"]["error"]
    with pytest.raises(gr.Error, match="Type a query"):
        handlers.compare("  ", None)


def test_random_product_searches_from_a_catalog_item(handlers):
    image, item_id, gallery, data = handlers.random_product(4, None, "Women", app.ANY, app.ANY, False, 0.3)
    assert Path(image).exists() and data["query"] == {"item_id": item_id}
    assert all(r["attributes"]["gender"] == "Women" for r in data["results"])


def test_structured_endpoints(handlers, small_engine):
    data = handlers.search_text_data("red dress", 3)
    assert len(data["results"]) == 3 and data["summary"]["k"] == 3
    item = small_engine.index.items["id"].iloc[5]
    assert len(handlers.similar_items_data(item, 4)["results"]) == 4
    assert handlers.composed_item_data(item, "make it green", 4)["mode"] == "composed"


def _png(size=(30, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, "PNG")
    return buffer.getvalue()


def test_bad_inputs_raise_clear_errors_and_the_next_query_works(handlers, small_engine, tmp_path):
    with pytest.raises(gr.Error, match="Type what you are looking for"):
        handlers.search_text("  ", 10)
    with pytest.raises(gr.Error, match="characters long"):
        handlers.search_text("dress " * 200, 10)
    with pytest.raises(gr.Error, match="Upload"):
        handlers.search_image(None, 10)
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a picture")
    with pytest.raises(gr.Error, match="not an image|cannot be read|corrupt|unreadable|identify"):
        handlers.search_image(str(not_image), 10)
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(_png()[:60])
    with pytest.raises(gr.Error):
        handlers.search_image(str(corrupt), 10)
    huge = tmp_path / "huge.png"  # 12,000 x 12,000 pixels, a few hundred kB on disk
    Image.new("L", (12_000, 12_000)).save(huge, "PNG")
    with pytest.raises(gr.Error, match="large|pixels"):
        handlers.search_image(str(huge), 10)
    with pytest.raises(gr.Error, match="Type"):
        handlers.search_composed(small_engine.index.items["image_path"].iloc[0], "", 10)
    _, data = handlers.search_text("watches", 3)
    assert len(data["results"]) == 3


def test_unexpected_errors_are_reported_without_a_traceback(handlers, monkeypatch, caplog):
    engine = handlers.registry.get()

    def boom(*args, **kwargs):
        raise RuntimeError("index on fire")

    monkeypatch.setattr(engine, "search_text", boom)
    with pytest.raises(gr.Error) as info:
        handlers.search_text("red dress")
    assert "index on fire" not in info.value.message and "unexpectedly" in info.value.message
    assert "index on fire" in caplog.text


def test_no_results_warns_and_returns_empty(handlers, small_engine):
    items = small_engine.index.items
    # Two values the catalog holds that no item has together.
    gender, article = next((g, a) for g in sorted(set(items["gender"])) for a in sorted(set(items["articleType"]))
                           if not ((items["gender"] == g) & (items["articleType"] == a)).any())
    with pytest.warns(UserWarning, match="No products match"):
        gallery, data = handlers.search_text("shirt", 5, None, gender, article, app.ANY)
    assert gallery == [] and data["results"] == [] and data["summary"]["vsc@k"] is None
    assert app.summary_line(data).startswith("No results")


def test_product_image_passes_unreadable_uploads_to_the_engine(tmp_path):
    from gradio.data_classes import ImageData

    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    component = app.product_image()
    assert component.preprocess(ImageData(path=str(bad), orig_name="notes.png")) == str(bad)
    good = tmp_path / "red.png"
    good.write_bytes(_png())
    assert component.preprocess(ImageData(path=str(good), orig_name="red.png")) == str(good)
    assert component.preprocess(None) is None and not (Path(app.__file__).with_suffix(".pyi")).exists()


def test_arguments_and_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no runs/ here: no optional models
    monkeypatch.setenv("FASHION_EXTRA_MODELS", "vae=/models/vae, /models/clip-lora")
    monkeypatch.setenv("FASHION_RERANK_MODEL", "none")
    args = app.parse_args(["--model", "de=/models/dual", "--index", "/indexes/de"])
    registry = app.make_registry(args)
    assert registry.names == ["de", "vae", "clip-lora"] and registry.default == "de"
    assert registry.specs["de"].index_dir == "/indexes/de" and registry.specs["vae"].index_dir == "indexes/vae"
    assert args.rerank_model is None
    monkeypatch.delenv("FASHION_EXTRA_MODELS")
    assert app.parse_args([]).extra_model == [] and app.parse_args([]).model == app.DEFAULT_MODEL
    assert args.photo_model == app.DEFAULT_PHOTO_MODEL == registry.photo_model == "efficientnet-lite0"
    assert app.parse_args(["--photo-model", "none"]).photo_model is None
    monkeypatch.setenv("FASHION_PHOTO_MODEL", "NONE")
    assert app.make_registry(app.parse_args([])).photo_model is None


@pytest.mark.slow
def test_served_app_answers_every_endpoint(registry, small_engine, tmp_path):
    from gradio_client import Client, handle_file

    demo = app.build_demo(registry)
    image_dir = str(Path(small_engine.index.items["image_path"].iloc[0]).parent)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, allowed_paths=[image_dir],
                max_file_size=app.MAX_UPLOAD)
    try:
        client = Client(demo.local_url, analytics_enabled=False, verbose=False)
        names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert {"/search_text", "/search_image", "/search_composed", "/compare", "/random_product",
                "/search_text_data", "/similar_items_data", "/composed_item_data"} <= names
        any3 = ["Any"] * 3
        gallery, data = client.predict("red summer dress", 5, "tiny-dual-encoder", *any3, api_name="/search_text")
        assert len(data["results"]) == 5 and len(gallery) == 5 and Path(gallery[0]["image"]).exists()
        photo = small_engine.index.items["image_path"].iloc[0]
        gallery, data = client.predict(handle_file(photo), 4, "tiny-dual-encoder", *any3, False, 0.3,
                                       api_name="/search_image")
        assert data["results"][0]["id"] == small_engine.index.items["id"].iloc[0]
        _, data = client.predict(handle_file(photo), "make it blue", 4, "tiny-dual-encoder", *any3,
                                 app.WEIGHTED_SUM, 0.7, api_name="/search_composed")
        assert len(data["results"]) == 4 and data["mode"] == "composed"
        *galleries, data = client.predict("red dress", None, 3, *any3, api_name="/compare")
        assert len(galleries) == 2 and len(data["tiny-dual-encoder"]["results"]) == 3
        image, _, data = client.predict(4, "tiny-dual-encoder", *any3, False, 0.3, api_name="/random_product")
        item_id = data["query"]["item_id"]  # the State holding it is not part of the API
        assert Path(image).name == Path(small_engine.index.items.set_index("id").loc[item_id, "image_path"]).name
        data = client.predict("watches for men", 3, "", *any3, api_name="/search_text_data")
        assert len(data["results"]) == 3 and "image_path" in data["results"][0]
        data = client.predict(item_id, 3, "tiny-vae", *any3, 0.0, api_name="/similar_items_data")
        assert data["model"] == "tiny-vae" and len(data["results"]) == 3
        data = client.predict(item_id, "make it black", 3, "", *any3, api_name="/composed_item_data")
        assert data["mode"] == "composed"
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        with pytest.raises(Exception, match="image|Image|picture|read"):
            client.predict(handle_file(str(bad)), 4, "tiny-dual-encoder", *any3, False, 0.3,
                           api_name="/search_image")
        with pytest.raises(Exception, match="Type what you are looking for"):
            client.predict("", 4, "tiny-dual-encoder", *any3, api_name="/search_text")
        # The server keeps serving after the errors.
        _, data = client.predict("watches", 3, "tiny-dual-encoder", *any3, api_name="/search_text")
        assert len(data["results"]) == 3
    finally:
        demo.close()


def test_a_new_photo_replaces_a_clicked_item(handlers, small_engine):
    items = small_engine.index.items
    clicked, other = items.iloc[0], items.iloc[7]
    _, data = handlers.search_image(f"/tmp/gradio/cache/{Path(clicked['image_path']).name}", 3, item_id=clicked["id"])
    assert data["query"] == {"item_id": clicked["id"]}  # the clicked item's photo, served from Gradio's cache
    _, data = handlers.search_image(other["image_path"], 3, item_id=clicked["id"])
    assert data["query"]["image"] == "upload" and data["results"][0]["id"] == other["id"]
    _, data = handlers.search_composed(other["image_path"], "make it blue", 3, item_id=clicked["id"])
    assert "item_id" not in data["query"]


def test_text_answers_carry_the_understanding_and_chips_switch_it_off(handlers, small_engine):
    """The API returns what the engine understood; unticking a chip searches without that intent; a filter chip
    sets its dropdown."""
    query = "black sneakers for women not white"
    _, data = handlers.search_text(query, 10)
    understood = data["understood"]
    assert {"Women", "not White"} <= set(understood["chips"]) and "gender" in understood["chip_keys"]
    assert understood["ignored"] == [] and "duplicates" in data["results"][0]
    assert understood["context"] == [] and understood["context_chips"] == []  # nothing here is context
    chips, ticked, filters = app.chip_choices(data)
    assert ("Women", "gender") in chips and set(ticked) == {key for _, key in chips}
    assert ("Gender: Women", "gender=Women") in filters
    # Untick gender: the search runs without the gender boost (the engine's own ranking of that intent).
    kept = [key for key in ticked if key != "gender"]
    _, without = handlers.search_text_chips(query, 10, None, app.ANY, app.ANY, app.ANY, kept)
    assert without["understood"]["ignored"] == ["gender"]
    engine = small_engine
    expected = engine.search_text(query, k=10, intent=engine.understand(query).without("gender"))
    assert [r["id"] for r in without["results"]] == [r.id for r in expected]
    assert app.chip_choices(without)[1] == kept  # the unticked chip stays on show, unticked
    # One click makes a chip a filter.
    assert app.chip_to_filter("gender=Women", app.ANY, "Heels", app.ANY) == ["Women", "Heels", app.ANY]
    assert app.chip_to_filter(None, "Men", app.ANY, app.ANY) == ["Men", app.ANY, app.ANY]
    # Image answers carry no chips.
    assert app.chip_choices(handlers.search_image(small_engine.index.items["image_path"].iloc[0], 5)[1]) == \
        ([], [], [])


def test_context_is_shown_apart_and_greyed():
    """The product's context ("to go with a yellow skirt") shows beside the chips, greyed, never as a chip."""
    data = {"mode": "text", "understood": {"chips": ["Sandals"], "chip_keys": ["articleType"], "intents": [],
                                           "context_chips": ["Skirts", "Yellow <b>"], "ignored": []}}
    note = app.context_note(data)
    assert "Skirts · Yellow &lt;b&gt;" in note and "opacity" in note and "no boost" in note
    chips, note_update = app.show_chips(data)[0], app.show_chips(data)[2]
    assert chips.choices == [("Sandals", "articleType")] and note_update.visible
    assert app.context_note({**data, "mode": "image"}) == "" and not app.show_chips(None)[2].visible
    # The types the rest of the query favours among the product's ("shoes to go with a suit": Formal Shoes).
    implied = {"mode": "text", "understood": {**data["understood"], "context_chips": [], "implied": [
        {"attribute": "articleType", "values": ["Formal Shoes"], "phrase": "shoes + suit"}]}}
    assert "Favoured types: Formal Shoes (from shoes + suit)" in app.context_note(implied)
    assert "no boost" not in app.context_note(implied)
    for chip in ("articleType", "usage"):  # unticking the type or the usage chip switches the boost off: no note
        unticked = {**implied, "understood": {**implied["understood"], "ignored": [chip]}}
        assert app.context_note(unticked) == ""


def test_bad_chip_keys_are_refused_with_a_message(handlers):
    from modeling.serving.service import QueryError

    with pytest.raises(QueryError, match="Unknown chip key"):
        handlers.service.text("red dress", 5, ignore=["price"])
    assert handlers.service.text("red dress", 5, ignore="gender, not:baseColour").data["understood"]["ignored"] == \
        ["gender", "not:baseColour"]


def test_vector_store_flags(monkeypatch, tmp_path):
    """--vector-store qdrant needs a server URL or a local folder; the API key is read from the environment only and
    never shows in the configuration's repr."""
    from modeling.retrieval.backends.qdrant.store import QdrantStoreError

    monkeypatch.chdir(tmp_path)
    for name in ("FASHION_QDRANT_URL", "FASHION_QDRANT_PATH", "FASHION_VECTOR_STORE"):
        monkeypatch.delenv(name, raising=False)
    assert app.make_registry(app.parse_args(["--model", "/models/dual"])).vector_store == "faiss"
    with pytest.raises(QdrantStoreError, match="--qdrant-url"):
        app.make_registry(app.parse_args(["--vector-store", "qdrant"]))
    monkeypatch.setenv("FASHION_QDRANT_API_KEY", "s3cret-key")
    registry = app.make_registry(app.parse_args(["--vector-store", "qdrant", "--qdrant-url", "http://qdrant:6333"]))
    assert registry.vector_store == "qdrant" and registry.qdrant.url == "http://qdrant:6333"
    assert registry.qdrant.api_key == "s3cret-key" and "s3cret" not in repr(registry.qdrant)
    registry = app.make_registry(app.parse_args(["--vector-store", "qdrant", "--qdrant-path", str(tmp_path / "q")]))
    assert registry.qdrant.path == str(tmp_path / "q") and not registry.qdrant.edge
    # qdrant-edge: the real engine on shards in a folder (a URL is no substitute)
    registry = app.make_registry(app.parse_args(["--vector-store", "qdrant-edge", "--qdrant-path",
                                                 str(tmp_path / "e")]))
    assert registry.vector_store == "qdrant-edge" and registry.qdrant.edge
    assert registry.qdrant.path == str(tmp_path / "e")
    with pytest.raises(QdrantStoreError, match="qdrant-edge needs --qdrant-path"):
        app.make_registry(app.parse_args(["--vector-store", "qdrant-edge", "--qdrant-url", "http://qdrant:6333"]))


def test_collapsed_near_duplicates_can_be_opened(handlers):
    """'+N more like it': the collapsed items are listed under their result and shown in their own panel."""
    for query in ("watches", "tshirts for men", "blue jeans", "black shoes", "handbags", "kurtas"):
        _, data = handlers.search_text(query, 20)
        collapsed = [(r["rank"], d) for r in data["results"] for d in r["duplicates"]]
        if collapsed:
            break
    assert collapsed, "the 300 val items hold same-title near-duplicates"
    box, shown = handlers.show_duplicates(data)
    assert box.visible and len(shown) == min(len(collapsed), app.MAX_DUPLICATES_SHOWN)
    assert all(Path(path).exists() for path, _ in shown)
    assert shown[0][1].startswith(f"like #{collapsed[0][0]}:") and shown[0][1].endswith(f"({collapsed[0][1]})")
    assert any("more like it" in app.caption(r) for r in handlers.service.text(query, 20).results)
    box, shown = handlers.show_duplicates({"results": [{"rank": 1, "title": "x", "duplicates": []}]})
    assert not box.visible and shown == []


def test_two_clicks_on_the_photo_draw_the_box(tmp_path):
    """The box view: the first click marks a corner, the second the opposite one; the box is in the photo's pixels
    whatever size the view shows it at."""
    import types

    from PIL import Image

    photo = tmp_path / "big.jpg"
    Image.new("RGB", (960, 1280), (90, 120, 60)).save(photo)
    scale = app.BOX_VIEW_SIDE / 1280  # the view is shrunk to BOX_VIEW_SIDE pixels on its longer side
    text, view, corner = app.click_box(str(photo), None, types.SimpleNamespace(index=[300 * scale, 200 * scale]))
    assert text == "" and corner == pytest.approx((300, 200), abs=1) and max(view.size) == app.BOX_VIEW_SIDE
    text, view, corner = app.click_box(str(photo), corner, types.SimpleNamespace(index=[100 * scale, 900 * scale]))
    assert [int(v) for v in text.split(",")] == pytest.approx([100, 200, 300, 900], abs=2) and corner is None
    with pytest.raises(Exception, match="Upload a photo first"):
        app.click_box(None, None, types.SimpleNamespace(index=[1, 1]))
