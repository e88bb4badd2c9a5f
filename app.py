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
import logging
import os
from pathlib import Path

# Before gradio is imported: it reads the variable at import time. The app phones no one home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from modeling.serving.registry import DEFAULT_PHOTO_MODEL, EngineRegistry, ModelSpec, qdrant_config, with_index_repo
from modeling.serving.service import DEFAULT_MAX_IN_FLIGHT, DEFAULT_WORKER_NICE, MAX_K, SearchService
from modeling.serving.tuning import cap_malloc_arenas, limit_threads, return_large_blocks
# The page and its handlers (`modeling.ui`), re-exported: `import app; app.build_demo(registry)` is the app's API.
from modeling.ui.handlers import (ANY, BOX_VIEW_SIDE, COMBINER, MAX_DUPLICATES_SHOWN, MAX_UPLOAD, QUEUE_SIZE, WEIGHTED_SUM,
                                  Handlers, caption, chip_choices, chip_to_filter, click_box,
                                  context_note, show_chips, summary_line)
from modeling.ui.page import CSS, build_demo, monitoring_enabled, product_image, serve

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = "runs/dual-encoder"
OPTIONAL_MODELS = ("runs/clip-lora", "runs/vae")  # offered when trained
DEFAULT_CATALOG = str(HERE.parent / "shared" / "data")


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
    p.add_argument("--photo-model", default=os.environ.get("FASHION_PHOTO_MODEL", DEFAULT_PHOTO_MODEL),
                   help="second image encoder for photo queries, fused with the model's (default "
                        f"{DEFAULT_PHOTO_MODEL}; its catalog index is built beside the first model's; 'none' turns it "
                        "off; env FASHION_PHOTO_MODEL)")
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
    if str(args.photo_model).lower() in ("", "none"):
        args.photo_model = None
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
                          vector_store=getattr(args, "vector_store", "faiss"), qdrant=qdrant,
                          photo_model=getattr(args, "photo_model", None))


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
                            max_in_flight=int(os.environ.get("FASHION_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT)),
                            worker_nice=int(os.environ.get("FASHION_WORKER_NICE", DEFAULT_WORKER_NICE)))
    allowed = service.image_folders()
    serve(build_demo(registry, service), service, server_name=args.host, server_port=args.port,
          allowed_paths=allowed, css=CSS, footer_links=["api"])


__all__ = ["ANY", "BOX_VIEW_SIDE", "COMBINER", "CSS", "DEFAULT_MODEL", "Handlers", "MAX_DUPLICATES_SHOWN", "MAX_K",
           "MAX_UPLOAD", "QUEUE_SIZE", "WEIGHTED_SUM", "build_demo", "caption", "chip_choices", "chip_to_filter",
           "click_box", "context_note", "main", "make_registry", "monitoring_enabled", "parse_args", "product_image",
           "serve", "show_chips", "summary_line"]

if __name__ == "__main__":
    main()
