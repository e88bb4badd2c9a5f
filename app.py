"""Fashion search: a Gradio Blocks app over the search engine (text, image and composed search).

    python app.py --model runs/dual-encoder --catalog ../shared/data

Configuration by flags or environment variables: FASHION_MODEL (model folder), FASHION_INDEX (index folder,
default MODEL/index), FASHION_CATALOG (catalog folder, metadata file or Hub dataset; used to build a missing
index), FASHION_TEXT_WEIGHT, FASHION_RERANK_MODEL (an image model, e.g. the VAE, offered as hybrid re-ranking of image
search). The engine loads once; handlers only translate between the UI and the engine.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from pathlib import Path

import gradio as gr

from modeling.data import ImageError
from modeling.search import DEFAULT_TEXT_WEIGHT, FashionSearchEngine, QueryError, SearchResult
from modeling.vsc import summarise

logger = logging.getLogger("app")

DEFAULT_MODEL = os.environ.get("FASHION_MODEL", "runs/dual-encoder")
DEFAULT_CATALOG = os.environ.get("FASHION_CATALOG", str(Path(__file__).resolve().parent.parent / "shared" / "data"))
FILTER_COLUMNS = {"gender": "Gender", "articleType": "Category", "baseColour": "Colour"}
ANY = "Any"
TEXT_EXAMPLES = ["red summer dress", "white polo t-shirts", "watches for men", "men formal black shoes"]


COMPOSED_EXAMPLES = ["make it blue", "in black instead", "same but pink", "a white version"]


@functools.lru_cache(maxsize=1)
def get_engine(model_dir: str = DEFAULT_MODEL, index_dir: str | None = None, catalog: str | None = DEFAULT_CATALOG,
               rerank_model: str | None = os.environ.get("FASHION_RERANK_MODEL")) -> FashionSearchEngine:
    """The engine, loaded once per process (the index is built on first start when absent)."""
    index_dir = index_dir or os.environ.get("FASHION_INDEX") or str(Path(model_dir) / "index")
    weight = float(os.environ.get("FASHION_TEXT_WEIGHT", DEFAULT_TEXT_WEIGHT))
    return FashionSearchEngine.load(model_dir, index_dir, catalog=catalog, text_weight=weight,
                                    rerank_model=rerank_model or None)


def _filters(gender: str | None, category: str | None, colour: str | None) -> dict:
    chosen = {"gender": gender, "articleType": category, "baseColour": colour}
    return {key: value for key, value in chosen.items() if value and value != ANY}


def _caption(result: SearchResult) -> str:
    attrs = " · ".join(result.attributes.get(a, "") for a in ("gender", "articleType", "baseColour")
                       if result.attributes.get(a))
    vsc = "n/a" if result.vsc is None else f"{result.vsc:.3f}"
    return f"{result.title}\n{attrs}\ncosine {result.visual_score:.3f} · VSC {vsc} · score {result.score:.3f}"


def _outputs(results: list[SearchResult]):
    if not results:
        gr.Warning("No products match this query and these filters. Try removing a filter.")
    gallery = [(r.image_path, _caption(r)) for r in results if r.image_path]
    return gallery, {"results": [r.to_dict() for r in results], "summary": summarise(results)}


def search_text(query: str, k: float = 10, gender: str = ANY, category: str = ANY, colour: str = ANY,
                engine: FashionSearchEngine | None = None):
    """Text -> products. Returns (gallery items, structured results)."""
    engine = engine or get_engine()
    try:
        results = engine.search_text(query, k=int(k), filters=_filters(gender, category, colour))
    except QueryError as err:
        raise gr.Error(str(err)) from None
    return _outputs(results)


def search_image(image, k: float = 10, gender: str = ANY, category: str = ANY, colour: str = ANY,
                 rerank_weight: float = 0.0, engine: FashionSearchEngine | None = None):
    """Image -> visually similar products. `image` is a file path (uploads arrive as temp files);
    `rerank_weight` > 0 re-ranks with the re-ranking model when the app has one (hybrid search)."""
    engine = engine or get_engine()
    if image is None:
        raise gr.Error("Upload a photo of a product first.")
    weight = float(rerank_weight or 0.0) if engine.reranker is not None else 0.0
    try:
        results = engine.search_image(image, k=int(k), filters=_filters(gender, category, colour),
                                      rerank_weight=weight)
    except (ImageError, QueryError) as err:
        raise gr.Error(str(err)) from None
    return _outputs(results)


def search_composed(image, text: str, k: float = 10, gender: str = ANY, category: str = ANY, colour: str = ANY,
                    text_weight: float | None = None, engine: FashionSearchEngine | None = None):
    """Reference photo + modification text -> products. `text_weight` is the text's influence (weighted sum);
    None uses the model's default composition (its learned combiner when it has one)."""
    engine = engine or get_engine()
    if image is None:
        raise gr.Error("Upload a photo of the product to start from.")
    method = None if text_weight is None else "sum"
    try:
        results = engine.search_composed(image, text, k=int(k), filters=_filters(gender, category, colour),
                                         text_weight=text_weight, method=method)
    except (ImageError, QueryError) as err:
        raise gr.Error(str(err)) from None
    return _outputs(results)


def build_demo(engine: FashionSearchEngine) -> gr.Blocks:
    """The Blocks UI bound to one engine (tests pass a small one)."""
    values = {c: sorted(v for v in engine.index.items[c].unique() if v) if c in engine.index.items else []
              for c in FILTER_COLUMNS}

    def run_text(query, k, gender, category, colour):
        return search_text(query, k, gender, category, colour, engine=engine)

    def run_image(image, k, gender, category, colour, rerank_weight=0.0):
        return search_image(image, k, gender, category, colour, rerank_weight, engine=engine)

    def run_composed(image, text, k, gender, category, colour, learned, text_weight):
        return search_composed(image, text, k, gender, category, colour, None if learned else text_weight,
                               engine=engine)

    has_combiner = getattr(engine.model, "combiner", None) is not None

    with gr.Blocks(title="Fashion search") as demo:
        gr.Markdown("# Fashion search\nFind products by describing them or by showing a photo. "
                    f"{len(engine.index):,} products indexed.")
        with gr.Row():
            k = gr.Slider(1, 50, value=10, step=1, label="Results")
            dropdowns = [gr.Dropdown([ANY, *values[c]], value=ANY, label=label) for c, label in FILTER_COLUMNS.items()]
        with gr.Tab("Text"):
            query = gr.Textbox(label="Describe what you want", placeholder="e.g. red summer dress", max_lines=2)
            text_button = gr.Button("Search", variant="primary")
            gr.Examples([[e] for e in TEXT_EXAMPLES], inputs=[query])
        with gr.Tab("Image"):
            # A File input, not gr.Image: gr.Image decodes uploads before the handler runs, so a corrupt file
            # would fail inside Gradio with a generic error instead of the engine's clear message.
            image = gr.File(label="Product photo (JPEG, PNG, WebP...)", file_types=["image"], type="filepath")
            rerank = gr.Slider(0, 1, value=0.0, step=0.05, visible=engine.reranker is not None,
                               label=f"Re-rank by {engine.reranker.name if engine.reranker else 'VAE'} "
                                     "(colour and silhouette) — weight")
            image_button = gr.Button("Find similar", variant="primary")
        with gr.Tab("Photo + change", visible=engine.supports_text):
            ref_image = gr.File(label="Start from this product photo", file_types=["image"], type="filepath")
            change = gr.Textbox(label="What should be different?", placeholder="e.g. make it blue", max_lines=2)
            with gr.Row():
                learned = gr.Checkbox(value=has_combiner, visible=has_combiner, label="Learned combiner")
                text_weight = gr.Slider(0, 1, value=float(getattr(engine.model.config, "composition_text_weight",
                                                                   0.5)),
                                        step=0.05, label="Text influence (weighted sum)")
            composed_button = gr.Button("Search", variant="primary")
            gr.Examples([[e] for e in COMPOSED_EXAMPLES], inputs=[change])
        gallery = gr.Gallery(label="Results", columns=5, height="auto", object_fit="contain")
        data = gr.JSON(label="Results (structured)", visible=False)

        gr.on([text_button.click, query.submit], run_text, [query, k, *dropdowns], [gallery, data],
              api_name="search_text")
        image_button.click(run_image, [image, k, *dropdowns, rerank], [gallery, data], api_name="search_image")
        gr.on([composed_button.click, change.submit], run_composed,
              [ref_image, change, k, *dropdowns, learned, text_weight], [gallery, data], api_name="search_composed")
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the fashion search app.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder (env FASHION_MODEL)")
    p.add_argument("--index", default=os.environ.get("FASHION_INDEX"), help="index folder (default MODEL/index)")
    p.add_argument("--catalog", default=DEFAULT_CATALOG, help="catalog used to build a missing index")
    p.add_argument("--rerank-model", default=os.environ.get("FASHION_RERANK_MODEL"),
                   help="image model (e.g. runs/vae) offered for hybrid re-ranking of image search")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    args = parse_args()
    engine = get_engine(args.model, args.index, args.catalog, args.rerank_model)
    allowed = sorted({str(Path(p).parent) for p in engine.index.items.get("image_path", []) if p})
    build_demo(engine).launch(server_name=args.host, server_port=args.port, allowed_paths=allowed)
