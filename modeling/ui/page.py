"""The app's page: the Gradio Blocks layout (text, image, composed and compare tabs), its wiring to the handlers
(`modeling.ui.handlers`), the guards every input and private event passes, and `serve`."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import types
from pathlib import Path

import gradio as gr

from modeling.serving.endpoints import ENDPOINTS
from modeling.serving.registry import EngineRegistry
from modeling.serving.service import ANY, FILTERS, MAX_K, SearchService, shorten

from modeling.ui.handlers import (MAX_UPLOAD, QUEUE_CONCURRENCY, QUEUE_SIZE, UPLOAD_CACHE_S, Handlers, box_view,
                                  chip_to_filter, click_box, method_radio, refused, show_chips, summary_line,
                                  user_errors)

logger = logging.getLogger("app")

TEXT_EXAMPLES = ["red summer dress", "white polo t-shirts", "watches for men", "men formal black shoes",
                 "blue denim jeans for women", "black leather handbag", "sports shoes for running"]
# (articleType of a catalog photo, modification) — the seeds' "is shorter and sleeveless" on a dress first.
COMPOSED_EXAMPLES = [("Dresses", "is shorter and sleeveless"), ("Tshirts", "make it blue"),
                     ("Casual Shoes", "in black instead"), ("Handbags", "a brown one")]
IMAGE_EXAMPLE_TYPES = ("Tshirts", "Watches", "Heels", "Dresses", "Backpacks", "Sunglasses")
# Captions under each result in full (title, attributes, cosine and VSC), not cut to one line over the image.
CSS = """
.result-summary {min-height: 1.5em}
#results .thumbnail-item {display: flex; flex-direction: column; height: auto}
#results .thumbnail-item img {height: 160px; width: 100%; object-fit: contain}
#results .caption-label {position: static; white-space: pre-line; overflow: visible; text-overflow: clip;
  max-width: 100%; transform: none; font-size: 12px; line-height: 1.3; text-align: left; background: none}
"""




# -- the page ----------------------------------------------------------------------------------------------------------
def product_image(**kwargs) -> gr.Image:
    """A filepath gr.Image (upload, webcam, clipboard) that hands the file as uploaded to the app's own image loader
    (`modeling.data.images`): `image_mode=None` keeps Gradio from converting it first, which would decode a
    decompression bomb before any size check, clip 16-bit photos to white and put transparent cut-outs on black.
    Unreadable uploads also reach the loader, which answers with a clear message where the stock component would
    fail inside Gradio with a bare "Error". (Patched on the instance: a gr.Image subclass makes Gradio write a .pyi
    stub next to this file.)"""
    kwargs.setdefault("sources", ["upload", "webcam", "clipboard"])
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    stock = component.preprocess

    def preprocess(payload):
        try:
            return stock(payload)
        except Exception:  # noqa: BLE001 - whatever Gradio cannot open, the app's loader explains
            return None if payload is None or payload.path is None else str(payload.path)

    component.preprocess = preprocess
    return component


def _expected(component) -> str:
    if isinstance(component, gr.Slider):
        return f"a number from {component.minimum:g} to {component.maximum:g}"
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        choices = [c[1] if isinstance(c, (tuple, list)) else c for c in component.choices or []]
        return "one of " + ", ".join(repr(c) for c in choices[:6]) + (", ..." if len(choices) > 6 else "")
    if isinstance(component, gr.Checkbox):
        return "true or false"
    if isinstance(component, gr.Textbox):
        return "a text"
    if isinstance(component, gr.Image):
        return "an uploaded image file"
    return "a value of the kind the API page lists"


def guard_inputs(demo: gr.Blocks) -> None:
    """Every input component of `demo` refuses a value it cannot take with a message naming the input and what it
    expects (Gradio's own failure would reach the client as an error without a message, and print a traceback)."""
    for component in list(demo.blocks.values()):
        if not isinstance(component, gr.components.Component) or getattr(component, "_guarded", False):
            continue
        stock = component.preprocess

        def preprocess(payload, stock=stock, component=component):
            try:
                return stock(payload)
            except Exception:  # noqa: BLE001 - Gradio's own message names its internals, or not the input
                name = getattr(component, "label", None) or type(component).__name__
                raise refused(f"{name}: {shorten(payload)} is not valid here; expected "
                              f"{_expected(component)}.") from None

        component.preprocess = preprocess
        component._guarded = True


def explain_refusals(demo: gr.Blocks) -> None:
    """Whatever Gradio itself refuses before a handler runs (a wrong number of arguments, a file path that was not
    uploaded to the app, a malformed value) is answered with a message and logged in one line."""
    stock = demo.process_api

    async def process_api(block_fn, inputs, *args, **kwargs):
        try:
            return await stock(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - refused before the handler: no internals to the client
            fn = demo.fns.get(block_fn) if isinstance(block_fn, int) else block_fn
            api = getattr(fn, "api_name", None) or "this endpoint"
            wanted = len(getattr(fn, "inputs", []) or [])
            text = str(error)
            if "path" in text.lower() or "file" in text.lower() or "upload" in text.lower():
                message = ("Files must be uploaded to this app first (gradio_client: handle_file(...)); paths on "
                           "the server are not accepted.")
            elif not isinstance(inputs, list) or len(inputs) != wanted:
                got = len(inputs) if isinstance(inputs, list) else 0
                message = f"/{api} takes {wanted} values (see the API page), got {got}."
            else:
                message = f"/{api} could not read its arguments; see the API page for what each one takes."
            # One line for the server's log, with Gradio's own words for whoever reads it.
            logger.info("refused /%s: %s [%s: %s]", api, message, type(error).__name__,
                        " ".join(text.split())[:300])
            raise gr.Error(message, title="Cannot search", print_exception=False) from None

    demo.process_api = process_api


def client_answer(value):
    """A value a page sends back, checked where it is the structured results (the results JSON the page shows, which
    private handlers read): a dict with at most `MAX_K` results, each a dict, duplicates a list of ids. Anything
    else is refused with a message; values of other kinds pass unchanged."""
    if not isinstance(value, dict) or "results" not in value:
        return value
    results = value["results"]
    if not isinstance(results, list) or len(results) > MAX_K or not all(
            isinstance(r, dict) and isinstance(r.get("duplicates") or [], list) for r in results):
        raise refused("The results sent back are not ones this app answered; run the search again.")
    return value


def guard_private_handlers(demo: gr.Blocks) -> None:
    """Handlers marked private are left off the API page, yet anyone can call them by their index (the page itself
    does): each checks the results it is sent (`client_answer`) and answers a failure with a message
    (`user_errors`), as the public ones do."""
    for block_fn in demo.fns.values():
        if block_fn.api_visibility != "private" or block_fn.fn is None or getattr(block_fn.fn, "_guarded", False):
            continue

        def checked(*args, __fn=block_fn.fn, **kwargs):
            return __fn(*(client_answer(a) for a in args), **kwargs)

        guarded = user_errors(functools.wraps(block_fn.fn)(checked))
        guarded._guarded = True
        block_fn.fn = guarded


def monitoring_enabled() -> bool:
    """Gradio's /monitoring pages show traffic to anyone: on only when FASHION_MONITORING=1."""
    return os.environ.get("FASHION_MONITORING", "").strip().lower() in ("1", "true", "yes")


def serve(demo: gr.Blocks, service: SearchService, **launch_kwargs):
    """Launch `demo` with the JSON routes over `service` and the security headers (`modeling.serving.http`),
    monitoring off unless configured, and the queue's concurrency set explicitly. Returns what `launch` returns."""
    from modeling.serving.http import app_kwargs

    # The queue holds QUEUE_SIZE events (Gradio answers more with 503); no queued endpoint is callable around it
    # (api_open=False: /gradio_api/run/<name> refuses them).
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_SIZE, api_open=False)
    launch_kwargs.setdefault("enable_monitoring", monitoring_enabled())
    launch_kwargs.setdefault("max_file_size", MAX_UPLOAD)
    launch_kwargs.setdefault("show_error", False)
    kwargs = app_kwargs(service, max_file_size=launch_kwargs["max_file_size"],
                        hosts=[h for h in [launch_kwargs.get("server_name")] if h])
    return demo.launch(app_kwargs=kwargs, **launch_kwargs)


@contextlib.contextmanager
def examples_cache(manifest: dict):
    """Cached example results live in a folder of their own per index (its `manifest`: model fingerprint, items,
    build time): Gradio names the folder after the component's id alone, so another model or catalog would
    otherwise be served the old answers."""
    key = json.dumps([manifest.get("model"), manifest.get("num_items"), manifest.get("created_utc")], sort_keys=True,
                     default=str)
    base = os.environ.get("GRADIO_EXAMPLES_CACHE", ".gradio/cached_examples")
    previous = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(Path(base) / hashlib.sha1(key.encode()).hexdigest()[:12])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = previous


def build_demo(registry: EngineRegistry, service: SearchService | None = None) -> gr.Blocks:
    """The Blocks UI bound to a registry of engines (loaded lazily, except the default) through `service` (one is
    made when not given; `serve` needs the same one for the JSON routes). The page is built part by part (the
    controls, one builder per tab, the result panels), then the events are wired; `ui` holds the components."""
    h = Handlers(registry, service)
    info = h.service.model_info()  # the default model, loaded
    photos = h.service.example_photos(IMAGE_EXAMPLE_TYPES + tuple(t for t, _ in COMPOSED_EXAMPLES))

    with examples_cache(h.service.index_manifest()), gr.Blocks(title="Fashion search", delete_cache=UPLOAD_CACHE_S) as demo:
        ui = _controls(registry, h.service, info["products"])
        with gr.Tabs(selected="text") as ui.tabs:
            _text_tab(ui, h)
            _image_tab(ui, h, info, photos)
            _composed_tab(ui, h, info, photos)
            _compare_tab(ui, registry)
        _result_panels(ui)
        _wire_searches(ui, h)
        _wire_display(ui, h)
        for endpoint in ENDPOINTS.values():  # the structured-data API endpoints, from the endpoint table
            gr.api(getattr(h, endpoint.gradio_name), api_name=endpoint.gradio_name,
                   **({} if endpoint.gradio_queue else {"queue": False}))

    guard_inputs(demo)
    guard_private_handlers(demo)
    explain_refusals(demo)
    return demo


def _controls(registry: EngineRegistry, service: SearchService, products: int) -> types.SimpleNamespace:
    """The page's head: states, the introduction, model / k / filter controls, and the result components (created
    here so each tab's examples can write to them; rendered below the tabs)."""
    ui = types.SimpleNamespace()
    ui.mode = gr.State("text")
    ui.image_item, ui.ref_item = gr.State(None), gr.State(None)
    gr.Markdown(f"# Fashion search\nDescribe a product, show a photo, or show a photo and say what to change. "
                f"{products:,} products. Every result shows its **cosine** similarity to the query and its "
                f"**VSC** (visual-semantic consistency: how well the product's own description agrees with the "
                f"query's; n/a for a photo without text). Click a result to search with it.")
    values = service.filter_choices()
    with gr.Row():
        ui.model = gr.Dropdown(registry.names, value=registry.default, label="Model", scale=1)
        ui.k = gr.Slider(1, MAX_K, value=10, step=1, label="Results", scale=1)
        ui.dropdowns = [gr.Dropdown([ANY, *values[c]], value=ANY, label=label, filterable=True, scale=1)
                        for c, label in FILTERS.items()]
    ui.model_note = gr.Markdown(f"**{registry.default}**: {products:,} products")
    ui.summary = gr.Markdown(elem_id="result-summary", elem_classes="result-summary", render=False)
    ui.gallery = gr.Gallery(label="Results", columns=5, height="auto", object_fit="contain", allow_preview=False,
                            elem_id="results", render=False)
    ui.data = gr.JSON(label="Results", render=False)
    ui.outputs = [ui.gallery, ui.data]
    ui.filters = [ui.k, ui.model, *ui.dropdowns]
    return ui


def _text_tab(ui, h: Handlers) -> None:
    with gr.Tab("Text", id="text") as ui.text_tab:
        with gr.Row():
            ui.query = gr.Textbox(label="Describe what you want", placeholder="e.g. red summer dress",
                                  max_lines=1, scale=4, elem_id="text-query")
            ui.text_button = gr.Button("Search", variant="primary", scale=1, elem_id="text-search")
        with gr.Row():
            ui.chips = gr.CheckboxGroup([], label="Understood (untick to ignore)", elem_id="intent-chips",
                                        visible=False, scale=3)
            ui.chip_filter = gr.Radio([], label="One click makes it a filter", elem_id="intent-filters",
                                      visible=False, scale=2)
        ui.context = gr.HTML("", elem_id="intent-context", visible=False)
        # Examples run with the default model and no filters, cached on first use.
        gr.Examples([[q] for q in TEXT_EXAMPLES], inputs=[ui.query], outputs=ui.outputs, label="Examples",
                    fn=lambda q: h.search_text(q), cache_examples=True, cache_mode="lazy", api_name="example_text")


def _image_tab(ui, h: Handlers, info: dict, photos: dict[str, str]) -> None:
    with gr.Tab("Image", id="image") as ui.image_tab:
        with gr.Row():
            ui.image = product_image(label="Product photo", height=260, elem_id="query-image")
            with gr.Column():
                reranker = info["reranker"]
                ui.hybrid = gr.Checkbox(False, label="Hybrid re-ranking (colour and silhouette)",
                                        interactive=reranker is not None,
                                        info=f"re-ranks the top 100 with {reranker}"
                                        if reranker is not None else "no re-ranking model loaded")
                ui.rerank_weight = gr.Slider(0, 1, value=0.3, step=0.05, label="Re-ranking weight")
                ui.image_button = gr.Button("Find similar", variant="primary", elem_id="image-search")
                ui.random_button = gr.Button("Random product from the catalog")
        with gr.Accordion("The product in your photo: the box and what was searched", open=True):
            with gr.Row():
                ui.box_view = gr.Image(label="Click two opposite corners of the product to draw a box (optional)",
                                       type="pil", interactive=False, height=240, elem_id="box-view")
                ui.searched = gr.Image(label="Searched with this crop", type="pil", interactive=False, height=240,
                                       elem_id="searched-crop")
            with gr.Row():
                ui.box = gr.Textbox("", label="Box (left, top, right, bottom in the photo's pixels; empty: the product "
                                    "is found for you)", max_lines=1, elem_id="photo-box", scale=4)
                ui.clear_box = gr.Button("Clear the box", scale=1, elem_id="clear-box")
        ui.corner, ui.searched_state = gr.State(None), gr.State(None)
        image_examples = [[p] for t, p in photos.items() if t in IMAGE_EXAMPLE_TYPES]
        if image_examples:
            gr.Examples(image_examples, inputs=[ui.image], outputs=ui.outputs, label="Examples from the catalog",
                        fn=lambda p: h.search_image(p), cache_examples=True, cache_mode="lazy",
                        api_name="example_image", examples_per_page=len(image_examples))


def _composed_tab(ui, h: Handlers, info: dict, photos: dict[str, str]) -> None:
    with gr.Tab("Photo + change", id="composed") as ui.composed_tab:
        with gr.Row():
            ui.ref_image = product_image(label="Start from this product", height=260, elem_id="reference-image")
            with gr.Column():
                ui.change = gr.Textbox(label="What should be different?", placeholder="e.g. make it blue",
                                       max_lines=1, elem_id="change-text")
                ui.method = method_radio(info["has_combiner"], label="Composition")
                ui.text_weight = gr.Slider(0, 1, value=info["text_weight"], step=0.05,
                                           label="Text influence (weighted sum): 0 = photo only, 1 = text only")
                ui.composed_button = gr.Button("Search", variant="primary", elem_id="composed-search")
        composed_examples = [[photos[t], text] for t, text in COMPOSED_EXAMPLES if t in photos]
        if composed_examples and info["supports_text"]:
            gr.Examples(composed_examples, inputs=[ui.ref_image, ui.change], outputs=ui.outputs, label="Examples",
                        fn=lambda p, t: h.search_composed(p, t), cache_examples=True, cache_mode="lazy",
                        api_name="example_composed")


def _compare_tab(ui, registry: EngineRegistry) -> None:
    with gr.Tab("Compare models", id="compare"):
        gr.Markdown("The same query through every model: text, a photo, or both (photo + change).")
        with gr.Row():
            ui.compare_text = gr.Textbox(label="Text or change", max_lines=1, scale=2)
            ui.compare_image = product_image(label="Photo (optional)", height=160, scale=1)
            ui.compare_button = gr.Button("Compare", variant="primary", scale=1)
        with gr.Row():
            ui.compare_galleries = [gr.Gallery(label=name, columns=2, height=520, object_fit="contain",
                                               allow_preview=False) for name in registry.names]
        ui.compare_data = gr.JSON(label="Structured results per model", visible=False)


def _result_panels(ui) -> None:
    """Below the tabs: the summary line, the results, the collapsed near-duplicates, the structured results."""
    ui.summary.render()
    ui.gallery.render()
    with gr.Accordion("More like them: near-duplicates collapsed into the results", open=False,
                      visible=False) as ui.duplicates_box:
        ui.duplicates = gr.Gallery(label="Near-duplicates", columns=8, height="auto", object_fit="contain",
                                   allow_preview=False, elem_id="duplicates")
    with gr.Accordion("Structured results (what the API returns)", open=False):
        ui.data.render()


def _wire_searches(ui, h: Handlers) -> None:
    """The search events and their API names; a click on a result searches with it."""
    filters, outputs = ui.filters, ui.outputs
    gr.on([ui.text_button.click, ui.query.submit], h.search_text, [ui.query, ui.k, ui.model, *ui.dropdowns], outputs,
          api_name="search_text")
    # The searched photo goes through a State (not part of the API's outputs, which stay (gallery, results)).
    ui.image_button.click(h.search_photo, [ui.image, *filters, ui.hybrid, ui.rerank_weight, ui.image_item, ui.box],
                          [*outputs, ui.searched_state], api_name="search_image").then(
        lambda photo: photo, ui.searched_state, ui.searched, api_visibility="private", queue=False)
    gr.on([ui.composed_button.click, ui.change.submit], h.search_composed,
          [ui.ref_image, ui.change, *filters, ui.method, ui.text_weight, ui.ref_item], outputs,
          api_name="search_composed")
    ui.compare_button.click(h.compare, [ui.compare_text, ui.compare_image, ui.k, *ui.dropdowns],
                            [*ui.compare_galleries, ui.compare_data], api_name="compare")
    ui.random_button.click(h.random_product, [*filters, ui.hybrid, ui.rerank_weight],
                           [ui.image, ui.image_item, *outputs], api_name="random_product")
    ui.gallery.select(h.refine, [ui.data, ui.mode, ui.change, *filters, ui.hybrid, ui.rerank_weight, ui.method,
                                 ui.text_weight],
                      [ui.image, ui.ref_image, ui.image_item, ui.ref_item, ui.tabs, *outputs],
                      api_visibility="private")


def _wire_display(ui, h: Handlers) -> None:
    """What follows an answer (summary, near-duplicates, chips), the chips' own searches, uploads, tabs, models."""
    text_inputs = [ui.query, ui.k, ui.model, *ui.dropdowns, ui.chips]
    # The summary line above the gallery is rendered from the structured results, whatever produced them.
    ui.data.change(summary_line, ui.data, ui.summary, api_visibility="private", queue=False)
    ui.data.change(h.show_duplicates, ui.data, [ui.duplicates_box, ui.duplicates], api_visibility="private",
                   queue=False)
    # What the engine understood of a text query, as chips: untick one to ignore it, or make one a filter.
    ui.data.change(show_chips, ui.data, [ui.chips, ui.chip_filter, ui.context], api_visibility="private",
                   queue=False)
    ui.chips.input(h.search_text_chips, text_inputs, ui.outputs, api_visibility="private")
    ui.chip_filter.input(chip_to_filter, [ui.chip_filter, *ui.dropdowns], ui.dropdowns, api_visibility="private",
                         queue=False).then(h.search_text_chips, text_inputs, ui.outputs, api_visibility="private")
    # A new upload replaces a clicked result as the query.
    ui.image.upload(lambda: None, None, ui.image_item, api_visibility="private", queue=False)
    ui.image.clear(lambda: None, None, ui.image_item, api_visibility="private", queue=False)
    # The box view follows the photo; a new photo forgets the box and the last crop.
    ui.image.change(lambda image: ("", box_view(image), None, None), ui.image,
                    [ui.box, ui.box_view, ui.corner, ui.searched], api_visibility="private")
    ui.box_view.select(click_box, [ui.image, ui.corner], [ui.box, ui.box_view, ui.corner], api_visibility="private")
    ui.clear_box.click(lambda image: ("", box_view(image), None), ui.image, [ui.box, ui.box_view, ui.corner],
                       api_visibility="private")
    ui.ref_image.upload(lambda: None, None, ui.ref_item, api_visibility="private", queue=False)
    ui.ref_image.clear(lambda: None, None, ui.ref_item, api_visibility="private", queue=False)
    for tab, name in ((ui.text_tab, "text"), (ui.image_tab, "image"), (ui.composed_tab, "composed")):
        tab.select(functools.partial(lambda n: n, name), None, ui.mode, api_visibility="private", queue=False)
    ui.model.change(h.model_changed, ui.model, [ui.method, ui.hybrid, ui.model_note], api_visibility="private")

