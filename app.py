"""Fashion search: a Gradio Blocks app over the search engine — text, image and composed search, with VSC.

    python app.py                                   # offline defaults (see README)
    python app.py --model runs/dual-encoder --extra-model runs/vae --catalog ../shared/data

Configuration by flags or environment variables (flags win):

    --model / FASHION_MODEL                 default model folder (loads at start; its index is built when absent)
    --extra-model / FASHION_EXTRA_MODELS    more models (NAME=PATH or PATH; env: comma-separated), loaded on first use;
                                            default: runs/clip-lora and runs/vae when they exist
    --index / FASHION_INDEX                 index folder of the default model (default MODEL/index)
    --catalog / FASHION_CATALOG             catalog folder, metadata file or Hub dataset, read to build missing indexes
    --rerank-model / FASHION_RERANK_MODEL   image model offered for hybrid re-ranking (default runs/vae when present)
    --host / GRADIO_SERVER_NAME, --port / GRADIO_SERVER_PORT

More settings by environment only: FASHION_MONITORING=1 (Gradio's /monitoring pages, off by default),
FASHION_SERVING_THREADS (threads per torch/BLAS op while serving, default 1), FASHION_QUERY_PRECISION (auto, fp32 or
bf16: how batched text queries are encoded), FASHION_MALLOC_ARENAS (glibc malloc arenas, default 2; 0 = untouched).
The app sets GRADIO_ANALYTICS_ENABLED=False before importing Gradio.

Handlers only translate between the UI and the search service (`modeling.serving.service.SearchService`: one
validation contract, batched text queries, public results), which the plain JSON routes under /api/v1 share
(`modeling.serving.http`, with the security headers of every page); the structured-data API endpoints
(`/search_text_data`, ...) and those routes are generated from one table (`modeling.serving.endpoints.ENDPOINTS`).
Every endpoint has a stable `api_name` (docs/api.md: "Calling the app from Python", "Calling the app over HTTP").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import html
import json
import logging
import os
import types
from pathlib import Path

# Before gradio is imported: it reads the variable at import time. The app phones no one home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from PIL import ImageDraw

from modeling.data.uploads import load_upload
from modeling.serving.endpoints import ENDPOINTS, gradio_function
from modeling.serving.registry import EngineRegistry, ModelSpec, qdrant_config, with_index_repo
from modeling.serving.service import (ANY, COMPOSITION_METHODS, DEFAULT_MAX_IN_FLIGHT, FILTERS, MAX_K, REFUSED,
                                      Overloaded, SearchResult, SearchService, shorten, user_message)
from modeling.serving.tuning import cap_malloc_arenas, limit_threads, return_large_blocks

logger = logging.getLogger("app")

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = "runs/dual-encoder"
OPTIONAL_MODELS = ("runs/clip-lora", "runs/vae")  # offered when trained
DEFAULT_CATALOG = str(HERE.parent / "shared" / "data")
MAX_UPLOAD = 20 * 1024 * 1024  # bytes of an uploaded photo (Gradio's "20mb")
# Gradio's cache of uploads: every hour, files older than an hour are deleted (a loop of uploads cannot fill the disk)
UPLOAD_CACHE_S = (3600, 3600)
MAX_DUPLICATES_SHOWN = 48  # photos in the near-duplicates panel
BOX_VIEW_SIDE = 480  # the photo on which the shopper clicks the box's corners, at most this many pixels a side
# Searches the queue runs at once (UI events and queued API calls); the structured-data endpoints skip the queue
# and are batched by the search service instead.
QUEUE_CONCURRENCY = 8
QUEUE_SIZE = 64  # events waiting in Gradio's queue: about a second of UI searches on 2 cores
COMBINER, WEIGHTED_SUM = "learned combiner", "weighted sum"
# The composition radio's labels -> the service's methods, in the order of COMPOSITION_METHODS (combiner first).
METHODS = {{"combiner": COMBINER, "sum": WEIGHTED_SUM}[m]: m for m in COMPOSITION_METHODS}
# The seeds' own queries first.
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


# -- handlers: UI values in, service calls, UI values out ----------------------------------------------------------
def refused(message: str, title: str = "Cannot search") -> gr.Error:
    """A refused request: the message goes to the user, one line to the log, no traceback."""
    logger.info("refused: %s", message)
    return gr.Error(message, title=title, print_exception=False)


def user_errors(fn):
    """Refused queries become a clear message in the UI (gr.Error); anything unexpected is logged with its
    traceback and reported without one. The app keeps serving either way."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except REFUSED as error:
            raise refused(user_message(error)) from None
        except Overloaded as error:  # the service is at one of its bounds: nothing was done, try again
            raise refused(str(error), title="Busy") from None
        except Exception:
            logger.exception("search failed")
            raise gr.Error("The search failed unexpectedly; the error was logged. Please try another query.",
                           title="Search failed", print_exception=False) from None

    return wrapper


def caption(result: SearchResult) -> str:
    """Title, key attributes, cosine and VSC ("n/a" when the query has no description)."""
    attrs = " · ".join(result.attributes[a] for a in ("gender", "articleType", "baseColour")
                       if result.attributes.get(a))
    vsc = "n/a" if result.vsc is None else f"{result.vsc:.2f}"
    more = f" · +{len(result.duplicates)} more like it" if result.duplicates else ""
    return f"{result.title}\n{attrs}\ncosine {result.visual_score:.3f} · VSC {vsc}{more}"


def summary_line(data: dict | None) -> str:
    """The line above the results: count, mean cosine, VSC@k, model and time (from the structured results)."""
    if not data or "summary" not in data:
        return ""
    s, n = data["summary"], len(data.get("results") or [])
    if not n:
        return f"No results ({data.get('model')})"
    vsc = "n/a" if s["vsc@k"] is None else f"{s['vsc@k']:.3f}"
    return (f"**{n} results** · mean cosine {s['mean_cosine']:.3f} · VSC@{n} {vsc} · {data.get('model')} · "
            f"{data.get('took_ms', 0):.0f} ms")


def _box_photo(image):
    """(the photo as the box view shows it, at most `BOX_VIEW_SIDE` pixels a side; the scale from the full-size
    photo's pixels, in which the box is given, to the view's), decoded with bounded memory (`load_upload`)."""
    upload = load_upload(image, max_side=2 * BOX_VIEW_SIDE)
    width, height = upload.size
    scale = min(1.0, BOX_VIEW_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return (upload.image.resize(size) if upload.image.size != size else upload.image), scale


def box_view(image, box=None, corner=None):
    """The uploaded photo (at most `BOX_VIEW_SIDE` pixels a side) with the shopper's box drawn on it, or the first
    corner clicked; None without a photo (or one that cannot be read: the search says why)."""
    if image is None:
        return None
    try:
        view, scale = _box_photo(image)
    except ValueError:
        return None
    draw = ImageDraw.Draw(view)
    if box:
        draw.rectangle([v * scale for v in box], outline=(230, 0, 90), width=3)
    elif corner:
        x, y = corner[0] * scale, corner[1] * scale
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline=(230, 0, 90), width=3)
    return view


def click_box(image, corner, evt: gr.SelectData):
    """A click on the box view: the first corner, then the opposite one. Returns (the box as "left,top,right,bottom"
    in the photo's pixels, the view with it drawn, the corner waiting for its opposite)."""
    if image is None:
        raise refused("Upload a photo first, then click two opposite corners of the product on it.")
    try:
        view, scale = _box_photo(image)
    except ValueError as error:
        raise refused(user_message(error)) from None
    x, y = (min(max(v / scale, 0), side / scale) for v, side in zip(evt.index[:2], view.size))
    if corner is None:
        return "", box_view(image, corner=(x, y)), (x, y)
    box = (min(corner[0], x), min(corner[1], y), max(corner[0], x), max(corner[1], y))
    return ",".join(str(round(v)) for v in box), box_view(image, box), None


def _respond(answer):
    """(gallery, structured results) of an answer; the gallery shows the photos from inside the server."""
    if not answer.results:
        gr.Warning("No products match this query and these filters. Try removing a filter.")
    gallery = [(r.image_path, caption(r)) for r in answer.results if r.image_path]
    return gallery, answer.data


def chip_choices(data: dict | None) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, str]]]:
    """(chips as (label, key), the ticked keys, filter choices as (label, "attribute=value")) of a text answer's
    `understood`; empty for answers without one (image searches)."""
    understood = (data or {}).get("understood")
    if not understood or data.get("mode") != "text":
        return [], [], []
    chips = [(label, key) for label, key in zip(understood["chips"], understood["chip_keys"])]
    ticked = [key for _, key in chips if key not in set(understood.get("ignored") or [])]
    filters = [(f"{FILTERS[i['attribute']]}: {value}", f"{i['attribute']}={value}")
               for i in understood["intents"] if i["attribute"] in FILTERS for value in i["values"]]
    return chips, ticked, filters


def context_note(data: dict | None) -> str:
    """What the last text answer understood as the product's context ("to go with a yellow skirt": Skirts,
    Yellow), as a greyed note: context is shown, never wished for; empty when there is none."""
    understood = (data or {}).get("understood") or {}
    labels = understood.get("context_chips") or [] if (data or {}).get("mode") == "text" else []
    return ("<span style='opacity:0.55'>Context, not searched for (no boost): " +
            " · ".join(html.escape(label) for label in labels) + "</span>") if labels else ""


def show_chips(data):
    """The chips of the last text answer ("Women", "Casual Shoes / Sports Shoes", "not Black"), the filters they
    offer (hidden when there are none) and its context, greyed."""
    chips, ticked, filters = chip_choices(data)
    note = context_note(data)
    return (gr.CheckboxGroup(choices=chips, value=ticked, visible=bool(chips)),
            gr.Radio(choices=filters, value=None, visible=bool(filters)), gr.HTML(note, visible=bool(note)))


def chip_to_filter(choice, gender=ANY, category=ANY, colour=ANY):
    """One click on a filter chip ("Gender: Women") sets that filter's dropdown; the others stay."""
    values = {"gender": gender, "articleType": category, "baseColour": colour}
    attribute, _, value = str(choice or "").partition("=")
    if attribute in values and value:
        values[attribute] = value
    return [values[c] for c in FILTERS]


def method_radio(has_combiner: bool, **kwargs) -> gr.Radio:
    """The composition choices of a model: both methods with a learned combiner (the combiner chosen), else the
    weighted sum alone."""
    choices = [label for label, m in METHODS.items() if has_combiner or m == "sum"]
    return gr.Radio(choices=choices, value=choices[0], **kwargs)


def _method(method) -> str:
    if method not in METHODS:
        raise refused(f"Unknown composition {shorten(method)}; use '{COMBINER}' or '{WEIGHTED_SUM}'.")
    return METHODS[method]


class Handlers:
    """The app's event handlers, bound to a registry of engines (tests pass a small one). Validation, batching and
    the structured results come from `SearchService`, shared with the JSON routes."""

    def __init__(self, registry: EngineRegistry, service: SearchService | None = None):
        self.registry = registry
        self.service = service or SearchService(registry)
        # The structured-data API endpoints (`search_text_data`, ...), generated from the endpoint table shared with
        # the JSON routes /api/v1/... (`modeling.serving.endpoints`): no images to download.
        for endpoint in ENDPOINTS.values():
            setattr(self, endpoint.gradio_name, user_errors(gradio_function(endpoint, self.service)))

    def _reference_item(self, model, image, item_id) -> str | None:
        """The catalog item a query image stands for: `item_id` (set when a result was clicked or a random product
        picked) unless another photo has been given since (Gradio serves the item's photo under its own name)."""
        if not item_id or image is None:
            return item_id or None
        try:
            path = self.service.image_path(item_id, model)
        except REFUSED:
            return None
        return item_id if Path(str(image)).name == Path(path).name else None

    # Text
    @user_errors
    def search_text(self, query: str, k=10, model: str | None = None, gender=ANY, category=ANY, colour=ANY):
        return _respond(self.service.text(query, k, model, gender, category, colour))

    @user_errors
    def search_text_chips(self, query: str, k=10, model: str | None = None, gender=ANY, category=ANY, colour=ANY,
                          ticked=None):
        """The text search again after the shopper ticked or unticked chips: the unticked ones are ignored."""
        chips = self.service.understand(query, model).get("chip_keys", [])
        ticked = set(ticked or [])
        return _respond(self.service.text(query, k, model, gender, category, colour,
                                          ignore=[key for key in chips if key not in ticked]))

    # Image (an uploaded photo, or a catalog item when `item_id` is set: a clicked result or a random product)
    @user_errors
    def search_image(self, image, k=10, model: str | None = None, gender=ANY, category=ANY, colour=ANY,
                     hybrid: bool = False, rerank_weight: float = 0.3, item_id: str | None = None):
        item_id = self._reference_item(model, image, item_id)
        return _respond(self.service.image(None if item_id else image, k, model, gender, category, colour,
                                           hybrid=bool(hybrid), rerank_weight=rerank_weight, item_id=item_id))

    # The photo tab's search: the answer and the photo that was searched (the product cut out, or the drawn box)
    @user_errors
    def search_photo(self, image, k=10, model: str | None = None, gender=ANY, category=ANY, colour=ANY,
                     hybrid: bool = False, rerank_weight: float = 0.3, item_id: str | None = None, box: str = ""):
        item_id = self._reference_item(model, image, item_id)
        answer = self.service.image(None if item_id else image, k, model, gender, category, colour,
                                    hybrid=bool(hybrid), rerank_weight=rerank_weight, item_id=item_id, box=box or None)
        return (*_respond(answer), answer.searched)

    # Composed: reference photo (or catalog item) + modification text
    @user_errors
    def search_composed(self, image, text: str, k=10, model: str | None = None, gender=ANY, category=ANY,
                        colour=ANY, method: str = COMBINER, text_weight: float = 0.5, item_id: str | None = None):
        item_id = self._reference_item(model, image, item_id)
        return _respond(self.service.composed(None if item_id else image, text, k, model, gender, category, colour,
                                              method=_method(method), text_weight=text_weight, item_id=item_id))

    # Click a result: it becomes the next query image, the text is kept.
    def refine(self, evt: gr.SelectData, data, mode, text, k, model, gender, category, colour, hybrid,
               rerank_weight, method, text_weight):
        results = (data or {}).get("results") or []
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not 0 <= index < len(results):
            raise refused("That result is no longer on the page; run the search again.")
        item = results[index]
        photo = user_errors(self.service.image_path)(item["id"], model)
        if mode == "composed" and (text or "").strip():
            gallery, out = self.search_composed(None, text, k, model, gender, category, colour, method, text_weight,
                                                item_id=item["id"])
            return (gr.skip(), photo, gr.skip(), item["id"], gr.Tabs(selected="composed"), gallery, out)
        gallery, out = self.search_image(None, k, model, gender, category, colour, hybrid, rerank_weight,
                                         item_id=item["id"])
        return photo, gr.skip(), item["id"], gr.skip(), gr.Tabs(selected="image"), gallery, out

    @user_errors
    def random_product(self, k, model, gender, category, colour, hybrid, rerank_weight):
        item_id, photo = self.service.random_item(model, gender, category, colour)
        gallery, data = self.search_image(None, k, model, gender, category, colour, hybrid, rerank_weight,
                                          item_id=item_id)
        return photo, item_id, gallery, data

    # Compare: the same query through every model, side by side
    def compare(self, text: str, image, k=10, gender=ANY, category=ANY, colour=ANY):
        text = text.strip() if isinstance(text, str) else ""
        if not text and image is None:
            raise refused("Type a query, upload a photo, or both (photo + change).")
        galleries, data = [], {}
        for name in self.registry.names:
            try:
                if image is not None and text:
                    gallery, out = self.search_composed(image, text, k, name, gender, category, colour)
                elif image is not None:
                    gallery, out = self.search_image(image, k, name, gender, category, colour)
                elif not self.registry.supports_text(name):
                    raise gr.Error(f"{name} searches by image only")
                else:
                    gallery, out = self.search_text(text, k, name, gender, category, colour)
            except gr.Error as error:
                gallery, out = [], {"model": name, "error": error.message}
            galleries.append(gr.Gallery(value=gallery, label=f"{name}: {out['error']}" if "error" in out
                                        else f"{name} · {summary_line(out)}".replace("**", "")))
            data[name] = out
        return (*galleries, data)

    def show_duplicates(self, data):
        """The near-duplicates collapsed into the shown results ("+N more like it"), each captioned with the result
        it was collapsed into; the panel stays hidden when there are none."""
        shown, ids = [], [(r, i) for r in (data or {}).get("results") or [] for i in r.get("duplicates") or []]
        for result, item_id in ids[:MAX_DUPLICATES_SHOWN]:  # the data comes from the page: look up no more
            try:
                path = self.service.image_path(item_id, data.get("model"))
            except REFUSED:
                continue
            shown.append((path, f"like #{result.get('rank')}: {result.get('title')} ({item_id})"))
        label = f"More like them: {len(shown)} near-duplicates collapsed into the results"
        return gr.Accordion(label=label, visible=bool(shown)), shown

    @user_errors
    def model_changed(self, model):
        """Show what the chosen model can do (loads it on first use)."""
        info = self.service.model_info(model)
        notes = [f"**{info['name']}**: {info['products']:,} products"]
        if not info["supports_text"]:
            notes.append("image search only (no text encoder)")
        if info["reranker"] is not None:
            notes.append(f"hybrid re-ranking with {info['reranker']}")
        return (method_radio(info["has_combiner"]), gr.Checkbox(interactive=info["reranker"] is not None, value=False),
                " · ".join(notes))


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


def _catalog_examples(items, types) -> dict[str, str]:
    """One image per article type (the first in catalog order that has an image), for example queries."""
    found = {}
    if "articleType" not in items or "image_path" not in items:
        return found
    for article in types:
        rows = items[(items["articleType"] == article) & (items["image_path"] != "")]
        if len(rows) and Path(rows["image_path"].iloc[0]).exists():
            found[article] = rows["image_path"].iloc[0]
    return found


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
    items = h.service.catalog_items()
    photos = _catalog_examples(items, IMAGE_EXAMPLE_TYPES + tuple(t for t, _ in COMPOSED_EXAMPLES))

    with examples_cache(h.service.index_manifest()), gr.Blocks(title="Fashion search", delete_cache=UPLOAD_CACHE_S) as demo:
        ui = _controls(registry, h.service, len(items))
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


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the fashion search app.")
    p.add_argument("--model", default=os.environ.get("FASHION_MODEL", DEFAULT_MODEL),
                   help="default model folder or NAME=PATH (env FASHION_MODEL)")
    p.add_argument("--extra-model", action="append", default=None,
                   help="another model (NAME=PATH or PATH), loaded on first use; repeatable "
                        "(env FASHION_EXTRA_MODELS, comma-separated; default: runs/clip-lora, runs/vae if trained)")
    p.add_argument("--index", default=os.environ.get("FASHION_INDEX"), help="index folder of the default model")
    p.add_argument("--index-repo", default=os.environ.get("FASHION_INDEX_REPO"),
                   help="pushed index dataset (Hub id or local copy) with indexes/<model name>/ "
                        "(env FASHION_INDEX_REPO); models without one there use their local index")
    p.add_argument("--onnx", default=os.environ.get("FASHION_ONNX"),
                   help="ONNX export of the default model: encodes a missing index with ONNX Runtime (env FASHION_ONNX)")
    p.add_argument("--catalog", default=os.environ.get("FASHION_CATALOG", DEFAULT_CATALOG),
                   help="catalog folder, metadata file or Hub dataset (used to build missing indexes)")
    p.add_argument("--rerank-model", default=os.environ.get("FASHION_RERANK_MODEL"),
                   help="image model for hybrid re-ranking (default runs/vae if trained; 'none' turns it off)")
    p.add_argument("--vector-store", choices=("faiss", "qdrant", "qdrant-edge"),
                   default=os.environ.get("FASHION_VECTOR_STORE", "faiss"),
                   help="where vectors live and ranking runs: the in-process FAISS index (default), a Qdrant "
                        "collection built by `python -m modeling.retrieval.engine.build_index --vector-store qdrant` "
                        "or qdrant-edge shards (the Qdrant engine in process) in --qdrant-path (docs/qdrant.md)")
    p.add_argument("--qdrant-url", default=None,
                   help="Qdrant server or cluster (env FASHION_QDRANT_URL; the API key only from "
                        "FASHION_QDRANT_API_KEY)")
    p.add_argument("--qdrant-path", default=None, help="local-mode Qdrant folder (env FASHION_QDRANT_PATH)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = p.parse_args(argv)
    extra = args.extra_model if args.extra_model is not None else _env_list("FASHION_EXTRA_MODELS")
    args.extra_model = extra if extra is not None else [m for m in OPTIONAL_MODELS if Path(m, "config.json").exists()]
    if args.rerank_model is None:
        args.rerank_model = "runs/vae" if Path("runs/vae/config.json").exists() else None
    elif args.rerank_model.lower() == "none":
        args.rerank_model = None
    return args


def make_registry(args: argparse.Namespace) -> EngineRegistry:
    default = ModelSpec.parse(args.model)
    if args.index:
        default = ModelSpec(default.name, default.path, args.index)
    specs = [default] + [ModelSpec.parse(m) for m in args.extra_model
                         if os.path.realpath(ModelSpec.parse(m).path) != os.path.realpath(default.path)]
    if getattr(args, "index_repo", None):
        specs = with_index_repo(specs, args.index_repo)
        if args.index:  # an explicit index folder wins
            specs[0] = ModelSpec(default.name, default.path, args.index)
    qdrant = None
    if getattr(args, "vector_store", "faiss") != "faiss":
        qdrant = qdrant_config(getattr(args, "qdrant_url", None), getattr(args, "qdrant_path", None),
                               edge=args.vector_store == "qdrant-edge")
    return EngineRegistry(specs, catalog=args.catalog, rerank_model=args.rerank_model,
                          onnx={default.name: args.onnx} if getattr(args, "onnx", None) else None,
                          vector_store=getattr(args, "vector_store", "faiss"), qdrant=qdrant)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        registry = make_registry(args)
        registry.get()  # the default model loads (and indexes the catalog if needed) before the page is served
    except (OSError, ValueError) as error:
        hint = (f"Build the collection with `python -m modeling.retrieval.engine.build_index --vector-store "
                f"{args.vector_store} ...` and point --qdrant-url / --qdrant-path at it (docs/qdrant.md)."
                if args.vector_store != "faiss" else
                "Train the default model with `make train` (or point --model / FASHION_MODEL at a trained model "
                "folder) and --catalog at a catalog.")
        raise SystemExit(f"Cannot start: {error}\n{hint}") from None
    # Once the default model is loaded (and its index built with every core): one thread per op while serving.
    limit_threads(int(os.environ.get("FASHION_SERVING_THREADS", "1")))
    if int(os.environ.get("FASHION_MALLOC_ARENAS", "2")) > 0:
        cap_malloc_arenas(int(os.environ.get("FASHION_MALLOC_ARENAS", "2")))
    return_large_blocks()  # large photos' memory goes back to the system after each request
    service = SearchService(registry, query_precision=os.environ.get("FASHION_QUERY_PRECISION", "auto"),
                            max_in_flight=int(os.environ.get("FASHION_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT)))
    items = service.catalog_items()
    allowed = sorted({str(Path(p).parent) for p in items.get("image_path", []) if p})
    serve(build_demo(registry, service), service, server_name=args.host, server_port=args.port,
          allowed_paths=allowed, css=CSS, footer_links=["api"])


if __name__ == "__main__":
    main()
