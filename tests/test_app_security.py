"""The served app from outside, as an API client and a browser see it: every refused input answered with a message
(never `{"error": null}`, never an exception name or a server path), one log line per refusal, uploads through the
app's own image loader, no private path in any response, security headers on every page, monitoring off."""

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageFile

import app
from modeling.serving.service import SearchService
from modeling.serving.registry import EngineRegistry

pytestmark = pytest.mark.slow

ANY3 = ["Any", "Any", "Any"]
INTERNALS = re.compile(r"Traceback|(?:Type|Value|OS|Key|Attribute|Index|Overflow|Runtime)Error|ComponentProcessing"
                       r"|InvalidPath|pydantic|NoneType|gradio\.")
LONG_ID = "7" * 100_000
SERVED = {}  # the served Blocks, for the indexes of its private handlers


@pytest.fixture(scope="module")
def served(small_engine, small_vae_engine):
    registry = EngineRegistry.from_engines({"tiny-dual-encoder": small_engine, "tiny-vae": small_vae_engine})
    service = SearchService(registry)
    demo = app.build_demo(registry, service)
    image_dir = str(Path(small_engine.index.items["image_path"].iloc[0]).parent)
    app.serve(demo, service, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True,
              allowed_paths=[image_dir], css=app.CSS)
    SERVED["demo"] = demo
    yield demo.local_url.rstrip("/")
    demo.close()


@pytest.fixture(scope="module")
def item_id(small_engine):
    return str(small_engine.index.items["id"].iloc[5])


def gradio_call(base: str, name: str, data, raw: bool = False) -> tuple[str, object]:
    """Gradio's two-step protocol: POST the arguments, read the event stream. Returns (event, payload)."""
    body = data if raw else json.dumps({"data": data})  # json.dumps writes Infinity, as JavaScript clients can
    response = httpx.post(f"{base}/gradio_api/call/{name}", content=body,
                          headers={"Content-Type": "application/json"}, timeout=60)
    if response.status_code != 200:
        return f"http {response.status_code}", response.json()
    event_id = response.json()["event_id"]
    stream = httpx.get(f"{base}/gradio_api/call/{name}/{event_id}", timeout=60).text
    event = re.findall(r"^event: (\w+)", stream, flags=re.MULTILINE)[-1]
    payload = json.loads(re.findall(r"^data: (.*)$", stream, flags=re.MULTILINE)[-1])
    return event, payload


# endpoint, arguments, what the message must say
BAD_GRADIO_CALLS = [
    ("similar_items_data", ["{item}", 5, "", *ANY3, "abc"], "re-ranking weight"),
    ("similar_items_data", ["{item}", 5, "", *ANY3, None], "re-ranking weight"),
    ("similar_items_data", ["{item}", 5, "", *ANY3, -1], "re-ranking weight"),
    ("similar_items_data", [LONG_ID, 5, "", *ANY3, 0.0], "100,000 characters"),
    ("similar_items_data", ["no-such-item", 5, "", *ANY3, 0.0], "No item"),
    ("search_text_data", ["red dress", float("inf"), "", *ANY3], "whole number from 1 to 50"),
    ("search_text_data", ["red dress", 0, "", *ANY3], "whole number from 1 to 50"),
    ("search_text_data", ["red dress", 10**9, "", *ANY3], "whole number from 1 to 50"),
    ("search_text_data", ["red dress", 3.7, "", *ANY3], "whole number from 1 to 50"),
    ("search_text_data", ["red dress", "abc", "", *ANY3], "whole number from 1 to 50"),
    ("search_text_data", ["red dress", 5, "", "Nobody", "Any", "Any"], "Unknown gender"),
    ("search_text_data", ["red dress", 5, "", "Any", "Any", "Plaid"], "Unknown colour"),
    ("search_text_data", ["red dress", 5, "x" * 5000, *ANY3], "Unknown model"),
    ("search_text_data", ["", 5, "", *ANY3], "Type what you are looking for"),
    ("search_text_data", ["red dress"], "takes 6 values"),
    ("composed_item_data", [None, "make it blue", 5, "", *ANY3], "id of a catalog item"),
    ("search_text", ["red dress", "abc", "tiny-dual-encoder", *ANY3], "Results"),
    ("search_text", ["red dress", None, "tiny-dual-encoder", *ANY3], "Results"),
    ("search_text", ["red dress", 5, "tiny-dual-encoder", "Nobody", "Any", "Any"], "Gender"),
    ("search_image", [None, "abc", "tiny-dual-encoder", *ANY3, False, 0.3, ""], "Results"),
    ("search_image", [None, 5, "tiny-dual-encoder", *ANY3, False, 0.3, ""], "Upload a photo"),
    ("search_image", [None, 5, "tiny-dual-encoder", *ANY3, False, 0.3], "takes 10 values"),
    ("search_image", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, 5, "tiny-dual-encoder",
                      *ANY3, False, 0.3], "uploaded to this app first"),
    ("search_image", [{"path": "{photo}", "meta": {"_type": "gradio.FileData"}}, 5, "tiny-dual-encoder",
                      *ANY3, False, 0.3], "uploaded to this app first"),
    ("search_composed", [None, "make it blue", 5, "tiny-dual-encoder", *ANY3, "weighted sum", "abc"],
     "Text influence"),
    ("search_composed", [None, "make it blue", None, "tiny-dual-encoder", *ANY3, "weighted sum", 0.5], "Results"),
    ("random_product", [None, "tiny-dual-encoder", *ANY3, False, 0.3], "Results"),
    ("compare", ["", None, 5, *ANY3], "Type a query"),
]


def _fill(value, item, photo):
    if isinstance(value, str):
        return value.replace("{item}", item).replace("{photo}", photo)
    if isinstance(value, dict):
        return {k: _fill(v, item, photo) for k, v in value.items()}
    return value


def _check_message(message, expected: str):
    assert isinstance(message, str) and message, "an error without a message"
    assert expected in message, message
    assert not INTERNALS.search(message), message
    assert LONG_ID not in message and len(message) < 400, message
    assert not re.search(r"(?<![\w.])/(?:tmp|work|home|root|etc|usr)/", message), message


@pytest.mark.parametrize(("endpoint", "arguments", "expected"), BAD_GRADIO_CALLS,
                         ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(BAD_GRADIO_CALLS)])
def test_every_refused_gradio_call_has_a_message(served, item_id, small_engine, endpoint, arguments, expected,
                                                 capfd, caplog):
    photo = str(small_engine.index.items["image_path"].iloc[0])
    caplog.set_level(logging.INFO)
    event, payload = gradio_call(served, endpoint, [_fill(a, item_id, photo) for a in arguments])
    assert event == "error", payload
    _check_message(payload["error"], expected)
    # One line in the log, no traceback.
    assert "Traceback" not in capfd.readouterr().err and "Traceback" not in caplog.text
    assert [r for r in caplog.records if "refused" in r.getMessage()]


def test_the_image_endpoint_with_the_arguments_the_api_page_lists(served, small_engine):
    """/search_image as the API page describes it: the State holding a clicked item is not a parameter."""
    from gradio_client import Client, handle_file

    client = Client(served, analytics_enabled=False, verbose=False)
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/search_image"]
    photo = str(small_engine.index.items["image_path"].iloc[0])
    values = {"image": handle_file(photo), "k": 4, "model": "tiny-dual-encoder", "hybrid": False,
              "rerank_weight": 0.3}
    arguments = [values.get(p["parameter_name"], p.get("parameter_default", "Any"))
                 for p in parameters["parameters"]]
    _, data = client.predict(*arguments, api_name="/search_image")
    assert data["results"][0]["id"] == str(small_engine.index.items["id"].iloc[0])


BAD_JSON_CALLS = [
    ("search_text", {"query": "red dress", "k": "abc"}, "whole number from 1 to 50"),
    ("search_text", {"query": "red dress", "k": None}, "whole number from 1 to 50"),
    ("search_text", '{"query": "red dress", "k": Infinity}', "whole number from 1 to 50"),
    ("search_text", {"query": "red dress", "k": 3.7}, "whole number from 1 to 50"),
    ("search_text", {"query": "red dress", "colour": "Plaid"}, "Unknown colour"),
    ("search_text", {"query": "x" * 100_000}, "characters long"),
    ("search_text", {"k": 3}, "Missing field"),
    ("search_text", {"query": "red dress", "kk": 3}, "Unknown field"),
    ("search_text", "not json", "not valid JSON"),
    ("search_text", "[1, 2]", "JSON object"),
    ("similar_items", {"item_id": "{item}", "rerank_weight": "abc"}, "re-ranking weight"),
    ("similar_items", {"item_id": "{item}", "rerank_weight": -1}, "re-ranking weight"),
    ("similar_items", {"item_id": "{item}", "rerank_weight": 0.5}, "not available"),
    ("similar_items", {"item_id": LONG_ID}, "100,000 characters"),
    ("similar_items", {"item_id": "{item}", "model": "tiny-vae", "k": 0}, "whole number"),
    ("composed_item", {"item_id": "{item}", "text": ""}, "Type what you are looking for"),
    ("composed_item", {"item_id": "{item}", "text": "make it blue", "model": "tiny-vae"}, "image only"),
]


@pytest.mark.parametrize(("endpoint", "body", "expected"), BAD_JSON_CALLS,
                         ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(BAD_JSON_CALLS)])
def test_every_refused_json_call_has_a_message(served, item_id, endpoint, body, expected, capfd):
    content = body if isinstance(body, str) else json.dumps(_fill(body, item_id, ""))
    response = httpx.post(f"{served}/api/v1/{endpoint}", content=content,
                          headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 400, response.text
    _check_message(response.json()["error"], expected)
    assert "Traceback" not in capfd.readouterr().err


def test_json_routes_answer_like_the_gradio_endpoints(served, item_id, small_engine):
    from gradio_client import Client

    client = Client(served, analytics_enabled=False, verbose=False)
    for endpoint, body, name, arguments in [
        ("search_text", {"query": "black watches for men", "k": 5}, "/search_text_data",
         ["black watches for men", 5, "", *ANY3]),
        ("similar_items", {"item_id": item_id, "k": 4, "gender": "women"}, "/similar_items_data",
         [item_id, 4, "", "Women", "Any", "Any", 0.0]),
        ("composed_item", {"item_id": item_id, "text": "make it blue", "k": 3}, "/composed_item_data",
         [item_id, "make it blue", 3, "", *ANY3]),
    ]:
        response = httpx.post(f"{served}/api/v1/{endpoint}", json=body, timeout=60)
        assert response.status_code == 200, response.text
        direct, via_gradio = response.json(), client.predict(*arguments, api_name=name)
        assert [r["id"] for r in direct["results"]] == [r["id"] for r in via_gradio["results"]]
        assert len(direct["results"]) == body["k"]
    image = httpx.get(f"{served}{direct['results'][0]['image_url']}", timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert httpx.get(f"{served}/api/v1/images/..%2F..%2Fetc%2Fpasswd", timeout=30).status_code == 404


def test_no_server_path_leaves_the_server(served, item_id, small_engine):
    from gradio_client import Client, handle_file

    catalog_dir = str(Path(small_engine.index.items["image_path"].iloc[0]).parent)
    bodies = [httpx.post(f"{served}/api/v1/search_text", json={"query": "red dress", "k": 5}, timeout=60).text,
              httpx.post(f"{served}/api/v1/similar_items", json={"item_id": item_id}, timeout=60).text,
              json.dumps(gradio_call(served, "search_text_data", ["red dress", 5, "", *ANY3])[1]),
              json.dumps(gradio_call(served, "similar_items_data", [item_id, 5, "", *ANY3, 0.0])[1]),
              json.dumps(gradio_call(served, "composed_item_data", [item_id, "make it blue", 5, "", *ANY3])[1])]
    for body in bodies:
        assert catalog_dir not in body and str(Path(app.__file__).parent) not in body
        assert not re.search(r'"image_path": ?"/', body), body[:300]
    # The UI's endpoints: the structured results carry no server path either (Gradio serves the gallery's photos
    # from its own cache, under URLs of its own).
    client = Client(served, analytics_enabled=False, verbose=False, download_files=False)
    photo = str(small_engine.index.items["image_path"].iloc[0])
    for arguments, name in [(["red dress", 5, "tiny-dual-encoder", *ANY3], "/search_text"),
                            ([handle_file(photo), 5, "tiny-dual-encoder", *ANY3, False, 0.3], "/search_image")]:
        _, data = client.predict(*arguments, api_name=name)
        assert catalog_dir not in json.dumps(data)
    # A refused upload names the file, not its folder on the server.
    bad = Path(photo).parent.parent / "not-here"
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(_truncated_jpeg(Path(os.environ.get("TMPDIR", "/tmp"))))), 5,
                       "tiny-dual-encoder", *ANY3, False, 0.3, api_name="/search_image")
    assert "corrupt or truncated" in str(info.value) and "OSError" not in str(info.value)
    assert "/tmp/" not in str(info.value) and str(bad) not in str(info.value)


def _truncated_jpeg(folder: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "JPEG")
    path = folder / "truncated-upload.jpg"
    path.write_bytes(buffer.getvalue()[:300])
    return path


def test_security_headers_on_every_page(served, item_id):
    pages = [httpx.get(f"{served}/", timeout=30), httpx.get(f"{served}/gradio_api/info", timeout=30),
             httpx.get(f"{served}/config", timeout=30), httpx.get(f"{served}/api/v1/images/{item_id}", timeout=30),
             httpx.post(f"{served}/api/v1/search_text", json={"query": "red dress"}, timeout=30),
             httpx.post(f"{served}/api/v1/search_text", json={"query": ""}, timeout=30),
             httpx.get(f"{served}/no-such-page", timeout=30)]
    for response in pages:
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", response.url
        assert headers["x-frame-options"] == "SAMEORIGIN" and headers["referrer-policy"] == "same-origin"
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'self'" in csp and "object-src 'none'" in csp
    assert pages[0].status_code == 200 and "<html" in pages[0].text.lower()


def test_monitoring_is_off_unless_configured(served, monkeypatch):
    for path in ("/monitoring", "/monitoring/summary", "/gradio_api/monitoring"):
        assert httpx.get(f"{served}{path}", timeout=30).status_code in (403, 404), path
    monkeypatch.setenv("FASHION_MONITORING", "1")
    assert app.monitoring_enabled()


def test_the_app_turns_gradio_analytics_off_before_importing_gradio():
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    code = "import app, os, gradio.analytics as a; print(os.environ['GRADIO_ANALYTICS_ENABLED'], a.analytics_enabled())"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(app.__file__).parent, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]


# -- uploads go through the app's own loader ------------------------------------------------------------------------
def _ids(data) -> list[str]:
    return [r["id"] for r in data["results"]]


def test_uploads_reach_the_apps_loader_as_uploaded(served, small_engine, tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    client = Client(served, analytics_enabled=False, verbose=False, download_files=False)

    def search(path, name="/search_image"):
        if name == "/search_composed":
            return client.predict(handle_file(str(path)), "make it blue", 6, "tiny-dual-encoder", *ANY3,
                                  app.WEIGHTED_SUM, 0.5, api_name=name)[1]
        return client.predict(handle_file(str(path)), 6, "tiny-dual-encoder", *ANY3, False, 0.3, api_name=name)[1]

    photo = Image.open(small_engine.index.items["image_path"].iloc[3]).convert("L")
    eight, sixteen = tmp_path / "grey8.png", tmp_path / "grey16.png"
    photo.save(eight)
    Image.fromarray(np.asarray(photo).astype(np.uint16) * 257).save(sixteen)
    white = tmp_path / "white.png"
    Image.new("RGB", photo.size, "white").save(white)
    assert _ids(search(sixteen)) == _ids(search(eight)) != _ids(search(white))  # not clipped to white
    assert _ids(search(sixteen, "/search_composed")) == _ids(search(eight, "/search_composed"))
    # A transparent cut-out is searched on white, as its white-composited copy is.
    rgba = np.zeros((*photo.size[::-1], 4), dtype=np.uint8)
    rgba[..., :3] = np.asarray(Image.open(small_engine.index.items["image_path"].iloc[3]).convert("RGB"))
    rgba[..., 3] = 0
    rgba[10:-10, 10:-10, 3] = 255
    cut_out, on_white = tmp_path / "cut-out.png", tmp_path / "on-white.png"
    Image.fromarray(rgba).save(cut_out)
    composite = Image.new("RGB", photo.size, "white")
    composite.paste(Image.fromarray(rgba), mask=Image.fromarray(rgba[..., 3]))
    composite.save(on_white)
    assert _ids(search(cut_out)) == _ids(search(on_white))
    *_, compared = client.predict("", handle_file(str(sixteen)), 6, *ANY3, api_name="/compare")
    assert _ids(compared["tiny-dual-encoder"]) == _ids(search(eight))
    # A greyscale bomb is refused from its header: nothing decodes it, in Gradio or in the app.
    from tests.test_images import GREY_BOMB_SIDE, png_bomb

    bomb = png_bomb(tmp_path / "bomb.png", "L", GREY_BOMB_SIDE)
    decoded = []
    stock = ImageFile.ImageFile.load

    def load(self, *args, **kwargs):
        decoded.append(self.size)
        if self.size[0] * self.size[1] > 50_000_000:
            raise AssertionError("the bomb was decoded")
        return stock(self, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    for name in ("/search_image", "/search_composed"):
        with pytest.raises(Exception, match="megapixels") as info:
            search(bomb, name)
        assert "/tmp/" not in str(info.value)
    assert (GREY_BOMB_SIDE, GREY_BOMB_SIDE) not in decoded


@pytest.mark.browser
def test_the_page_works_under_its_content_security_policy(served, small_engine):
    """Gradio's page loads, searches and shows results in Chromium with the headers on, and the browser reports no
    Content-Security-Policy violation (an inline script or style Gradio needs would be refused and logged)."""
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            console = []
            page.on("console", lambda message: console.append(message.text))
            response = page.goto(served, wait_until="load")
            assert "content-security-policy" in response.headers
            page.wait_for_selector("#text-query", timeout=60_000)
            page.locator("#text-query textarea, #text-query input").first.fill("red dress")
            page.locator("#text-search").click()
            page.wait_for_selector("#results .caption-label", timeout=60_000)
            first = page.locator("#results .caption-label").all_inner_texts()
            assert first
            # An upload (image component, gallery), a click on a result, an example, the JSON accordion.
            page.get_by_role("tab", name="Image").click()
            page.locator("#query-image input[type=file]").set_input_files(small_engine.index.items["image_path"].iloc[0])
            page.wait_for_selector("#query-image img", timeout=30_000)
            page.locator("#image-search").click()
            page.wait_for_function("(before) => { const c = [...document.querySelectorAll('#results .caption-label')]"
                                   ".map(e => e.innerText); return c.length && c.join() !== before; }",
                                   arg=",".join(first), timeout=60_000)
            page.locator("#results button.thumbnail-item").nth(1).click()
            page.get_by_text("Structured results (what the API returns)").click()
            page.wait_for_timeout(1500)
        finally:
            browser.close()
    violations = [m for m in console if "Content Security Policy" in m or "Refused to" in m]
    assert not violations, violations


# -- limits before work: body size, nesting, content type ---------------------------------------------------------
def raw_exchange(base: str, head: str, chunks=(), timeout: float = 30) -> tuple[int, dict, bytes, float]:
    """Sends a request head (and body chunks, from a thread: the server may stop reading) over a raw socket and
    reads the reply. Returns (status, headers, body, seconds to the reply's first byte)."""
    import socket
    import threading
    import time
    from urllib.parse import urlsplit

    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
    start = time.perf_counter()
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")

    def write():
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: it read no further

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    reply, first = b"", None
    while b"\r\n\r\n" not in reply:
        data = sock.recv(65536)
        first = first or time.perf_counter()
        if not data:
            break
        reply += data
    head_text, _, body = reply.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", len(body))):
        data = sock.recv(65536)
        if not data:
            break
        body += data
    sock.close()
    return int(lines[0].split()[1]), headers, body, (first or time.perf_counter()) - start


def _assert_refusal(status, headers, body, expected_status, expected):
    assert status == expected_status, (status, body[:300])
    assert headers["x-content-type-options"] == "nosniff" and "content-security-policy" in headers
    _check_message(json.loads(body)["error"], expected)


@pytest.mark.parametrize("path", ["/api/v1/search_text", "/gradio_api/call/search_text_data", "/gradio_api/upload"])
def test_a_body_declared_too_large_is_refused_before_it_is_read(served, path):
    host = served.split("//")[1]
    status, headers, body, seconds = raw_exchange(
        served, f"POST {path} HTTP/1.1\nHost: {host}\nContent-Type: application/json\n"
                f"Content-Length: 5000000000\n")
    _assert_refusal(status, headers, body, 413, "larger than the limit")
    assert seconds < 5  # answered from the header: nothing of the 5 GB was waited for


def test_a_chunked_body_is_read_only_up_to_the_limit(served, caplog):
    host = served.split("//")[1]
    piece = b"x" * 100_000
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, headers, body, _ = raw_exchange(
        served, f"POST /api/v1/search_text HTTP/1.1\nHost: {host}\nContent-Type: application/json\n"
                f"Transfer-Encoding: chunked\n", [chunk] * 40)  # 4 MB offered, 1 MB allowed
    _assert_refusal(status, headers, body, 413, "1,000,000 bytes")
    assert "failed" not in caplog.text  # a refusal, not logged as a server error with a traceback
    # An upload under its own (larger) limit still goes through.
    ok = httpx.post(f"{served}/gradio_api/upload", files={"files": ("a.png", _png_bytes(), "image/png")}, timeout=30)
    assert ok.status_code == 200, ok.text


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return buffer.getvalue()


def test_deeply_nested_json_is_bad_input(served, capfd, caplog):
    caplog.set_level(logging.INFO)
    deep = "[" * 60_000 + "]" * 60_000
    response = httpx.post(f"{served}/api/v1/search_text", content=deep, headers={"Content-Type": "application/json"},
                          timeout=30)
    assert response.status_code == 400
    _check_message(response.json()["error"], "nested too deeply")
    nested_value = '{"query": ' + "[" * 900 + "]" * 900 + "}"
    response = httpx.post(f"{served}/api/v1/search_text", content=nested_value,
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400
    _check_message(response.json()["error"], "Type what you are looking for")
    gradio = httpx.post(f"{served}/gradio_api/call/search_text_data", content='{"data": ' + deep + "}",
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert 400 <= gradio.status_code < 500
    assert "Traceback" not in capfd.readouterr().err and "Traceback" not in caplog.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_routes_take_json_only(served, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{served}/api/v1/search_text", content=b'{"query": "red dress"}', headers=headers,
                          timeout=30)
    assert response.status_code == 415
    _check_message(response.json()["error"], "application/json")
    assert httpx.post(f"{served}/api/v1/search_text", content=b'{"query": "red dress"}', timeout=30,
                      headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


# -- hosts, origins, headers on every reply ---------------------------------------------------------------------------
def _has_security_headers(response) -> bool:
    csp = response.headers.get("content-security-policy", "")
    return response.headers.get("x-content-type-options") == "nosniff" and "frame-ancestors" in csp


def test_unknown_hosts_get_nothing(served):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    for path in ("/", "/gradio_api/info", "/api/v1/search_text"):
        response = httpx.get(f"{served}{path}", headers={"Host": "evil.example", "Origin": "http://evil.example"},
                             timeout=30)
        assert response.status_code == 400 and _has_security_headers(response), path
        assert "access-control-allow-origin" not in response.headers
    assert httpx.get(f"{served}/", headers={"Host": "localhost"}, timeout=30).status_code == 200


def test_cross_origin_calls_get_no_cors_grant(served):
    search = {"query": "red dress", "k": 3}
    for origin in ("http://evil.example", "http://localhost:9999", "null"):
        simple = httpx.post(f"{served}/api/v1/search_text", json=search, headers={"Origin": origin}, timeout=30)
        assert simple.status_code == 200 and _has_security_headers(simple)  # a same-site page's call works ...
        assert "access-control-allow-origin" not in simple.headers  # ... a foreign page cannot read the answer
        assert "access-control-allow-credentials" not in simple.headers
        preflight = httpx.options(f"{served}/api/v1/search_text", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
        assert "access-control-allow-origin" not in preflight.headers and _has_security_headers(preflight)
        for path in ("/gradio_api/info", "/config"):
            page = httpx.get(f"{served}{path}", headers={"Origin": origin}, timeout=30)
            assert "access-control-allow-origin" not in page.headers, path


def _asgi_app(registry, **kwargs):
    from fastapi import FastAPI

    from modeling.serving.http import app_kwargs

    api = FastAPI(**app_kwargs(SearchService(registry), **kwargs))

    @api.get("/boom")
    def boom():
        raise RuntimeError("/secret/path/model.bin exploded")

    return api


def test_configured_origins_and_error_pages(small_engine, monkeypatch):
    from starlette.testclient import TestClient

    registry = EngineRegistry.from_engines({"tiny-dual-encoder": small_engine})
    monkeypatch.setenv("FASHION_ALLOWED_HOSTS", "shop.example.com")
    monkeypatch.setenv("FASHION_CORS_ORIGINS", "https://shop.example.com")
    client = TestClient(_asgi_app(registry), base_url="http://shop.example.com", raise_server_exceptions=False)
    allowed = client.options("/api/v1/search_text", headers={
        "Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "access-control-allow-credentials" not in allowed.headers and _has_security_headers(allowed)
    other = client.options("/api/v1/search_text", headers={"Origin": "https://evil.example",
                                                            "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers
    failed = client.get("/boom")  # an unexpected failure: a generic message, the headers, no internals
    assert failed.status_code == 500 and _has_security_headers(failed)
    _check_message(failed.json()["error"], "failed unexpectedly")
    assert TestClient(_asgi_app(registry), base_url="http://elsewhere.example").get("/boom").status_code == 400


# -- one validation for every entry point -------------------------------------------------------------------------------
SAME_REFUSALS = [
    ({"query": "red dress", "model": False}, "Unknown model"),
    ({"query": "red dress", "model": 0}, "Unknown model"),
    ({"query": "\u200b\u200c\u2060\ufeff"}, "Type what you are looking for"),
    ({"query": " \u200b \u00ad "}, "Type what you are looking for"),
    ({"query": "red dress", "k": "\uff11\uff10"}, "whole number from 1 to 50"),  # full-width "10"
    ({"query": "red dress", "k": "\u0665"}, "whole number from 1 to 50"),  # Arabic-Indic 5
    ({"query": "red dress", "k": True}, "whole number from 1 to 50"),
    ({"query": "red dress", "gender": False}, "Unknown gender"),
]


@pytest.mark.parametrize(("fields", "expected"), SAME_REFUSALS, ids=[str(i) for i in range(len(SAME_REFUSALS))])
def test_json_routes_and_gradio_endpoints_refuse_alike(served, fields, expected):
    order = ["query", "k", "model", "gender", "category", "colour"]
    defaults = {"k": 10, "model": "", "gender": "Any", "category": "Any", "colour": "Any"}
    event, payload = gradio_call(served, "search_text_data", [{**defaults, **fields}[f] for f in order])
    response = httpx.post(f"{served}/api/v1/search_text", json=fields, timeout=30)
    assert event == "error" and response.status_code == 400, (payload, response.text)
    _check_message(payload["error"], expected)
    assert response.json()["error"] == payload["error"]


# -- admission: the queue's bounds, no way around them, private handlers checked ----------------------------------------
def call_by_index(base: str, fn_index: int, data: list, timeout: float = 60) -> dict:
    """A handler called by its index through Gradio's queue, as the page calls private ones. Returns the last
    message of the event stream (process_completed: {"success": ..., "output": {...}})."""
    session = f"test-{fn_index}-{os.getpid()}"
    joined = httpx.post(f"{base}/gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                                                                "session_hash": session}, timeout=timeout)
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", f"{base}/gradio_api/queue/data", params={"session_hash": session},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("no process_completed message")


def _private_index(name: str) -> int:
    return next(i for i, fn in SERVED["demo"].fns.items()
                if getattr(fn.fn, "__name__", "") == name and fn.api_visibility == "private")


def test_queued_endpoints_cannot_be_called_around_the_queue(served):
    response = httpx.post(f"{served}/gradio_api/run/search_text", json={"data": ["red dress", 5, "tiny-dual-encoder",
                                                                               *ANY3]}, timeout=30)
    assert response.status_code == 404 and "queue" in response.text
    direct = httpx.post(f"{served}/gradio_api/run/search_text_data", json={"data": ["red dress", 5, "", *ANY3]},
                        timeout=30)  # a structured-data endpoint without Gradio's queue: the service admits it
    assert direct.status_code == 200 and direct.json()["data"][0]["results"]
    assert SERVED["demo"]._queue.max_size == app.QUEUE_SIZE


def test_private_handlers_check_what_they_are_sent(served, item_id, capfd, caplog):
    caplog.set_level(logging.INFO)
    many = {"model": "tiny-dual-encoder", "results": [{"rank": 1, "title": "x", "duplicates": [item_id] * 10_000}]}
    done = call_by_index(served, _private_index("show_duplicates"), [many])
    assert done["success"], done
    assert len(done["output"]["data"][1]) == app.MAX_DUPLICATES_SHOWN  # looked up no more than it shows
    for bad in ({"results": "x" * 1000}, {"results": [1, 2, 3]}, {"results": [{}] * (app.MAX_K + 1)},
                {"results": [{"duplicates": "15970"}]}):
        refused_call = call_by_index(served, _private_index("show_duplicates"), [bad])
        assert not refused_call["success"]
        _check_message(refused_call["output"]["error"], "run the search again")
    assert "Traceback" not in capfd.readouterr().err and "Traceback" not in caplog.text
    garbage = call_by_index(served, _private_index("summary_line"), [{"summary": 5, "results": [{}]}])
    assert not garbage["success"] and garbage["output"]["error"]  # a message, never an empty error
    _check_message(garbage["output"]["error"], "unexpectedly")
