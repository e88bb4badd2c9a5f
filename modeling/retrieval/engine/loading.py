"""Everything `FashionSearchEngine.load` assembles from files: the model, its index (built when absent), the
sentence encoder, VSC, the hybrid re-ranker, the query-intent heads and the vector backend (`modeling.retrieval.backends.registry`)."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

from modeling.encoders.loading import has_text_tower, load_model, model_fingerprint
from modeling.encoders.onnx import OnnxEncoder
from modeling.encoders.pretrained import EFFICIENTNET_LITE0, efficientnet_lite0_folder
from modeling.encoders.sentence import SentenceEncoder
from modeling.retrieval.backends.registry import BACKEND_NAMES, open_backend
from modeling.retrieval.engine.build_index import attach_image_paths, has_image_files, load_or_build_index
from modeling.retrieval.understanding.heads import INTENT_HEADS_FILE, IntentHeads, load_or_fit_intent_heads
from modeling.retrieval.engine.photo_fusion import PHOTO_IMAGE_SIZE, PHOTO_INDEX, PhotoFusion
from modeling.retrieval.engine.rerank import VisualReranker
from modeling.retrieval.engine.vsc import VSCScorer

VECTOR_STORES = BACKEND_NAMES
logger = logging.getLogger(__name__)


def read_intent_heads(index_dir: str | os.PathLike, index) -> IntentHeads:
    """The query-intent heads the index build fitted and wrote (`load_or_build_index`). An index built before the
    build wrote them (or whose file is unreadable or stale) gets them fitted once here, with a warning, and written
    beside it where the folder is writable: an old index keeps opening."""
    path = Path(index_dir) / INTENT_HEADS_FILE
    try:
        heads = IntentHeads.load(path) if path.is_file() else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        heads = None
    if heads is None or heads.num_items != len(index.items):
        logger.warning("the query-intent heads of the index are missing, unreadable or stale: fitting them once "
                       "(the index build writes them; `python -m modeling.retrieval.engine.build_index` adds them "
                       "to an existing index without re-encoding it)")
        heads = load_or_fit_intent_heads(index_dir, index)
    return heads


def load_engine_parts(model_dir: str | os.PathLike, index_dir: str | os.PathLike, *, catalog=None,
                      text_encoder: str | None = "sentence-transformers/all-MiniLM-L6-v2", rebuild: bool = False,
                      rerank_model=None, rerank_index=None, vsc_source: str | None = "title",
                      sentence_encoder: SentenceEncoder | None = None, onnx_dir=None, vector_store: str = "faiss",
                      qdrant=None, qdrant_client=None, photo_model=None, photo_index=None) -> dict:
    """The engine constructor's arguments: `{"args": (model, tokenizer, processor, index, encoder), **keywords}`
    (see `FashionSearchEngine.load` for the parameters). A Qdrant store serves from its collection alone
    (`modeling.retrieval.engine.stored`): `index_dir` is not read, and nothing is built from `catalog` but the
    re-ranking model's index."""
    if vector_store not in VECTOR_STORES:
        raise ValueError(f"unknown vector store {vector_store!r}; use one of {', '.join(VECTOR_STORES)}")
    if vector_store != "faiss" and qdrant is None:
        raise ValueError(f"the {vector_store} vector store needs a QdrantConfig: a server url or a local path")
    model, tokenizer, processor = load_model(model_dir)
    encoder = sentence_encoder or (SentenceEncoder(text_encoder) if text_encoder else None)
    dataset = None

    def get_dataset():
        nonlocal dataset
        if dataset is None:
            if catalog is None:
                raise FileNotFoundError(f"no index at {index_dir} and no catalog given to build one")
            from modeling.data.catalog import load_catalog

            if isinstance(catalog, (str, os.PathLike)):
                dataset = load_catalog(catalog)
            else:
                dataset = catalog() if callable(catalog) else catalog
        return dataset

    image_encoder = None
    if onnx_dir is not None:
        image_encoder = OnnxEncoder(onnx_dir)
        if image_encoder.fingerprint != model_fingerprint(model):
            raise ValueError(f"the ONNX export at {onnx_dir} was made from another model than {model_dir} "
                             f"(fingerprint {image_encoder.fingerprint}); export this model again")

    def load_reranker():  # after the main index: its default folder is inside the main index's
        if rerank_model is None:
            return None
        r_model, _, r_processor = load_model(rerank_model)
        if rerank_index is None and vector_store != "faiss":
            raise ValueError("hybrid re-ranking from a vector store needs the re-ranking model's index folder "
                             "(rerank_index)")
        r_index = load_or_build_index(r_model, None, r_processor, rerank_index or Path(index_dir) / "rerank",
                                      rerank_model, get_dataset, rebuild=rebuild)
        return VisualReranker(r_model, r_processor, r_index, name=Path(rerank_model).name)

    def load_photo():  # the second photo encoder's index: a folder of its own, beside the main index by default
        if not photo_model:
            return None
        if vector_store != "faiss":  # its index and the re-scoring need the catalog's vectors in process
            logger.warning("serving from %s alone: photo queries use the model's own encoder, not the second "
                           "photo encoder %s (it needs a local index)", vector_store, photo_model)
            return None
        return load_photo_fusion(photo_model, photo_index or Path(index_dir) / PHOTO_INDEX, get_dataset, rebuild)

    if vector_store != "faiss":
        from modeling.retrieval.engine.stored import load_store_parts

        parts = load_store_parts(model, encoder, model_dir, config=qdrant, client=qdrant_client,
                                 vsc_source=vsc_source, vector_store=vector_store)
        return {"args": (model, tokenizer, processor, parts.pop("index"), encoder),
                "model_name": Path(model_dir).name, "reranker": load_reranker(), "photo_fusion": load_photo(), **parts}
    index = load_or_build_index(model, tokenizer, processor, index_dir, model_dir, get_dataset,
                                sentence_encoder=encoder if has_text_tower(model) else None, rebuild=rebuild,
                                image_encoder=image_encoder)
    if catalog is not None and not has_image_files(index.items):
        attach_image_paths(index.items, get_dataset())
    vsc = VSCScorer.load_or_build(index_dir, encoder, index.items, vsc_source) if encoder and vsc_source else None
    reranker = load_reranker()
    heads = read_intent_heads(index_dir, index) if index.has_item_texts else None
    backend = open_backend(vector_store, index, config=qdrant, encoder=encoder, client=qdrant_client)
    return {"args": (model, tokenizer, processor, index, encoder), "model_name": Path(model_dir).name,
            "reranker": reranker, "vsc": vsc, "intent_heads": heads, "backend": backend,
            "photo_fusion": load_photo()}


def load_photo_fusion(photo_model, index_dir, get_dataset, rebuild: bool = False) -> PhotoFusion:
    """The second photo encoder (`efficientnet-lite0`, reading photos at `PHOTO_IMAGE_SIZE`, or a model folder)
    with its catalog index at `index_dir`, built when absent (OSError without EfficientNet's weights package)."""
    lite0 = str(photo_model) == EFFICIENTNET_LITE0
    folder = efficientnet_lite0_folder() if lite0 else Path(photo_model)
    model, _, processor = load_model(folder)
    if lite0:
        processor.image_size = list(PHOTO_IMAGE_SIZE)
    index = load_or_build_index(model, None, processor, index_dir, folder, get_dataset, rebuild=rebuild)
    return PhotoFusion(model, processor, index, name=Path(folder).name)

