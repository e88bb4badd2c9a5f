"""The app: handlers without a server, then the real server called through gradio_client."""

import gradio as gr
import numpy as np
import pytest

import app


def test_text_handler_returns_gallery_and_structured_results(small_engine):
    gallery, data = app.search_text("black watches for men", 7, engine=small_engine)
    assert len(data["results"]) == 7 and len(gallery) == 7
    first = data["results"][0]
    assert {"id", "title", "score", "visual_score", "text_score", "attributes"} <= set(first)
    path, caption = gallery[0]
    assert path == first["image_path"] and first["title"] in caption
    assert f"VSC {first['vsc']:.3f}" in caption and f"cosine {first['visual_score']:.3f}" in caption
    summary = data["summary"]
    assert summary["vsc@k"] == pytest.approx(np.mean([r["vsc"] for r in data["results"]]))


def test_filters_reach_the_engine(small_engine):
    _, data = app.search_text("shirt", 5, "Women", app.ANY, app.ANY, engine=small_engine)
    assert data["results"] and all(r["attributes"]["gender"] == "Women" for r in data["results"])


def test_bad_inputs_raise_user_errors(small_engine, tmp_path):
    with pytest.raises(gr.Error, match="Type what you are looking for"):
        app.search_text("  ", 10, engine=small_engine)
    with pytest.raises(gr.Error, match="Upload"):
        app.search_image(None, 10, engine=small_engine)
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    with pytest.raises(gr.Error):
        app.search_image(str(bad), 10, engine=small_engine)


def test_composed_handler_uses_the_text_weight_and_reports_errors(small_engine):
    photo = small_engine.index.items["image_path"].iloc[0]
    _, data = app.search_composed(photo, "make it blue", 6, text_weight=0.8, engine=small_engine)
    expected = small_engine.search_composed(photo, "make it blue", k=6, text_weight=0.8, method="sum")
    assert [r["id"] for r in data["results"]] == [r.id for r in expected]
    with pytest.raises(gr.Error, match="Upload"):
        app.search_composed(None, "make it blue", engine=small_engine)
    with pytest.raises(gr.Error, match="Type"):
        app.search_composed(photo, "", engine=small_engine)


def test_no_results_warns_and_returns_empty(small_engine):
    gallery, data = app.search_text("shirt", 5, app.ANY, "No Such Type", app.ANY, engine=small_engine)
    assert gallery == [] and data["results"] == [] and data["summary"]["vsc@k"] is None


@pytest.mark.slow
def test_served_app_answers_gradio_client(small_engine, tmp_path):
    from gradio_client import Client, handle_file

    demo = app.build_demo(small_engine)
    image_dir = str(__import__("pathlib").Path(small_engine.index.items["image_path"].iloc[0]).parent)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, allowed_paths=[image_dir])
    try:
        client = Client(demo.local_url, analytics_enabled=False, verbose=False)
        gallery, data = client.predict("red summer dress", 5, "Any", "Any", "Any", api_name="/search_text")
        assert len(data["results"]) == 5 and len(gallery) == 5
        photo = small_engine.index.items["image_path"].iloc[0]
        gallery, data = client.predict(handle_file(photo), 4, "Any", "Any", "Any", 0.0, api_name="/search_image")
        assert data["results"][0]["id"] == small_engine.index.items["id"].iloc[0]
        _, data = client.predict(handle_file(photo), "make it blue", 4, "Any", "Any", "Any", False, 0.7,
                                 api_name="/search_composed")
        assert len(data["results"]) == 4
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        with pytest.raises(Exception, match="image|Image|picture|read"):
            client.predict(handle_file(str(bad)), 4, "Any", "Any", "Any", 0.0, api_name="/search_image")
        # The server keeps serving after the error.
        _, data = client.predict("watches", 3, "Any", "Any", "Any", api_name="/search_text")
        assert len(data["results"]) == 3
    finally:
        demo.close()
