"""Catalog -> index: encode a catalog's images (and item descriptions) with a model and keep it as a `CatalogIndex`.

`load_or_build_index` is what the engine and the app call: the index of a model in a folder, built and saved
atomically when absent, refused when it was built by another model.

`python -m modeling.retrieval.engine.build_index --model M --catalog C --vector-store faiss|qdrant|qdrant-edge` is the
command line: a FAISS index folder (through `load_or_build_index`), or a Qdrant collection (a server, local mode, or
qdrant-edge shards in a folder) streamed in resumable batches
(`modeling.retrieval.backends.qdrant.ingest`, several processes under `accelerate launch`), with what the engine
needs to serve from it alone (`modeling.retrieval.engine.stored`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from modeling.data.catalog import materialise_images
from modeling.data.text import item_description
from modeling.encoders.loading import embedding_dim, encode_images, model_fingerprint
from modeling.encoders.sentence import SentenceEncoder
from modeling.retrieval.backends.faiss.index import CatalogIndex
from modeling.retrieval.backends.registry import BACKEND_NAMES
from modeling.retrieval.understanding.heads import load_or_fit_intent_heads

if TYPE_CHECKING:
    from modeling.retrieval.backends.qdrant.store import QdrantConfig

logger = logging.getLogger(__name__)


def catalog_items(dataset) -> pd.DataFrame:
    """The metadata an index keeps per item: every column but the decoded image."""
    columns = [c for c in dataset.column_names if c != "image"]
    frame = dataset.select_columns(columns).to_pandas()
    return frame.fillna("").astype(str)


def build_index(model, tokenizer, processor, dataset, *, model_info: dict,
                sentence_encoder: SentenceEncoder | None = None, batch_size: int = 256,
                image_encoder=None) -> CatalogIndex:
    """Encode a catalog (images; item descriptions when a sentence encoder is given) and index it. `image_encoder`
    (e.g. an `OnnxEncoder` of the same model) encodes the images instead of `model`."""
    items = catalog_items(dataset)
    embeds = []
    column = dataset.select_columns(["image"])
    for start in tqdm(range(0, len(dataset), batch_size), desc="indexing images", unit="batch"):
        images = column[start:start + batch_size]["image"]
        embeds.append(encode_images(image_encoder or model, processor, images, batch_size=batch_size))
    embeddings = np.concatenate(embeds) if embeds else np.zeros((0, model_info["embedding_dim"]), np.float32)
    text_embeddings, text_info = None, None
    if sentence_encoder is not None:
        descriptions = [item_description(row) for row in items.to_dict("records")]
        text_embeddings = sentence_encoder.encode(descriptions, progress=True)
        text_info = {"name": sentence_encoder.name, "embedding_dim": sentence_encoder.dim,
                     "description": "title. attribute caption, season"}
    return CatalogIndex.build(embeddings, items, model_info=model_info, text_embeddings=text_embeddings,
                              text_encoder_info=text_info)


def has_image_files(items: pd.DataFrame) -> bool:
    """Whether the items' image paths point at files on this machine (checked on a few)."""
    if "image_path" not in items or not len(items):
        return False
    sample = items["image_path"].iloc[:: max(1, len(items) // 20)]
    return all(bool(path) and os.path.isfile(path) for path in sample)


def attach_image_paths(items: pd.DataFrame, dataset) -> None:
    """Fill `items["image_path"]` (in place) from the catalog by id, writing embedded images to files first."""
    dataset = materialise_images(dataset)
    paths = dict(zip(dataset["id"], dataset["image_path"]))
    items["image_path"] = [paths.get(str(item_id), "") for item_id in items["id"]]
    missing = int((items["image_path"] == "").sum())
    if missing:
        logger.warning("%d indexed items are not in the catalog: they are shown without a picture", missing)


def load_or_build_index(model, tokenizer, processor, index_dir, model_dir, get_dataset, *,
                        sentence_encoder: SentenceEncoder | None = None, rebuild: bool = False,
                        image_encoder=None) -> CatalogIndex:
    """The index of `model` in `index_dir`, built (and saved atomically) from `get_dataset()` when absent; a build
    also fits the query-intent heads on the item texts and writes them beside it (the engine only reads them)."""
    info = {"name": str(model_dir), "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
    index_dir = Path(index_dir)
    if rebuild or not (index_dir / "manifest.json").exists():
        if image_encoder is not None:
            info["encoder"] = "onnxruntime"
        index = build_index(model, tokenizer, processor, get_dataset(), model_info=info,
                            sentence_encoder=sentence_encoder, image_encoder=image_encoder)
        index.save(index_dir)
        load_or_fit_intent_heads(index_dir, index)
        return index
    return CatalogIndex.load(index_dir, expected_model=info)


# -- the build command ------------------------------------------------------------------------------------------
def qdrant_config_from_args(args) -> "QdrantConfig":
    """`--qdrant-url` / `--qdrant-path`, else `FASHION_QDRANT_URL` / `FASHION_QDRANT_PATH`; the API key only from
    `FASHION_QDRANT_API_KEY` (a command line is visible to every user of the machine)."""
    from modeling.retrieval.backends.qdrant.store import QdrantConfig

    return QdrantConfig.from_environment(args.qdrant_url, args.qdrant_path, collection=args.qdrant_collection,
                                         shard_number=args.shard_number, replication_factor=args.replication_factor,
                                         on_disk=not args.in_memory, quantization=not args.no_quantization,
                                         timeout=args.qdrant_timeout, edge=args.vector_store == "qdrant-edge")


def parse_args(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m modeling.retrieval.engine.build_index",
        description="Index a catalog with a model: a FAISS index folder, or a Qdrant collection (streamed, batched, "
                    "resumable; several processes with "
                    "`accelerate launch ... -m modeling.retrieval.engine.build_index`).")
    parser.add_argument("--model", required=True, help="model folder (e.g. runs/dual-encoder)")
    parser.add_argument("--catalog", required=True, help="catalog folder, CSV/JSONL/Parquet file or Hub dataset id")
    parser.add_argument("--vector-store", choices=BACKEND_NAMES, default="faiss")
    parser.add_argument("--index-dir", help="faiss: the index folder (default <model>/index)")
    parser.add_argument("--qdrant-url", help="Qdrant server or cluster URL (API key from FASHION_QDRANT_API_KEY)")
    parser.add_argument("--qdrant-path", help="folder of an embedded local-mode Qdrant or of qdrant-edge shards "
                                              "(one process)")
    parser.add_argument("--qdrant-collection", help="serving name (default fashion-search-<model fingerprint>)")
    parser.add_argument("--qdrant-timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--shard-number", type=int, default=1, help="qdrant: shards, set at creation")
    parser.add_argument("--replication-factor", type=int, default=1, help="qdrant: copies of each shard")
    parser.add_argument("--in-memory", action="store_true", help="qdrant: keep original vectors in RAM, not on disk")
    parser.add_argument("--no-quantization", action="store_true", help="qdrant: no int8 scalar quantization")
    parser.add_argument("--batch-size", type=int, default=256, help="items encoded and written per batch")
    parser.add_argument("--split", help="only these catalog splits (e.g. val or val,test)")
    parser.add_argument("--max-items", type=int, help="only the first N items (after the split filter)")
    parser.add_argument("--text-encoder", default="sentence-transformers/all-MiniLM-L6-v2",
                        help="item-text encoder of fused text search ('none' for image-only)")
    parser.add_argument("--rebuild", action="store_true", help="build again even when up to date")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """The build command (see `parse_args`); prints items/s at the end."""
    import time

    from modeling.encoders.loading import has_text_tower, load_model

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, tokenizer, processor = load_model(args.model)
    encoder = None
    if args.text_encoder.lower() != "none" and has_text_tower(model):
        encoder = SentenceEncoder(args.text_encoder)
    info = {"name": str(args.model), "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
    from modeling.retrieval.backends.qdrant.ingest import process_state

    state = process_state()
    if args.vector_store == "faiss":
        if not state.is_main_process:  # one process writes a FAISS folder; the others have nothing to do
            return 0
        from modeling.data.catalog import load_catalog

        start = time.perf_counter()
        index = load_or_build_index(model, tokenizer, processor, args.index_dir or Path(args.model) / "index",
                                    args.model, lambda: load_catalog(args.catalog, split=args.split,
                                                                     max_items=args.max_items),
                                    sentence_encoder=encoder, rebuild=args.rebuild)
        load_or_fit_intent_heads(args.index_dir or Path(args.model) / "index", index)  # an older index gets them
        seconds = time.perf_counter() - start
        print(f"{len(index)} items in {args.index_dir or Path(args.model) / 'index'}: {seconds:.1f} s, "
              f"{len(index) / seconds:.1f} items/s")
        return 0

    from modeling.retrieval.engine.stored import build_store

    config = qdrant_config_from_args(args)
    report = build_store(model, processor, args.catalog, config, model_info=info, sentence_encoder=encoder,
                         batch_size=args.batch_size, split=args.split, max_items=args.max_items,
                         rebuild=args.rebuild, state=state)
    if report.up_to_date:
        print(f"{report.name} -> {report.collection} is up to date ({report.total_points} points); --rebuild to redo")
    else:
        print(f"process {state.process_index}/{state.num_processes}: {report.items} items in {report.seconds:.1f} s, "
              f"{report.items_per_second:.1f} items/s")
        if report.total_points is not None:
            print(f"{report.name} -> {report.collection}: {report.total_points} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
