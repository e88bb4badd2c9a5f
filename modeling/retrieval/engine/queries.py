"""Text queries as the engine fuses them: what the engine understands of a query (intents, negations, the learned
heads), its embeddings and weights (`TextQuery`), the keyword match (one BM25 index per engine), and the batch
preparation of batched serving."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from modeling.data.text import item_description
from modeling.retrieval.common.lexical import BM25Index
from modeling.retrieval.common.types import QueryError, validate_text
from modeling.retrieval.engine.encoding import QueryEncoder
from modeling.retrieval.engine.settings import EngineSettings
from modeling.retrieval.engine.signals import IntentScorer
from modeling.retrieval.understanding.parser import QueryIntent


class TextQuery(NamedTuple):
    """A text query as fusion reads it: the text, its model and item-text embeddings, the weights."""

    query: str
    visual: np.ndarray
    text: np.ndarray | None
    weight: float
    lexical_weight: float


class TextQueries:
    """Understanding and encoding of an engine's text queries; `settings` returns the engine's current settings."""

    def __init__(self, encoder: QueryEncoder, intents: IntentScorer, index, settings: Callable[[], EngineSettings]):
        self.encoder, self.intents, self.index, self.settings = encoder, intents, index, settings
        self._lexical: BM25Index | None = None  # built from the item descriptions on the first keyword query
        self._lock = threading.Lock()

    def understand(self, query: str, learned: bool = True) -> QueryIntent:
        """What the engine understands of a text query: intents, negations, free words; the learned heads fill in
        when some words matched nothing."""
        query = validate_text(query)
        parser = self.intents.parser
        parsed = parser.parse(query)
        if learned and parsed.free_words and parser.heads is not None and self.encoder.sentence_encoder is not None:
            parsed = parser.parse(query, self.encoder.sentence(parsed.search_text))
        return parsed

    def intent(self, query: str, intent, learned: bool = True) -> QueryIntent | None:
        """`intent` as given (a `QueryIntent`), off (False, or None with `use_intents` off), or parsed."""
        if isinstance(intent, QueryIntent):
            return intent
        if intent is False or (intent is None and not self.settings().use_intents):
            return None
        return self.understand(query, learned)

    def prepare(self, queries: Sequence[str]) -> None:
        """Encode the not yet cached queries of a batch together; invalid queries are skipped (their own search
        raises)."""
        if not self.encoder.supports_text:
            return
        texts = []
        for query in queries:
            try:  # what `search_text` encodes: the query without negated words, misspellings corrected
                texts.append(self.intents.parser.parse(validate_text(query)).search_text
                             if self.settings().use_intents else validate_text(query))
            except QueryError:
                continue
        self.encoder.prepare(texts, item_text=self.index.has_item_texts)

    def fusion_weight(self, text_weight: float | None) -> float:
        weight = self.settings().text_weight if text_weight is None else float(text_weight)
        if not 0.0 <= weight <= 1.0:
            raise QueryError(f"The text weight must be between 0 and 1, got {weight}.")
        return weight

    def item_text(self, query: str, weight: float) -> np.ndarray | None:
        """The item-text query embedding (None when the weight is 0 or the index holds no item texts)."""
        if weight > 0 and self.index.has_item_texts and self.encoder.sentence_encoder is not None:
            return self.encoder.sentence(query)
        return None

    def text_query(self, query: str, text_weight: float | None, lexical_weight: float | None) -> TextQuery:
        """A text query's embeddings and weights, as `search_text` and `batch.fused_scores` fuse them."""
        query = validate_text(query)
        self.encoder.require_text()
        weight = self.fusion_weight(text_weight)
        lexical_weight = self.settings().lexical_weight if lexical_weight is None else float(lexical_weight)
        if not lexical_weight >= 0.0:
            raise QueryError(f"The keyword weight must be 0 or more, got {lexical_weight}.")
        text = self.item_text(query, weight)
        return TextQuery(query, self.encoder.text(query), text, weight, lexical_weight if text is not None else 0.0)

    def keyword_scores(self, query_text: str) -> np.ndarray:
        """The BM25 match of a query text over every item, normalised to [0, 1]."""
        with self._lock:
            if self._lexical is None:
                self._lexical = BM25Index([item_description(row) for row in self.index.items.to_dict("records")])
        return self._lexical.normalised_scores(query_text)


__all__ = ["TextQueries", "TextQuery"]
