"""The search engine: encoders + FAISS index (+ item-text matching) behind one class.

The app, evaluate.py and Python users all call `FashionSearchEngine`:

    engine = FashionSearchEngine.load("runs/dual-encoder", "runs/dual-encoder/index", catalog="../shared/data")
    engine.search_text("red summer dress", k=10, filters={"gender": "Women"})
    engine.search_image("photo.jpg", k=10, exclude_ids=["15970"])

Text search fuses two cosines: the visual score (query text embedding vs. the item's image embedding, what the
dual encoder learned) and a text score (MiniLM embedding of the query vs. MiniLM embedding of the item's own
description: title + attribute caption + season). `score = (1 - text_weight) * visual + text_weight * text`,
`text_weight` defaulting to `DEFAULT_TEXT_WEIGHT` (chosen on the validation query file, see README). Image
search ranks by visual cosine alone. Filters restrict the candidate set inside the index search, so a filtered
query still returns k results whenever k items match.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from .data import ATTRIBUTES, attribute_caption, load_image
from .image_processing_dual_encoder import DualEncoderImageProcessor
from .index import CatalogIndex
from .text_encoder import SentenceEncoder


DEFAULT_TEXT_WEIGHT = 0.7
MAX_QUERY_CHARS = 500
# Fused text search scores every allowed item exactly up to this many; above it, candidates come from the top of
# the visual index and of the text matcher and only those are fused.
EXACT_FUSION_LIMIT = 200_000


class QueryError(ValueError):
    """A query the engine cannot run (empty or overlong text, unusable image); the message is for the user."""


@dataclass
class SearchResult:
    """One retrieved item; the same type for every mode, model and caller."""

    id: str
    title: str
    image_path: str
    rank: int
    score: float  # what the ranking used
    visual_score: float  # cosine of the query and item embeddings
    text_score: float | None = None  # cosine of query and item text (fused text search only)
    vsc: float | None = None  # visual-semantic consistency (filled by the VSC scorer, a later stage)
    attributes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def item_description(row: Mapping) -> str:
    """What the text matcher reads of an item: its title, attribute caption and season."""
    title = str(row.get("title") or "").strip()
    caption = str(row.get("attr_caption") or "").strip() or attribute_caption(row)
    season = str(row.get("season") or "").strip().lower()
    parts = [p for p in (title, caption) if p]
    text = ". ".join(parts)
    return f"{text}, {season}" if season else text


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the model's config and weights: an index records it and refuses another model."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _validate_text(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise QueryError("Type what you are looking for, e.g. 'red summer dress'.")
    query = " ".join(query.split())
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"The query is {len(query)} characters long; keep it under {MAX_QUERY_CHARS}.")
    return query


class FashionSearchEngine:
    """Encoders + index. Build with `load` (files) or the constructor (objects already in memory)."""

    def __init__(self, model, tokenizer, image_processor: DualEncoderImageProcessor, index: CatalogIndex,
                 sentence_encoder: SentenceEncoder | None = None, text_weight: float = DEFAULT_TEXT_WEIGHT,
                 model_name: str = "dual-encoder"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.index = index
        self.sentence_encoder = sentence_encoder
        self.text_weight = float(text_weight)
        self.model_name = model_name
        items = index.items
        self._ids = items["id"].astype(str).tolist()
        self._position = {item_id: i for i, item_id in enumerate(self._ids)}
        self._attributes = [c for c in ATTRIBUTES if c in items.columns]

    # -- loading -------------------------------------------------------------------------------------------------
    @staticmethod
    def load_model(model_dir: str | os.PathLike):
        model = AutoModel.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        processor = DualEncoderImageProcessor.from_pretrained(model_dir)
        return model, tokenizer, processor

    @classmethod
    def load(cls, model_dir: str | os.PathLike, index_dir: str | os.PathLike, *, catalog=None,
             text_encoder: str | None = "sentence-transformers/all-MiniLM-L6-v2", rebuild: bool = False,
             text_weight: float = DEFAULT_TEXT_WEIGHT) -> "FashionSearchEngine":
        """Load a model folder and its index; build the index from `catalog` when it is absent (or `rebuild`).

        An index built by another model is refused (`IndexMismatchError`) unless `rebuild` is set.
        """
        model, tokenizer, processor = cls.load_model(model_dir)
        info = {"name": str(model_dir), "fingerprint": model_fingerprint(model),
                "embedding_dim": int(model.config.projection_dim)}
        encoder = SentenceEncoder(text_encoder) if text_encoder else None
        index_dir = Path(index_dir)
        if rebuild or not (index_dir / "manifest.json").exists():
            if catalog is None:
                raise FileNotFoundError(f"no index at {index_dir} and no catalog given to build one")
            from .data import load_catalog

            dataset = load_catalog(catalog) if isinstance(catalog, (str, os.PathLike)) else catalog
            index = build_index(model, tokenizer, processor, dataset, model_info=info, sentence_encoder=encoder)
            index.save(index_dir)
        else:
            index = CatalogIndex.load(index_dir, expected_model=info)
        return cls(model, tokenizer, processor, index, encoder, text_weight=text_weight,
                   model_name=Path(model_dir).name)

    # -- encoding ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return encode_texts(self.model, self.tokenizer, texts)

    @torch.inference_mode()
    def encode_images(self, images: Sequence) -> np.ndarray:
        return encode_images(self.model, self.image_processor, [load_image(image) for image in images])

    # -- search --------------------------------------------------------------------------------------------------
    def allowed_mask(self, filters: Mapping | None = None, exclude_ids: Iterable[str] | None = None):
        """Boolean mask of searchable items (None when everything is allowed)."""
        try:
            mask = self.index.mask(dict(filters) if filters else None)
        except ValueError:  # an unknown key: name only the filters a user can set
            raise QueryError(f"Unknown filter in {sorted(filters)}; use one of {list(self._attributes)}.") from None
        excluded = [self._position[i] for i in (exclude_ids or ()) if str(i) in self._position]
        if excluded:
            mask = np.ones(len(self._ids), dtype=bool) if mask is None else mask.copy()
            mask[excluded] = False
        return mask

    def search_text(self, query: str, k: int = 10, filters: Mapping | None = None,
                    text_weight: float | None = None) -> list[SearchResult]:
        """Text -> products. Fused with the item-text match when the index holds item texts."""
        query = _validate_text(query)
        mask = self.allowed_mask(filters)
        weight = self.text_weight if text_weight is None else float(text_weight)
        visual_query = self.encode_texts([query])[0]
        text_query = None
        if weight > 0 and self.index.text_embeddings is not None and self.sentence_encoder is not None:
            text_query = self.sentence_encoder.encode([query])[0]
        return self._rank(visual_query, text_query, weight, k, mask)

    def search_image(self, image, k: int = 10, filters: Mapping | None = None,
                     exclude_ids: Iterable[str] | None = None) -> list[SearchResult]:
        """Image (path, bytes, PIL or array) -> visually similar products, by visual cosine."""
        query = self.encode_images([image])[0]
        return self._rank(query, None, 0.0, k, self.allowed_mask(filters, exclude_ids))

    def search_item(self, item_id: str, k: int = 10, filters: Mapping | None = None) -> list[SearchResult]:
        """More like this catalog item (itself excluded), from its indexed embedding."""
        if str(item_id) not in self._position:
            raise QueryError(f"No item with id {item_id!r} in this catalog.")
        query = self.index.vectors.reconstruct(self._position[str(item_id)])
        return self._rank(query, None, 0.0, k, self.allowed_mask(filters, [str(item_id)]))

    def _rank(self, visual_query: np.ndarray, text_query: np.ndarray | None, weight: float, k: int,
              mask: np.ndarray | None) -> list[SearchResult]:
        k = int(k)
        if k < 1:
            raise QueryError("k must be at least 1.")
        if mask is not None and not mask.any():
            return []
        if text_query is None:
            scores, positions = self.index.search(visual_query[None], k, allowed=mask)
            pairs = [(p, s, s, None) for p, s in zip(positions[0], scores[0]) if p >= 0]
            return self._results(pairs)
        candidates = self._fusion_candidates(visual_query, text_query, k, mask)
        visual = self._visual_scores(visual_query, candidates)
        text = self.index.text_embeddings[candidates] @ text_query
        fused = (1.0 - weight) * visual + weight * text
        top = np.lexsort((candidates, -fused))[:k]  # ties broken by catalog order, deterministic
        return self._results([(candidates[i], fused[i], visual[i], text[i]) for i in top])

    def _fusion_candidates(self, visual_query, text_query, k, mask) -> np.ndarray:
        n = len(self._ids)
        if n <= EXACT_FUSION_LIMIT:
            return np.flatnonzero(mask) if mask is not None else np.arange(n)
        depth = max(20 * k, 500)
        _, visual_top = self.index.search(visual_query[None], depth, allowed=mask)
        text_scores = self.index.text_embeddings @ text_query
        if mask is not None:
            text_scores = np.where(mask, text_scores, -np.inf)
        text_top = np.argpartition(-text_scores, min(depth, n - 1))[:depth]
        text_top = text_top[np.isfinite(text_scores[text_top])]
        return np.union1d(visual_top[0][visual_top[0] >= 0], text_top)

    def _visual_scores(self, query: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self.index.vectors.reconstruct_batch(positions) @ query

    def _results(self, pairs) -> list[SearchResult]:
        items = self.index.items
        results = []
        for rank, (position, score, visual, text) in enumerate(pairs, start=1):
            row = items.iloc[int(position)]
            results.append(SearchResult(
                id=str(row["id"]), title=str(row.get("title", "")), image_path=str(row.get("image_path", "")),
                rank=rank, score=float(score), visual_score=float(visual),
                text_score=None if text is None else float(text),
                attributes={a: str(row[a]) for a in self._attributes if str(row[a])},
            ))
        return results


# -- encoding helpers shared by the engine, the index builder and evaluate.py ---------------------------------------
@torch.inference_mode()
def encode_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Normalised text embeddings (N, D) of the model's text tower + projection."""
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="encoding texts", disable=not progress):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=64,
                          return_tensors="pt")
        feats = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        out.append(F.normalize(feats, dim=-1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


@torch.inference_mode()
def encode_images(model, processor, images: Sequence, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Normalised image embeddings (N, D); `images` are PIL images (any mode)."""
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="encoding images", disable=not progress):
        pixel_values = processor(list(images[start:start + batch_size]), return_tensors="pt")["pixel_values"]
        out.append(F.normalize(model.get_image_features(pixel_values), dim=-1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


def catalog_items(dataset) -> pd.DataFrame:
    """The metadata an index keeps per item: every column but the decoded image."""
    columns = [c for c in dataset.column_names if c != "image"]
    frame = dataset.select_columns(columns).to_pandas()
    return frame.fillna("").astype(str)


def build_index(model, tokenizer, processor, dataset, *, model_info: dict,
                sentence_encoder: SentenceEncoder | None = None, batch_size: int = 256) -> CatalogIndex:
    """Encode a catalog (images; item descriptions when a sentence encoder is given) and index it."""
    items = catalog_items(dataset)
    embeds = []
    column = dataset.select_columns(["image"])
    for start in tqdm(range(0, len(dataset), batch_size), desc="indexing images", unit="batch"):
        images = column[start:start + batch_size]["image"]
        embeds.append(encode_images(model, processor, images, batch_size=batch_size))
    embeddings = np.concatenate(embeds) if embeds else np.zeros((0, model_info["embedding_dim"]), np.float32)
    text_embeddings, text_info = None, None
    if sentence_encoder is not None:
        descriptions = [item_description(row) for row in items.to_dict("records")]
        text_embeddings = sentence_encoder.encode(descriptions, progress=True)
        text_info = {"name": sentence_encoder.name, "embedding_dim": sentence_encoder.dim,
                     "description": "title. attribute caption, season"}
    return CatalogIndex.build(embeddings, items, model_info=model_info, text_embeddings=text_embeddings,
                              text_encoder_info=text_info)


__all__ = ["FashionSearchEngine", "SearchResult", "QueryError", "build_index", "encode_images", "encode_texts",
           "item_description", "model_fingerprint", "DEFAULT_TEXT_WEIGHT"]
