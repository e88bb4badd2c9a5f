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

Handlers only translate between the UI and the engines (`modeling.serving.EngineRegistry`); every endpoint has a
stable `api_name` (README: "Calling the app from Python").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import re
import time
from pathlib import Path

import gradio as gr

from modeling.data.images import ImageError
from modeling.retrieval.search import QueryError, SearchResult
from modeling.retrieval.serving import EngineRegistry, ModelSpec, with_index_repo
from modeling.retrieval.vsc import summarise

logger = logging.getLogger("app")

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = "runs/dual-encoder"
OPTIONAL_MODELS = ("runs/clip-lora", "runs/vae")  # offered when trained
DEFAULT_CATALOG = str(HERE.parent / "shared" / "data")
FILTERS = {"gender": "Gender", "articleType": "Category", "baseColour": "Colour"}
ANY = "Any"
MAX_K = 50
MAX_UPLOAD = "20mb"
COMBINER, WEIGHTED_SUM = "learned combiner", "weighted sum"
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


# -- handlers: UI values in, engine calls, UI values out --------------------------------------------------------------
def user_errors(fn):
    """Engine errors become a clear message in the UI (gr.Error); anything unexpected is logged and reported
    without a traceback. The app keeps serving either way."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (QueryError, ImageError) as error:
            # Name an uploaded file by its name, not by the server's temporary path.
            message = re.sub(r"'/[^']*/([^'/]+)'", r"'\1'", str(error))
            raise gr.Error(message, title="Cannot search") from None
        except Exception:
            logger.exception("search failed")
            raise gr.Error("The search failed unexpectedly; the error was logged. Please try another query.",
                           title="Search failed") from None

    return wrapper


def _filters(gender: str | None = ANY, category: str | None = ANY, colour: str | None = ANY) -> dict:
    chosen = {"gender": gender, "articleType": category, "baseColour": colour}
    return {key: value for key, value in chosen.items() if value and value != ANY}


def _k(k) -> int:
    try:
        return max(1, min(MAX_K, int(k)))
    except (TypeError, ValueError):
        raise QueryError(f"The number of results must be a whole number from 1 to {MAX_K}.") from None


def caption(result: SearchResult) -> str:
    """Title, key attributes, cosine and VSC ("n/a" when the query has no description)."""
    attrs = " · ".join(result.attributes[a] for a in ("gender", "articleType", "baseColour")
                       if result.attributes.get(a))
    vsc = "n/a" if result.vsc is None else f"{result.vsc:.2f}"
    return f"{result.title}\n{attrs}\ncosine {result.visual_score:.3f} · VSC {vsc}"


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


def structured(results: list[SearchResult], model: str, mode: str, seconds: float, query: dict) -> dict:
    """What API clients read: ids, titles, attributes, scores and VSC per result, and the query's summary."""
    return {"model": model, "mode": mode, "query": query, "took_ms": round(seconds * 1000, 1),
            "summary": summarise(results), "results": [r.to_dict() for r in results]}


def _respond(results, model, mode, start, query):
    seconds = time.perf_counter() - start
    if not results:
        gr.Warning("No products match this query and these filters. Try removing a filter.")
    gallery = [(r.image_path, caption(r)) for r in results if r.image_path]
    return gallery, structured(results, model, mode, seconds, query)


class Handlers:
    """The app's event handlers, bound to a registry of engines (tests pass a small one)."""

    def __init__(self, registry: EngineRegistry):
        self.registry = registry

    def _engine(self, model: str | None):
        return self.registry.get(model or None)

    def _name(self, model: str | None) -> str:
        return model or self.registry.default

    @staticmethod
    def _reference_item(engine, image, item_id: str | None) -> str | None:
        """The catalog item a query image stands for: `item_id` (set when a result was clicked or a random product
        picked) unless another photo has been given since (Gradio serves the item's photo under its own name)."""
        if not item_id or image is None:
            return item_id or None
        rows = engine.index.items.loc[engine.index.items["id"] == str(item_id), "image_path"]
        return item_id if len(rows) and Path(str(image)).name == Path(rows.iloc[0]).name else None

    # Text
    @user_errors
    def search_text(self, query: str, k=10, model: str | None = None, gender=ANY, category=ANY, colour=ANY):
        start = time.perf_counter()
        engine = self._engine(model)
        results = engine.search_text(query, k=_k(k), filters=_filters(gender, category, colour))
        return _respond(results, self._name(model), "text", start, {"text": query})

    # Image (an uploaded photo, or a catalog item when `item_id` is set: a clicked result or a random product)
    @user_errors
    def search_image(self, image, k=10, model: str | None = None, gender=ANY, category=ANY, colour=ANY,
                     hybrid: bool = False, rerank_weight: float = 0.3, item_id: str | None = None):
        start = time.perf_counter()
        engine = self._engine(model)
        weight = self._rerank_weight(engine, hybrid, rerank_weight)
        filters = _filters(gender, category, colour)
        item_id = self._reference_item(engine, image, item_id)
        if item_id:
            results = engine.search_item(item_id, k=_k(k), filters=filters, rerank_weight=weight)
        elif image is None:
            raise QueryError("Upload a photo of a product first (or pick a random product).")
        else:
            results = engine.search_image(image, k=_k(k), filters=filters, rerank_weight=weight)
        return _respond(results, self._name(model), "image", start,
                        {"item_id": item_id} if item_id else {"image": "upload"})

    # Composed: reference photo (or catalog item) + modification text
    @user_errors
    def search_composed(self, image, text: str, k=10, model: str | None = None, gender=ANY, category=ANY,
                        colour=ANY, method: str = COMBINER, text_weight: float = 0.5, item_id: str | None = None):
        start = time.perf_counter()
        engine = self._engine(model)
        item_id = self._reference_item(engine, image, item_id)
        if not item_id and image is None:
            raise QueryError("Upload a photo of the product to start from.")
        chosen = "sum" if method == WEIGHTED_SUM else "combiner"
        if chosen == "combiner" and getattr(engine.model, "combiner", None) is None:
            chosen = "sum"  # this model composes by weighted sum only
        results = engine.search_composed(None if item_id else image, text, k=_k(k),
                                         filters=_filters(gender, category, colour), item_id=item_id or None,
                                         method=chosen, text_weight=float(text_weight) if chosen == "sum" else None)
        return _respond(results, self._name(model), "composed", start,
                        {"item_id": item_id, "text": text, "method": chosen} if item_id
                        else {"image": "upload", "text": text, "method": chosen})

    @staticmethod
    def _rerank_weight(engine, hybrid: bool, weight) -> float:
        if not hybrid:
            return 0.0
        if engine.reranker is None:
            raise QueryError("Hybrid re-ranking is not available for this model (no re-ranking model is loaded).")
        return float(weight)

    # Click a result: it becomes the next query image, the text is kept.
    def refine(self, evt: gr.SelectData, data, mode, text, k, model, gender, category, colour, hybrid,
               rerank_weight, method, text_weight):
        results = (data or {}).get("results") or []
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not 0 <= index < len(results):
            raise gr.Error("That result is no longer on the page; run the search again.")
        item = results[index]
        if mode == "composed" and (text or "").strip():
            gallery, out = self.search_composed(None, text, k, model, gender, category, colour, method, text_weight,
                                                item_id=item["id"])
            return (gr.skip(), item["image_path"], gr.skip(), item["id"], gr.Tabs(selected="composed"), gallery, out)
        gallery, out = self.search_image(None, k, model, gender, category, colour, hybrid, rerank_weight,
                                         item_id=item["id"])
        return item["image_path"], gr.skip(), item["id"], gr.skip(), gr.Tabs(selected="image"), gallery, out

    def random_product(self, k, model, gender, category, colour, hybrid, rerank_weight):
        engine = self._engine(model)
        mask = engine.allowed_mask(_filters(gender, category, colour))
        items = engine.index.items if mask is None else engine.index.items[mask]
        if items.empty:
            raise gr.Error("No product matches these filters.")
        row = items.iloc[random.randrange(len(items))]
        gallery, data = self.search_image(None, k, model, gender, category, colour, hybrid, rerank_weight,
                                          item_id=str(row["id"]))
        return row["image_path"], str(row["id"]), gallery, data

    # Compare: the same query through every model, side by side
    def compare(self, text: str, image, k=10, gender=ANY, category=ANY, colour=ANY):
        text = (text or "").strip()
        if not text and image is None:
            raise gr.Error("Type a query, upload a photo, or both (photo + change).", title="Cannot search")
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

    def model_changed(self, model):
        """Show what the chosen model can do (loads it on first use)."""
        engine = self._engine(model)
        has_combiner = getattr(engine.model, "combiner", None) is not None
        notes = [f"**{self._name(model)}**: {len(engine.index):,} products"]
        if not engine.supports_text:
            notes.append("image search only (no text encoder)")
        if engine.reranker is not None:
            notes.append(f"hybrid re-ranking with {engine.reranker.name}")
        return (gr.Radio(choices=[COMBINER, WEIGHTED_SUM] if has_combiner else [WEIGHTED_SUM],
                         value=COMBINER if has_combiner else WEIGHTED_SUM),
                gr.Checkbox(interactive=engine.reranker is not None, value=False),
                " · ".join(notes))

    # Structured-data API endpoints (no images to download)
    def search_text_data(self, query: str, k: int = 10, model: str = "", gender: str = ANY, category: str = ANY,
                         colour: str = ANY) -> dict:
        """Text search returning only structured results: ids, titles, attributes, scores, VSC."""
        return self.search_text(query, k, model or None, gender, category, colour)[1]

    def similar_items_data(self, item_id: str, k: int = 10, model: str = "", gender: str = ANY, category: str = ANY,
                           colour: str = ANY, rerank_weight: float = 0.0) -> dict:
        """Products similar to a catalog item (by id), structured results only; rerank_weight > 0 = hybrid."""
        return self.search_image(None, k, model or None, gender, category, colour, rerank_weight > 0, rerank_weight,
                                 item_id=str(item_id))[1]

    def composed_item_data(self, item_id: str, text: str, k: int = 10, model: str = "", gender: str = ANY,
                           category: str = ANY, colour: str = ANY) -> dict:
        """A catalog item + modification text, structured results only (the model's default composition)."""
        return self.search_composed(None, text, k, model or None, gender, category, colour, item_id=str(item_id))[1]


# -- the page ----------------------------------------------------------------------------------------------------------
def product_image(**kwargs) -> gr.Image:
    """A filepath gr.Image (upload, webcam, clipboard) that hands unreadable uploads to the engine, which answers
    with a clear message; the stock component would fail inside Gradio with a bare "Error". (Patched on the
    instance: a gr.Image subclass makes Gradio write a .pyi stub next to this file.)"""
    kwargs.setdefault("sources", ["upload", "webcam", "clipboard"])
    component = gr.Image(type="filepath", **kwargs)
    stock = component.preprocess

    def preprocess(payload):
        try:
            return stock(payload)
        except Exception:
            return None if payload is None or payload.path is None else str(payload.path)

    component.preprocess = preprocess
    return component


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
def examples_cache(engine):
    """Cached example results live in a folder of their own per index (model fingerprint, items, build time):
    Gradio names the folder after the component's id alone, so another model or catalog would otherwise be
    served the old answers."""
    manifest = getattr(engine.index, "manifest", {}) or {}
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


def build_demo(registry: EngineRegistry) -> gr.Blocks:
    """The Blocks UI bound to a registry of engines (loaded lazily, except the default)."""
    h = Handlers(registry)
    engine = registry.get()
    items = engine.index.items
    values = {c: sorted(v for v in items[c].unique() if v) if c in items else [] for c in FILTERS}
    has_combiner = getattr(engine.model, "combiner", None) is not None
    default_weight = float(getattr(engine.model.config, "composition_text_weight", 0.5) or 0.5)
    photos = _catalog_examples(items, IMAGE_EXAMPLE_TYPES + tuple(t for t, _ in COMPOSED_EXAMPLES))

    with examples_cache(engine), gr.Blocks(title="Fashion search") as demo:
        mode = gr.State("text")
        image_item, ref_item = gr.State(None), gr.State(None)
        gr.Markdown(f"# Fashion search\nDescribe a product, show a photo, or show a photo and say what to change. "
                    f"{len(items):,} products. Every result shows its **cosine** similarity to the query and its "
                    f"**VSC** (visual-semantic consistency: how well the product's own description agrees with the "
                    f"query's; n/a for a photo without text). Click a result to search with it.")
        with gr.Row():
            model = gr.Dropdown(registry.names, value=registry.default, label="Model", scale=1)
            k = gr.Slider(1, MAX_K, value=10, step=1, label="Results", scale=1)
            dropdowns = [gr.Dropdown([ANY, *values[c]], value=ANY, label=label, filterable=True, scale=1)
                         for c, label in FILTERS.items()]
        model_note = gr.Markdown(f"**{registry.default}**: {len(items):,} products")
        # Created here so each tab's examples can write to them; rendered below the tabs.
        summary = gr.Markdown(elem_id="result-summary", elem_classes="result-summary", render=False)
        gallery = gr.Gallery(label="Results", columns=5, height="auto", object_fit="contain", allow_preview=False,
                             elem_id="results", render=False)
        data = gr.JSON(label="Results", render=False)
        outputs = [gallery, data]
        with gr.Tabs(selected="text") as tabs:
            with gr.Tab("Text", id="text") as text_tab:
                with gr.Row():
                    query = gr.Textbox(label="Describe what you want", placeholder="e.g. red summer dress",
                                       max_lines=1, scale=4, elem_id="text-query")
                    text_button = gr.Button("Search", variant="primary", scale=1, elem_id="text-search")
                # Examples run with the default model and no filters, cached on first use.
                gr.Examples([[q] for q in TEXT_EXAMPLES], inputs=[query], outputs=outputs, label="Examples",
                            fn=lambda q: h.search_text(q), cache_examples=True, cache_mode="lazy",
                            api_name="example_text")
            with gr.Tab("Image", id="image") as image_tab:
                with gr.Row():
                    image = product_image(label="Product photo", height=260, elem_id="query-image")
                    with gr.Column():
                        hybrid = gr.Checkbox(False, label="Hybrid re-ranking (colour and silhouette)",
                                             interactive=engine.reranker is not None,
                                             info=f"re-ranks the top 100 with {engine.reranker.name}"
                                             if engine.reranker else "no re-ranking model loaded")
                        rerank_weight = gr.Slider(0, 1, value=0.3, step=0.05, label="Re-ranking weight")
                        image_button = gr.Button("Find similar", variant="primary", elem_id="image-search")
                        random_button = gr.Button("Random product from the catalog")
                image_examples = [[p] for t, p in photos.items() if t in IMAGE_EXAMPLE_TYPES]
                if image_examples:
                    gr.Examples(image_examples, inputs=[image], outputs=outputs, label="Examples from the catalog",
                                fn=lambda p: h.search_image(p), cache_examples=True, cache_mode="lazy",
                                api_name="example_image", examples_per_page=len(image_examples))
            with gr.Tab("Photo + change", id="composed") as composed_tab:
                with gr.Row():
                    ref_image = product_image(label="Start from this product", height=260, elem_id="reference-image")
                    with gr.Column():
                        change = gr.Textbox(label="What should be different?", placeholder="e.g. make it blue",
                                            max_lines=1, elem_id="change-text")
                        method = gr.Radio([COMBINER, WEIGHTED_SUM] if has_combiner else [WEIGHTED_SUM],
                                          value=COMBINER if has_combiner else WEIGHTED_SUM, label="Composition")
                        text_weight = gr.Slider(0, 1, value=default_weight, step=0.05,
                                                label="Text influence (weighted sum): 0 = photo only, 1 = text only")
                        composed_button = gr.Button("Search", variant="primary", elem_id="composed-search")
                composed_examples = [[photos[t], text] for t, text in COMPOSED_EXAMPLES if t in photos]
                if composed_examples and engine.supports_text:
                    gr.Examples(composed_examples, inputs=[ref_image, change], outputs=outputs, label="Examples",
                                fn=lambda p, t: h.search_composed(p, t), cache_examples=True, cache_mode="lazy",
                                api_name="example_composed")
            with gr.Tab("Compare models", id="compare"):
                gr.Markdown("The same query through every model: text, a photo, or both (photo + change).")
                with gr.Row():
                    compare_text = gr.Textbox(label="Text or change", max_lines=1, scale=2)
                    compare_image = product_image(label="Photo (optional)", height=160, scale=1)
                    compare_button = gr.Button("Compare", variant="primary", scale=1)
                with gr.Row():
                    compare_galleries = [gr.Gallery(label=name, columns=2, height=520, object_fit="contain",
                                                    allow_preview=False) for name in registry.names]
                compare_data = gr.JSON(label="Structured results per model", visible=False)
        summary.render()
        gallery.render()
        with gr.Accordion("Structured results (what the API returns)", open=False):
            data.render()

        filters = [k, model, *dropdowns]
        gr.on([text_button.click, query.submit], h.search_text, [query, k, model, *dropdowns], outputs,
              api_name="search_text")
        image_button.click(h.search_image, [image, *filters, hybrid, rerank_weight, image_item], outputs,
                           api_name="search_image")
        gr.on([composed_button.click, change.submit], h.search_composed,
              [ref_image, change, *filters, method, text_weight, ref_item], outputs, api_name="search_composed")
        compare_button.click(h.compare, [compare_text, compare_image, k, *dropdowns],
                             [*compare_galleries, compare_data], api_name="compare")
        random_button.click(h.random_product, [*filters, hybrid, rerank_weight], [image, image_item, *outputs],
                            api_name="random_product")
        gallery.select(h.refine, [data, mode, change, *filters, hybrid, rerank_weight, method, text_weight],
                       [image, ref_image, image_item, ref_item, tabs, *outputs], api_visibility="private")
        # The summary line above the gallery is rendered from the structured results, whatever produced them.
        data.change(summary_line, data, summary, api_visibility="private", queue=False)
        # A new upload replaces a clicked result as the query.
        image.upload(lambda: None, None, image_item, api_visibility="private", queue=False)
        image.clear(lambda: None, None, image_item, api_visibility="private", queue=False)
        ref_image.upload(lambda: None, None, ref_item, api_visibility="private", queue=False)
        ref_image.clear(lambda: None, None, ref_item, api_visibility="private", queue=False)
        for tab, name in ((text_tab, "text"), (image_tab, "image"), (composed_tab, "composed")):
            tab.select(functools.partial(lambda n: n, name), None, mode, api_visibility="private", queue=False)
        model.change(h.model_changed, model, [method, hybrid, model_note], api_visibility="private")
        gr.api(h.search_text_data, api_name="search_text_data", queue=False)
        gr.api(h.similar_items_data, api_name="similar_items_data", queue=False)
        gr.api(h.composed_item_data, api_name="composed_item_data")

    return demo


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
    return EngineRegistry(specs, catalog=args.catalog, rerank_model=args.rerank_model,
                          onnx={default.name: args.onnx} if getattr(args, "onnx", None) else None)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    registry = make_registry(args)
    try:
        registry.get()  # the default model loads (and indexes the catalog if needed) before the page is served
    except (OSError, ValueError) as error:
        raise SystemExit(f"Cannot start: {error}\nTrain the default model with `make train` (or point --model / "
                         "FASHION_MODEL at a trained model folder) and --catalog at a catalog.") from None
    items = registry.get().index.items
    allowed = sorted({str(Path(p).parent) for p in items.get("image_path", []) if p})
    build_demo(registry).launch(server_name=args.host, server_port=args.port, allowed_paths=allowed,
                                max_file_size=MAX_UPLOAD, css=CSS, footer_links=["api"])


if __name__ == "__main__":
    main()
