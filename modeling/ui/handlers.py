"""The app's handlers: UI values in, search-service calls (`modeling.serving.service.SearchService`), UI values out;
no retrieval logic. `modeling.ui.page` wires them to the page."""

from __future__ import annotations

import functools
import html
import logging
from pathlib import Path

import gradio as gr
from PIL import ImageDraw

from modeling.data.uploads import load_upload
from modeling.serving.endpoints import ENDPOINTS, gradio_function
from modeling.serving.registry import EngineRegistry
from modeling.serving.service import (ANY, COMPOSITION_METHODS, FILTERS, REFUSED, Overloaded, SearchResult,
                                      SearchService, shorten, user_message)

logger = logging.getLogger("app")

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
    Yellow), as a greyed note: context is shown, never wished for; and the types the query favours among the
    product's ("shoes to go with a suit": Formal Shoes); empty when there is neither."""
    understood = (data or {}).get("understood") or {} if (data or {}).get("mode") == "text" else {}
    labels = understood.get("context_chips") or []
    notes = ["Context, not searched for (no boost): " + " · ".join(html.escape(label) for label in labels)] \
        if labels else []
    # the types the rest of the query favours ("shoes" + "with a suit": Formal Shoes); gone with its chips
    implied = [] if {"articleType", "usage"} & set(understood.get("ignored") or []) else understood.get("implied")
    notes += [f"Favoured types: {html.escape(' / '.join(i.get('values', [])))} (from "
              f"{html.escape(str(i.get('phrase', '')))})" for i in implied or []]
    return "<span style='opacity:0.55'>" + "<br>".join(notes) + "</span>" if notes else ""


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

