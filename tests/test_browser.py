"""The app in a real browser: Debian's Chromium driven by Playwright (never `playwright install`).

Text query -> captions name the article type; image upload; composed query; clicking a result changes the query
image and the results. Screenshots are saved under $ARTIFACTS_DIR (default artifacts/browser).
"""

import os
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

import app
from modeling.serving.registry import EngineRegistry

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "artifacts")) / "browser"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(small_engine, small_vae_engine):
    registry = EngineRegistry.from_engines({"tiny-dual-encoder": small_engine, "tiny-vae": small_vae_engine})
    demo = app.build_demo(registry)
    image_dir = str(Path(small_engine.index.items["image_path"].iloc[0]).parent)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, allowed_paths=[image_dir],
                max_file_size=app.MAX_UPLOAD, css=app.CSS)
    yield demo.local_url
    demo.close()


@pytest.fixture
def page(browser, served):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(served, wait_until="load")
    page.wait_for_selector("#text-query", timeout=60_000)
    yield page
    page.close()


def _results(page) -> list[str]:
    """The result captions currently shown (title, attributes, cosine and VSC of each)."""
    return page.locator("#results .caption-label").all_inner_texts()


def _wait_for_new_results(page, before: list[str], timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _results(page)
        if now and now != before:
            return now
        time.sleep(0.2)
    raise AssertionError(f"the results did not change within {timeout} s")


def _query_image_src(page, elem_id: str) -> str | None:
    image = page.locator(f"#{elem_id} img")
    return image.first.get_attribute("src") if image.count() else None


def _wait_for_src_change(page, elem_id: str, before: str | None, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        src = _query_image_src(page, elem_id)
        if src and src != before:
            return src
        time.sleep(0.2)
    raise AssertionError(f"the image in #{elem_id} did not change")


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_text_image_composed_and_click_to_refine(page, small_engine):
    # Text: the top results' captions name the queried article type; each shows cosine and VSC.
    page.locator("#text-query input, #text-query textarea").first.fill("watches")
    page.locator("#text-search").click()
    captions = _wait_for_new_results(page, [])
    assert len(captions) == 10
    assert all("Watches" in c for c in captions[:3]), captions[:3]
    assert all("cosine" in c and "VSC" in c for c in captions)
    # the summary follows the results in an event of its own: wait for it rather than read it mid-update
    expect(page.locator("#result-summary")).to_contain_text("10 results", timeout=30_000)
    _shot(page, "text")

    # Image: upload a catalog photo; the product itself comes first, with VSC n/a (a photo has no text).
    items = small_engine.index.items
    shirt = items[items["articleType"] == "Tshirts"].iloc[0]
    page.get_by_role("tab", name="Image").click()
    page.locator("#query-image input[type=file]").set_input_files(shirt["image_path"])
    uploaded = _wait_for_src_change(page, "query-image", None)
    page.locator("#image-search").click()
    captions = _wait_for_new_results(page, captions)
    assert captions[0].startswith(shirt["title"]) and "VSC n/a" in captions[0]
    _shot(page, "image")

    # Click a result: it becomes the query image and the results change.
    page.locator("#results button.thumbnail-item").nth(1).click()
    clicked_title = captions[1].splitlines()[0]
    refined = _wait_for_new_results(page, captions)
    assert _wait_for_src_change(page, "query-image", uploaded) != uploaded
    assert clicked_title not in [c.splitlines()[0] for c in refined[:1]]  # "more like this" leaves it out
    _shot(page, "refined")

    # Composed: reference photo + modification text.
    page.get_by_role("tab", name="Photo + change").click()
    page.locator("#reference-image input[type=file]").set_input_files(shirt["image_path"])
    _wait_for_src_change(page, "reference-image", None)
    page.locator("#change-text input, #change-text textarea").first.fill("make it blue")
    page.locator("#composed-search").click()
    composed = _wait_for_new_results(page, refined)
    assert len(composed) == 10 and all("VSC n/a" not in c for c in composed)
    _shot(page, "composed")


def test_examples_run_and_are_cached(page):
    page.get_by_text("men formal black shoes", exact=True).first.click()
    captions = _wait_for_new_results(page, [])
    assert len(captions) == 10
    assert page.locator("#text-query input, #text-query textarea").first.input_value() == "men formal black shoes"
    cache = Path(os.environ["GRADIO_EXAMPLES_CACHE"])
    assert any(cache.rglob("log.csv"))  # cached on first use


def test_errors_show_a_message_and_the_page_keeps_working(page, tmp_path):
    page.locator("#text-search").click()  # empty query
    page.get_by_text("Type what you are looking for").first.wait_for(timeout=30_000)
    page.get_by_role("tab", name="Image").click()
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    page.locator("#query-image input[type=file]").set_input_files(str(bad))
    page.locator("#image-search").click()
    message = page.get_by_text("is not an image file")
    message.first.wait_for(timeout=30_000)
    assert "notes.png" in message.first.inner_text() and "/tmp/" not in message.first.inner_text()
    assert "Traceback" not in page.content()
    _shot(page, "error")
    big = tmp_path / "big.jpg"  # over the 20 MB upload limit: refused before it reaches the server
    big.write_bytes(b"\xff\xd8" + os.urandom(21 * 1024 * 1024))
    page.locator("#query-image input[type=file]").set_input_files(str(big))
    page.get_by_text("exceed", exact=False).first.wait_for(timeout=30_000)
    page.get_by_role("tab", name="Text").click()
    page.locator("#text-query input, #text-query textarea").first.fill("red dress")
    page.locator("#text-search").click()
    assert len(_wait_for_new_results(page, [])) == 10


def test_chips_show_what_was_understood_and_one_click_filters(page):
    """A text query's understanding shows as chips; unticking one searches without it; one click on a filter chip
    sets the filter and every result follows it."""
    page.locator("#text-query input, #text-query textarea").first.fill("sneakers for women")
    page.locator("#text-search").click()
    boosted = _wait_for_new_results(page, [])
    chips = page.locator("#intent-chips")
    chips.wait_for(state="visible", timeout=30_000)
    assert "Women" in chips.inner_text() and "Sports Shoes" in chips.inner_text()
    _shot(page, "chips")
    chips.get_by_label("Women", exact=True).uncheck()
    unboosted = _wait_for_new_results(page, boosted)  # searched again without the gender boost
    assert not chips.get_by_label("Women", exact=True).is_checked()  # the chip stays on show, unticked
    assert chips.get_by_label("Sports Shoes", exact=False).is_checked()
    page.locator("#intent-filters").get_by_label("Gender: Women").check()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        captions = _results(page)
        if captions != unboosted and captions and all("Women" in c for c in captions):
            break
        time.sleep(0.2)
    assert captions and all("Women" in c for c in captions), captions
    _shot(page, "chip-filter")


def test_context_shows_greyed_apart_from_the_chips(page):
    """What the product goes with shows beside the chips, greyed, and never as a chip."""
    page.locator("#text-query input, #text-query textarea").first.fill("sneakers to go with my black jeans")
    page.locator("#text-search").click()
    _wait_for_new_results(page, [])
    context = page.locator("#intent-context")
    context.wait_for(state="visible", timeout=30_000)
    assert "Black" in context.inner_text() and "no boost" in context.inner_text()
    chips = page.locator("#intent-chips").inner_text()
    assert "Sports Shoes" in chips and "Black" not in chips
    _shot(page, "context")


def _phone_photo(path: Path, product_path: str) -> tuple[int, int, int, int]:
    """A catalog photo enlarged onto a checked brown-grey 'floor' (not a studio shot); returns the product's box."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    floor = np.kron(rng.integers(60, 150, size=(13, 10, 3)), np.ones((32, 32, 1))).astype(np.uint8)[:400, :300]
    photo = Image.fromarray(floor)
    with Image.open(product_path) as product:
        product = product.convert("RGB").resize((180, 240))
    photo.paste(product, (70, 90))
    photo.save(path, quality=90)
    return 70, 90, 250, 330


def test_photo_search_shows_the_searched_crop_and_takes_a_box(page, small_engine, tmp_path):
    items = small_engine.index.items
    shoe = items[items["articleType"].isin(["Casual Shoes", "Sports Shoes", "Tshirts"])].iloc[0]
    box = _phone_photo(tmp_path / "phone.jpg", shoe["image_path"])
    page.get_by_role("tab", name="Image").click()
    page.locator("#query-image input[type=file]").set_input_files(str(tmp_path / "phone.jpg"))
    _wait_for_src_change(page, "query-image", None)
    _wait_for_src_change(page, "box-view", None)

    # Without a box the product is found for you: the searched crop appears beside the results.
    page.locator("#image-search").click()
    captions = _wait_for_new_results(page, _results(page))
    first_crop = _wait_for_src_change(page, "searched-crop", None)
    assert len(captions) == 10

    # A box around the product's upper half (typed here; two clicks on the photo fill the same field): the crop
    # searched is now what the box holds.
    field = page.locator("#photo-box input, #photo-box textarea").first
    field.fill(",".join(str(v) for v in (box[0] - 10, box[1] - 10, box[2] + 10, (box[1] + box[3]) // 2)))
    page.locator("#image-search").click()
    assert _wait_for_src_change(page, "searched-crop", first_crop) != first_crop
    _shot(page, "photo-box")

    # A box outside the photo is refused with a message, and the page keeps working.
    field.fill("500,500,600,600")
    page.locator("#image-search").click()
    page.get_by_text("does not cover the photo").first.wait_for(timeout=30_000)
