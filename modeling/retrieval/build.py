"""Catalog -> index: encode a catalog's images (and item descriptions) with a model and keep it as a `CatalogIndex`.

`load_or_build_index` is what the engine and the app call: the index of a model in a folder, built and saved
atomically when absent, refused when it was built by another model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from modeling.data.catalog import materialise_images
from modeling.data.text import item_description
from modeling.encoders.loading import embedding_dim, encode_images, model_fingerprint
from modeling.encoders.sentence import SentenceEncoder
from modeling.retrieval.index import CatalogIndex

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
    """The index of `model` in `index_dir`, built (and saved atomically) from `get_dataset()` when absent."""
    info = {"name": str(model_dir), "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
    index_dir = Path(index_dir)
    if rebuild or not (index_dir / "manifest.json").exists():
        if image_encoder is not None:
            info["encoder"] = "onnxruntime"
        index = build_index(model, tokenizer, processor, get_dataset(), model_info=info,
                            sentence_encoder=sentence_encoder, image_encoder=image_encoder)
        index.save(index_dir)
        return index
    return CatalogIndex.load(index_dir, expected_model=info)
