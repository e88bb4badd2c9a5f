"""Query encoding for the engine: the model's text and image towers, the sentence encoder of the item-text match,
and the memo of query-text embeddings (`EmbeddingCache`), with batch preparation for batched serving."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from modeling.data.images import load_image
from modeling.encoders.loading import encode_images, encode_texts, has_text_tower
from modeling.encoders.sentence import SentenceEncoder
from modeling.retrieval.common.types import QueryError
from modeling.retrieval.engine.cache import EmbeddingCache
from modeling.retrieval.engine.settings import ATTRIBUTE_CONFIDENCE, TEXT_CACHE_SIZE


class QueryEncoder:
    """Encoders of one engine and its query-text embeddings, memoised per encoder (`"model"`, `"sentence"`, ...)."""

    def __init__(self, model, tokenizer, image_processor, sentence_encoder: SentenceEncoder | None = None,
                 model_name: str = "dual-encoder", cache_size: int = TEXT_CACHE_SIZE):
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.sentence_encoder, self.model_name = sentence_encoder, model_name
        self.cache = EmbeddingCache(cache_size)

    @property
    def supports_text(self) -> bool:
        return self.tokenizer is not None and has_text_tower(self.model)

    def require_text(self) -> None:
        if not self.supports_text:
            raise QueryError(f"The model '{self.model_name}' searches by image only; it has no text encoder.")

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.require_text()
        return encode_texts(self.model, self.tokenizer, texts)

    @torch.inference_mode()
    def encode_images(self, images: Sequence) -> np.ndarray:
        return encode_images(self.model, self.image_processor, [load_image(image) for image in images])

    def cached(self, encoder: str, text: str, encode) -> np.ndarray:
        """Query-text embeddings, memoised (`EmbeddingCache`)."""
        return self.cache.get((encoder, text), lambda: encode(text))

    def text(self, query: str) -> np.ndarray:
        """The model's embedding of a query text."""
        return self.cached("model", query, lambda q: self.encode_texts([q])[0])

    def sentence(self, query: str) -> np.ndarray:
        """The sentence encoder's embedding of a query text (the item-text match, the learned intent heads)."""
        return self.cached("sentence", query, lambda q: self.sentence_encoder.encode([q])[0])

    def prepare(self, texts: Sequence[str], item_text: bool) -> None:
        """Encode the not yet cached `texts` together, one forward pass per encoder (with `item_text`, the sentence
        encoder's too): the searches that follow find their embeddings in the cache."""
        texts = list(dict.fromkeys(texts))
        encoders = [("model", self.encode_texts)]
        if item_text and self.sentence_encoder is not None:
            encoders.append(("sentence", self.sentence_encoder.encode))
        for name, encode in encoders:
            missing = [t for t in texts if (name, t) not in self.cache]
            if missing:
                for text, vector in zip(missing, np.asarray(encode(missing))):
                    self.cache.put((name, text), vector)

    def predict_attributes(self, image_embeds: np.ndarray, min_confidence: float = ATTRIBUTE_CONFIDENCE) -> dict:
        """Attributes the model's heads are sure of for an image embedding ({} for models without heads)."""
        predict = getattr(self.model, "predict_attributes", None)
        labels = getattr(self.model.config, "attribute_labels", None) or {}
        if predict is None or not labels:
            return {}
        with torch.inference_mode():
            probs = predict(torch.from_numpy(np.asarray(image_embeds, np.float32))[None])
        out = {}
        for name, p in probs.items():
            confidence, index = p[0].max(-1)
            if float(confidence) >= min_confidence:
                out[name] = labels[name][int(index)]
        return out


__all__ = ["QueryEncoder"]
