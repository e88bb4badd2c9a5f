"""The search engine: encoders + FAISS index (+ item-text matching) behind one class.

The app, evaluate.py and Python users all call `FashionSearchEngine`:

    engine = FashionSearchEngine.load("runs/dual-encoder", "runs/dual-encoder/index", catalog="../shared/data")
    engine.search_text("red summer dress", k=10, filters={"gender": "Women"})
    engine.search_image("photo.jpg", k=10, exclude_ids=["15970"])
    engine.item_rankings(depth=10)  # "more like this" of every item at once: index positions, ids in `engine.ids`

Text search fuses the visual score (cosine of the query text embedding and the item's image embedding, what the
dual encoder learned) with an item-text score: the cosine of MiniLM embeddings of the query and of the item's own
description (title + attribute caption + season), plus `lexical_weight` times the BM25 keyword match of the query
against that description, normalised to [0, 1] per query (`modeling/retrieval/common/lexical.py`).
`score = (1 - text_weight) * visual + text_weight * (text + lexical_weight * lexical)`, `text_weight` and
`lexical_weight` defaulting to `DEFAULT_TEXT_WEIGHT` and `DEFAULT_LEXICAL_WEIGHT` (chosen on the validation query
file, see README).

Image search ranks by visual cosine alone, optionally re-ranked by a second image model (hybrid search, e.g. VAE
latents: `(1 - rerank_weight) * visual + rerank_weight * rerank` over the top `rerank_depth` candidates). Composed
search (reference image or catalog item + modification text) composes the two into one query embedding (weighted
sum or the model's learned combiner), names what the catalog knows of the reference (or what the attribute heads
predict for an uploaded photo) in the text, and fuses with the item-text match (without keywords) like text search.
Filters restrict the candidate set inside the index search, so a filtered query still returns k results whenever k
items match. With a Qdrant collection (`store`, `load(..., vector_store="qdrant")`) the same rankings are computed
by the store (`modeling.retrieval.engine.store_ranker`); the engine keeps the local item table (docs/qdrant.md).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from modeling.data.catalog import ATTRIBUTES
from modeling.data.images import load_image
from modeling.data.text import item_description
from modeling.encoders.loading import encode_images, encode_texts, has_text_tower, load_model
from modeling.encoders.sentence import SentenceEncoder
from modeling.retrieval.engine.cache import EmbeddingCache
from modeling.retrieval.backends.faiss.index import CatalogIndex
from modeling.retrieval.common.lexical import BM25Index
from modeling.retrieval.common.types import (COMPOSED_CONTEXT, MAX_QUERY_CHARS, QueryError, SearchResult,  # noqa: F401
                                             composed_query_text, validate_text)
from modeling.retrieval.engine import exact_ranking
from modeling.retrieval.engine.index_ranker import (EXACT_FUSION_LIMIT, FUSION_CANDIDATE_DEPTH, Ranked,  # noqa: F401
                                                    Ranker, fuse)
from modeling.retrieval.engine.exact_ranking import DEFAULT_QUERY_EXPANSION, expand_queries, top_k_order
from modeling.retrieval.understanding.heads import IntentHeads
from modeling.retrieval.understanding.parser import QueryIntent
from modeling.retrieval.engine.loading import load_engine_parts
from modeling.retrieval.engine.rerank import VisualReranker
from modeling.retrieval.engine.signals import ITEM_CONSISTENCY_WEIGHTS, NEIGHBOURS, ConsistencyScorer, IntentScorer
from modeling.retrieval.engine.store_ranker import IntentTerms, PhotoConsistencyTerms, Scope, StoreRanker
from modeling.retrieval.engine.vsc import VSCScorer


if TYPE_CHECKING:
    from modeling.retrieval.backends.qdrant.store import QdrantConfig, QdrantStore

logger = logging.getLogger(__name__)

DEFAULT_TEXT_WEIGHT = 0.7
# Weight of the BM25 keyword match inside the item-text score. On the val query file P@10 rose from 0.567 (0) to
# 0.607 at 1.4, most of it by 0.4; on the test file's queries reworded with synonyms the catalog does not use
# ("tees", "sneakers", "purses", ...) 0.3-0.4 still helped and 1.4 cost a little, hence 0.4.
DEFAULT_LEXICAL_WEIGHT = 0.4
# Query-text embeddings kept in memory (per engine, least recently used dropped first).
TEXT_CACHE_SIZE = 4096
# Hybrid re-ranking: how many candidates of the primary model the re-ranker re-scores by default.
DEFAULT_RERANK_DEPTH = 100
# Image queries are expanded with their DEFAULT_QUERY_EXPANSION nearest items
# (modeling/retrieval/engine/exact_ranking.py).
# An uploaded reference photo's predicted attribute is named only when the head is at least this sure.
ATTRIBUTE_CONFIDENCE = 0.5
# Composed search boosts the reference's colour, at this share of a named colour's boost, unless the words change it.
KEPT_COLOUR_CONFIDENCE = 0.5


class FashionSearchEngine:
    """Encoders + index. Build with `load` (files) or the constructor (objects already in memory)."""

    def __init__(self, model, tokenizer, image_processor, index: CatalogIndex,
                 sentence_encoder: SentenceEncoder | None = None, text_weight: float = DEFAULT_TEXT_WEIGHT,
                 model_name: str = "dual-encoder", reranker: "VisualReranker | None" = None,
                 vsc: VSCScorer | None = None, lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
                 intent_heads: IntentHeads | None = None, store: "QdrantStore | None" = None):
        self.model = model.eval()
        self.vsc = vsc
        self.reranker = reranker
        self._records: list[dict] | None = None  # item metadata per position, built on first use
        self._text_cache = EmbeddingCache(TEXT_CACHE_SIZE)
        self._cache_lock = threading.Lock()  # lazily built state (the keyword index)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.index = index
        self.ranker = Ranker(index)
        # Query understanding (soft intent boosts, negations), "more like this" consistency and near-duplicate
        # collapsing, each switchable per engine (and per call where the method takes the argument).
        self.intents = IntentScorer(index.items, intent_heads)
        self.use_intents = True
        self.consistency = ConsistencyScorer(model, self._dense_vectors, index.items)
        self.item_consistency = dict(ITEM_CONSISTENCY_WEIGHTS)
        self.collapse_duplicates = True
        self.sentence_encoder = sentence_encoder
        self.text_weight = float(text_weight)
        if not float(lexical_weight) >= 0.0:
            raise ValueError(f"lexical_weight must be >= 0, got {lexical_weight}")
        self.lexical_weight = float(lexical_weight)
        self._lexical: BM25Index | None = None  # built from the item descriptions on the first fused query
        self.model_name = model_name
        items = index.items
        self._ids = tuple(items["id"].astype(str))
        self._position = {item_id: i for i, item_id in enumerate(self._ids)}
        self._attributes = [c for c in ATTRIBUTES if c in items.columns]
        if vsc is not None and len(vsc.descriptions) != len(self._ids):
            raise ValueError(f"the VSC scorer describes {len(vsc.descriptions)} items, the index {len(self._ids)}")
        if reranker is not None and tuple(reranker.ids) != self._ids:
            raise ValueError("the re-ranking index holds other items (or another order) than the main index; "
                             "rebuild it from the same catalog")
        # The vector store that ranks (None: the in-process index); the local index still holds the item table.
        self.store = store
        self.store_ranker = StoreRanker(store, self.ranker, self._ids) if store is not None else None

    # -- loading -------------------------------------------------------------------------------------------------
    load_model = staticmethod(load_model)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, index_dir: str | os.PathLike, *, catalog=None,
             text_encoder: str | None = "sentence-transformers/all-MiniLM-L6-v2", rebuild: bool = False,
             text_weight: float = DEFAULT_TEXT_WEIGHT, rerank_model: str | os.PathLike | None = None,
             rerank_index: str | os.PathLike | None = None, vsc_source: str | None = "title",
             sentence_encoder: SentenceEncoder | None = None,
             onnx_dir: str | os.PathLike | None = None,
             lexical_weight: float = DEFAULT_LEXICAL_WEIGHT, vector_store: str = "faiss",
             qdrant: "QdrantConfig | None" = None, qdrant_client=None) -> "FashionSearchEngine":
        """Load a model folder and its index; build the index from `catalog` when it is absent (or `rebuild`).

        An index built by another model is refused (`IndexMismatchError`) unless `rebuild` is set. With
        `rerank_model` (e.g. a VAE folder) image queries can be re-ranked by it (hybrid search); its index lives in
        `rerank_index` (default `<index_dir>/rerank`) and is built the same way.

        The sentence encoder (`text_encoder`) scores item texts for fused text search (text models) and VSC (every
        model, `vsc_source` "title" or "caption"; None turns VSC off); the item descriptions' embeddings are cached
        in the index folder. Pass an already loaded `sentence_encoder` to share one between engines.

        `catalog` may be a path or Hub id, a loaded dataset, or a function returning one (called only when needed).
        With `onnx_dir` (an export of this model by `modeling.hub.onnx_export`) a missing index is encoded with ONNX
        Runtime. An index whose items carry no usable image path (a pushed index, a Hub catalog with embedded images)
        takes its images from the catalog; embedded images are written once to `FASHION_IMAGE_CACHE`.
        `vector_store="qdrant"` ranks in the model's Qdrant collection that `qdrant` locates (`QdrantStore.open`
        raises what is wrong with it), through `qdrant_client` when given (engines sharing one local-mode folder).
        """
        parts = load_engine_parts(model_dir, index_dir, catalog=catalog, text_encoder=text_encoder, rebuild=rebuild,
                                  rerank_model=rerank_model, rerank_index=rerank_index, vsc_source=vsc_source,
                                  sentence_encoder=sentence_encoder, onnx_dir=onnx_dir,
                                  vector_store=vector_store, qdrant=qdrant, qdrant_client=qdrant_client)
        return cls(*parts.pop("args"), text_weight=text_weight, lexical_weight=lexical_weight, **parts)

    # -- encoding ------------------------------------------------------------------------------------------------
    @property
    def supports_text(self) -> bool:
        return self.tokenizer is not None and has_text_tower(self.model)

    def _require_text(self) -> None:
        if not self.supports_text:
            raise QueryError(f"The model '{self.model_name}' searches by image only; it has no text encoder.")

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self._require_text()
        return encode_texts(self.model, self.tokenizer, texts)

    @torch.inference_mode()
    def encode_images(self, images: Sequence) -> np.ndarray:
        return encode_images(self.model, self.image_processor, [load_image(image) for image in images])

    def prepare_text_queries(self, queries: Sequence[str]) -> None:
        """Encode the not yet cached queries of a batch together, one forward pass per encoder (batched serving):
        the `search_text` calls that follow find their embeddings in the cache. Invalid queries are skipped (their
        own call raises the `QueryError`)."""
        if not self.supports_text:
            return
        texts = []
        for query in queries:
            try:  # what `search_text` encodes: the query without negated words, misspellings corrected
                texts.append(self.intents.parser.parse(validate_text(query)).search_text if self.use_intents
                             else validate_text(query))
            except QueryError:
                continue
        texts = list(dict.fromkeys(texts))
        encoders = [("model", self.encode_texts)]
        if self.sentence_encoder is not None and self.index.text_embeddings is not None:
            encoders.append(("sentence", self.sentence_encoder.encode))
        for name, encode in encoders:
            missing = [t for t in texts if (name, t) not in self._text_cache]
            if missing:
                for text, vector in zip(missing, np.asarray(encode(missing))):
                    self._text_cache.put((name, text), vector)

    # -- catalog positions and exact batched rankings -------------------------------------------------------------
    @property
    def ids(self) -> tuple[str, ...]:
        """The items' ids in index order: `engine.ids[engine.position(item_id)] == item_id`."""
        return self._ids

    def position(self, item_id) -> int:
        """Index position of a catalog item (ids compare as strings); `QueryError` when it is not in this catalog."""
        position = self._position.get(str(item_id))
        if position is None:
            raise QueryError(f"No item with id {item_id!r} in this catalog.")
        return position

    def positions(self, item_ids: Iterable) -> np.ndarray:
        """Index positions (int64) of several items, e.g. `[r.id for r in results]`; `QueryError` for an unknown id."""
        return np.array([self.position(item_id) for item_id in item_ids], dtype=np.int64)

    def item_vectors(self, positions=None) -> np.ndarray:
        """The index's stored unit image vectors in index order (read-only), or those of the items at `positions`."""
        vectors = self._dense_vectors()
        return vectors if positions is None else vectors[np.asarray(positions, dtype=np.int64)]

    def item_queries(self, positions=None, expansion: int | None = None) -> np.ndarray:
        """The unit query vectors "more like this" ranks by, for the items at `positions` (default all): each
        item's stored vector expanded with its `expansion` nearest other items (default `DEFAULT_QUERY_EXPANSION`)."""
        return exact_ranking.item_queries(self._dense_vectors(), positions, self._expansion(expansion))

    def item_rankings(self, positions=None, depth: int = 10, expansion: int | None = None) -> np.ndarray:
        """Exact "more like this" for many catalog items at once (evaluations, batch jobs): `search_item` without
        filters, re-ranking, the consistency term or collapsing, ranked by brute force instead of an index search per
        item.

        Returns:
            `np.ndarray` of shape `(len(positions), min(depth, num_items - 1))`: index positions of each item's
            results (map them to ids with `ids`), best first, ties to catalog order, the item itself excluded.
        """
        if int(depth) < 1:
            raise QueryError("k must be at least 1.")
        return exact_ranking.item_rankings(self._dense_vectors(), positions, int(depth), self._expansion(expansion))

    def fused_scores(self, query: str, text_weight: float | None = None, lexical_weight: float | None = None,
                     intent: "QueryIntent | bool | None" = None) -> dict[str, np.ndarray | None]:
        """Every item's scores for a text `query` as `search_text` computes them without filters, in index order:
        `score` (what ranks), `visual`, `text` (item-text cosine), `lexical` (keyword match in [0, 1]) and `intent`
        (boosts and penalties); each None when the query does not use it."""
        understood = self._intent(query, intent)
        query, visual_query, text_query, weight, lexical = self._text_queries(
            understood.search_text if understood is not None else query, text_weight, lexical_weight)
        visual = self._dense_vectors() @ visual_query
        boosts = self.intents.scores(understood, np.arange(len(self._ids)))
        out = {"score": visual, "visual": visual, "text": None, "lexical": None, "intent": boosts}
        if text_query is not None:
            out["text"] = self.index.text_embeddings @ text_query
            out["lexical"] = None if lexical is None else lexical[1]
            out["score"] = self._fuse(visual, out["text"], weight, lexical)
        if boosts is not None:
            out["score"] = out["score"] + boosts
        return out

    # -- query understanding -----------------------------------------------------------------------------------------
    def understand(self, query: str, learned: bool = True) -> QueryIntent:
        """What the engine understands of a text query (`modeling.retrieval.understanding.parser`): the intents text
        search boosts, the negations it penalises, the free words; the learned heads fill in when some words matched
        nothing."""
        query = validate_text(query)
        parser = self.intents.parser
        parsed = parser.parse(query)
        if learned and parsed.free_words and parser.heads is not None and self.sentence_encoder is not None:
            embedding = self._cached("sentence", parsed.search_text, lambda q: self.sentence_encoder.encode([q])[0])
            parsed = parser.parse(query, embedding)
        return parsed

    def _intent(self, query: str, intent, learned: bool = True) -> QueryIntent | None:
        """`intent` as given (a `QueryIntent`), off (False, or None on an engine with `use_intents` off), or parsed."""
        if isinstance(intent, QueryIntent):
            return intent
        if intent is False or (intent is None and not self.use_intents):
            return None
        return self.understand(query, learned)

    def _intent_extra(self, intent: QueryIntent | None, weights=None):
        if not intent:
            return None
        return IntentTerms(self.intents, intent, weights)

    # -- search --------------------------------------------------------------------------------------------------
    def allowed_mask(self, filters: Mapping | None = None, exclude_ids: Iterable[str] | None = None):
        """Boolean mask of searchable items (None when everything is allowed)."""
        try:
            mask = self.index.mask(dict(filters) if filters else None)
        except ValueError:  # an unknown key: name only the filters a user can set
            raise QueryError(f"Unknown filter in {sorted(filters)}; use one of {list(self._attributes)}.") from None
        excluded = [self._position[str(i)] for i in (exclude_ids or ()) if str(i) in self._position]
        if excluded:
            mask = np.ones(len(self._ids), dtype=bool) if mask is None else mask.copy()
            mask[excluded] = False
        return mask

    def _scope(self, filters: Mapping | None = None, exclude_ids: Iterable[str] | None = None) -> Scope:
        excluded = tuple(str(i) for i in (exclude_ids or ()))
        return Scope(self.allowed_mask(filters, excluded), dict(filters) if filters else None, excluded)

    def search_text(self, query: str, k: int = 10, filters: Mapping | None = None,
                    text_weight: float | None = None, lexical_weight: float | None = None, *,
                    intent: "QueryIntent | bool | None" = None, collapse: bool | None = None) -> list[SearchResult]:
        """Text -> products. Fused with the item-text match (dense + keywords) when the index holds item texts;
        `text_weight` / `lexical_weight` override the engine's for this query. The query's understood intents
        (`understand`; pass your own `QueryIntent`, e.g. with chips removed, or False for none) boost the items
        they describe and its negations sink the ones they rule out; the encoders see the query without its negated
        words. Near-duplicates collapse into one result (`collapse`, default the engine's `collapse_duplicates`)."""
        understood = self._intent(query, intent)
        encoded = understood.search_text if understood is not None else query  # negated words out, spelling fixed
        query, visual_query, text_query, weight, lexical = self._text_queries(encoded, text_weight, lexical_weight,
                                                                              self.store is None)
        return self._with_vsc(self._rank(visual_query, text_query, weight, k, self._scope(filters), lexical,
                                         self._intent_extra(understood), collapse, query_text=query), query)

    def search_image(self, image, k: int = 10, filters: Mapping | None = None,
                     exclude_ids: Iterable[str] | None = None, rerank_weight: float = 0.0,
                     rerank_depth: int = DEFAULT_RERANK_DEPTH, expansion: int | None = None,
                     consistency: Mapping[str, float] | None = None, collapse: bool | None = None
                     ) -> list[SearchResult]:
        """Image (path, bytes, PIL or array) -> visually similar products, by visual cosine to the query expanded
        with its `expansion` nearest allowed items (default `DEFAULT_QUERY_EXPANSION`, 0 = the photo alone), plus
        the attribute heads' colour and type agreement (`consistency` weights, default the engine's; {} = off); with
        `rerank_weight > 0` the top `rerank_depth` are re-scored with the re-ranking model (hybrid search)."""
        image = load_image(image)
        scope = self._scope(filters, exclude_ids)
        photo = self.encode_images([image])[0]
        near_scores, near, _ = self._nearest(photo, NEIGHBOURS, scope)
        results = self._rank(self._expand(photo, expansion, scope), None, 0.0,
                             self._depth(k, rerank_weight, rerank_depth), scope,
                             extra=PhotoConsistencyTerms(self.consistency, photo, consistency, near, near_scores),
                             collapse=collapse)
        results = self._with_visual_cosine(results, photo)
        if rerank_weight > 0:
            results = self._rerank(results, self._reranker().encode_images([image])[0], rerank_weight, k)
        return results[:k]  # an uploaded image has no description: VSC stays None

    def search_item(self, item_id: str, k: int = 10, filters: Mapping | None = None, rerank_weight: float = 0.0,
                    rerank_depth: int = DEFAULT_RERANK_DEPTH, expansion: int | None = None,
                    consistency: Mapping[str, float] | None = None, collapse: bool | None = None
                    ) -> list[SearchResult]:
        """More like this catalog item (itself excluded), from its indexed embedding (expansion and hybrid as
        `search_image`), favouring items that share its catalog colour and type (`consistency` weights, default
        the engine's `item_consistency`; {} = off)."""
        position = self.position(item_id)
        scope = self._scope(filters, [str(item_id)])
        own = self._item_vector(position)
        weights = self.item_consistency if consistency is None else dict(consistency)
        same = QueryIntent("", "", IntentScorer.reference(self.index.items.iloc[position].to_dict(),
                                                          attributes=[a for a, w in weights.items() if w]))
        results = self._rank(self._expand(own, expansion, scope), None, 0.0,
                             self._depth(k, rerank_weight, rerank_depth), scope,
                             extra=self._intent_extra(same, weights), collapse=collapse)
        results = self._with_visual_cosine(results, own)
        if rerank_weight > 0:
            results = self._rerank(results, self._reranker().index.vectors.reconstruct(position), rerank_weight, k)
        # The item's own description: its VSC embedding is already in the scorer.
        return self._with_vsc(results[:k], self.vsc.item_description(position) if self.vsc else None,
                              self.vsc.embeddings[position] if self.vsc else None)

    def search_composed(self, image=None, text: str = "", k: int = 10, filters: Mapping | None = None,
                        text_weight: float | None = None, *, item_id: str | None = None, method: str | None = None,
                        item_text_weight: float | None = None, use_reference_attributes: bool = True,
                        exclude_ids: Iterable[str] | None = None, intent: bool | None = None,
                        collapse: bool | None = None) -> list[SearchResult]:
        """Reference (an uploaded `image` or a catalog `item_id`) + modification `text` -> target products.

        Args:
            text_weight: text influence of the weighted-sum composition (0 = the image alone, 1 = the text alone);
                default the model's `composition_text_weight`. Ignored by the learned combiner.
            method: `"sum"` or `"combiner"`; default the combiner when the model has a trained one.
            item_text_weight: fusion weight of the item-text match (as `search_text`'s `text_weight`).
            use_reference_attributes: name the reference's type and gender in the text: the catalog's values for
                an `item_id`, the attribute heads' confident predictions for an uploaded image.
            intent: boost what the modification asks for ("in navy", "not black") and, where it does not change
                them, the reference's type and gender (default the engine's `use_intents`).
        The reference item itself (and `exclude_ids`) never comes back.
        """
        text = validate_text(text)
        self._require_text()
        excluded = [str(i) for i in (exclude_ids or ())]
        position = None
        if item_id is not None:
            position = self.position(item_id)
            image_embeds = self._item_vector(position)
            reference = self.index.items.iloc[position].to_dict()
            excluded.append(str(item_id))
        elif image is not None:
            image_embeds = self.encode_images([image])[0]
            reference = self.predict_attributes(image_embeds)
        else:
            raise QueryError("Give a reference photo (or a catalog item) to modify.")
        asked = self._intent(text, None if intent is None else bool(intent), learned=False)  # the type is known
        if asked is not None:  # the modification's own words win over the reference's values ("same but for men")
            asked = asked.narrowed_to(reference)  # ... unless they only say it more broadly ("same shoe in grey")
            reference = {a: v for a, v in reference.items() if asked.get(a) is None}
            text = asked.search_text
            sure = 1.0 if item_id is not None else ATTRIBUTE_CONFIDENCE
            # What the words do not change stays: type and gender, and (less surely: "is darker" names no colour)
            # the reference's colour.
            kept = IntentScorer.reference(reference, sure, attributes=COMPOSED_CONTEXT) + IntentScorer.reference(
                reference, sure * KEPT_COLOUR_CONFIDENCE, attributes=["baseColour"])
            asked = QueryIntent(asked.query, asked.search_text, asked.intents + kept, asked.negations, asked.free_words)
        query_text = composed_query_text(text, reference if use_reference_attributes else None)
        if text_weight is not None and not 0.0 <= float(text_weight) <= 1.0:
            raise QueryError(f"The text weight must be between 0 and 1, got {text_weight}.")
        try:
            with torch.inference_mode():
                composed = self.model.get_composed_features(
                    image_embeds=torch.from_numpy(np.asarray(image_embeds, np.float32))[None],
                    text_embeds=torch.tensor(
                        self._cached("model", query_text, lambda q: self.encode_texts([q])[0]))[None],
                    method=method, text_weight=text_weight)
        except ValueError as error:  # an unknown method, or a combiner the model does not have
            raise QueryError(str(error)) from None
        visual_query = F.normalize(composed, dim=-1)[0].float().numpy()
        weight = self._fusion_weight(item_text_weight)
        results = self._rank(visual_query, self._item_text_query(query_text, weight), weight, k,
                             self._scope(filters, excluded), extra=self._intent_extra(asked), collapse=collapse)
        return self._with_vsc(results, self.describe_composed(text, position))

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

    # -- VSC -------------------------------------------------------------------------------------------------------
    def describe_composed(self, modification: str, position: int | None = None) -> str | None:
        """A composed query's description for VSC (see modeling/retrieval/engine/vsc.py); `position` of a catalog
        reference."""
        return self.vsc.composed_description(modification, position) if self.vsc else None

    def _with_vsc(self, results: list[SearchResult], description: str | None,
                  embedding: np.ndarray | None = None) -> list[SearchResult]:
        """Fill each result's VSC against the query's description (left None when there is none)."""
        if self.vsc is None or not description or not results:
            return results
        # Same encoder and cache key as the fused item-text score when the engine's sentence encoder is VSC's.
        key = "sentence" if self.vsc.encoder is self.sentence_encoder else "vsc"
        query = embedding if embedding is not None else self._cached(key, description,
                                                                     lambda q: self.vsc.encode([q])[0])
        scores = self.vsc.scores(query, [self._position[r.id] for r in results])
        for result, score in zip(results, scores):
            result.vsc = float(score)
        return results

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _text_queries(self, query: str, text_weight: float | None, lexical_weight: float | None,
                      keyword_scores: bool = True):
        """(query, model query embedding, item-text query or None, fusion weight, (keyword weight, per-item keyword
        scores, None without `keyword_scores`: a store scores keywords itself) or None) of a text query, as
        `search_text` and `fused_scores` fuse them."""
        query = validate_text(query)
        self._require_text()
        weight = self._fusion_weight(text_weight)
        lexical_weight = self.lexical_weight if lexical_weight is None else float(lexical_weight)
        if not lexical_weight >= 0.0:
            raise QueryError(f"The keyword weight must be 0 or more, got {lexical_weight}.")
        visual_query = self._cached("model", query, lambda q: self.encode_texts([q])[0])
        text_query = self._item_text_query(query, weight)
        lexical = None
        if text_query is not None and lexical_weight > 0:
            lexical = (lexical_weight, self._lexical_index().normalised_scores(query) if keyword_scores else None)
        return query, visual_query, text_query, weight, lexical

    _fuse = staticmethod(fuse)

    def _fusion_weight(self, text_weight: float | None) -> float:
        weight = self.text_weight if text_weight is None else float(text_weight)
        if not 0.0 <= weight <= 1.0:
            raise QueryError(f"The text weight must be between 0 and 1, got {weight}.")
        return weight

    def _item_text_query(self, query: str, weight: float) -> np.ndarray | None:
        if weight > 0 and self.index.text_embeddings is not None and self.sentence_encoder is not None:
            return self._cached("sentence", query, lambda q: self.sentence_encoder.encode([q])[0])
        return None

    def _lexical_index(self) -> BM25Index:
        with self._cache_lock:
            if self._lexical is None:
                self._lexical = BM25Index([item_description(row) for row in self.index.items.to_dict("records")])
            return self._lexical

    def _cached(self, encoder: str, text: str, encode) -> np.ndarray:
        """Query-text embeddings, memoised (`EmbeddingCache`)."""
        return self._text_cache.get((encoder, text), lambda: encode(text))

    @staticmethod
    def _expansion(expansion: int | None) -> int:
        n = DEFAULT_QUERY_EXPANSION if expansion is None else int(expansion)
        if n < 0:
            raise QueryError(f"The query expansion must be 0 or more neighbours, got {expansion}.")
        return n

    def _expand(self, query: np.ndarray, expansion: int | None, scope: Scope) -> np.ndarray:
        """The unit image query expanded with its nearest allowed items (`expand_queries`)."""
        n = self._expansion(expansion)
        scores, positions, neighbours = self._nearest(query, n, scope)
        if len(positions) == 0:
            return query
        return expand_queries(query[None], neighbours[None], scores[None])[0]

    def _nearest(self, query: np.ndarray, n: int, scope: Scope) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `n` nearest allowed items of a unit image query: (cosines, positions, their vectors)."""
        if self.store_ranker is not None:
            return self.store_ranker.nearest(query, n, scope)
        if n < 1 or scope.empty:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, len(query)), np.float32)
        scores, positions = self.index.search(query[None], n, allowed=scope.mask)
        found = positions[0] >= 0
        return (scores[0][found], positions[0][found], self.index.vectors.reconstruct_batch(positions[0][found])
                if found.any() else np.zeros((0, len(query)), np.float32))

    def _item_vector(self, position: int) -> np.ndarray:
        """A catalog item's stored image vector, from the store that ranks."""
        if self.store_ranker is not None:
            return self.store_ranker.vector(self._ids[position])
        return self.index.vectors.reconstruct(position)

    def _with_visual_cosine(self, results: list[SearchResult], query: np.ndarray) -> list[SearchResult]:
        """`visual_score` = cosine to the query photo itself (what the UI shows); `score` keeps the expanded
        query's cosine that ranked them."""
        if not results:
            return results
        cosines = self.index.vectors.reconstruct_batch(np.array([self._position[r.id] for r in results])) @ query
        return [replace(r, visual_score=float(c)) for r, c in zip(results, cosines)]

    def _reranker(self) -> "VisualReranker":
        if self.reranker is None:
            raise QueryError("Hybrid re-ranking needs a re-ranking model (e.g. the VAE); none is loaded.")
        return self.reranker

    @staticmethod
    def _depth(k: int, rerank_weight: float, rerank_depth: int) -> int:
        if not 0.0 <= float(rerank_weight) <= 1.0:
            raise QueryError(f"The re-ranking weight must be between 0 and 1, got {rerank_weight}.")
        return max(int(k), int(rerank_depth)) if rerank_weight > 0 else int(k)

    def _rerank(self, results: list[SearchResult], query: np.ndarray, weight: float, k: int) -> list[SearchResult]:
        """Hybrid: re-score candidates by `(1 - weight) * score + weight * rerank cosine`."""
        return self.reranker.rerank(results, np.array([self._position[r.id] for r in results]), query, weight, k)

    def _rank(self, visual_query: np.ndarray, text_query: np.ndarray | None, weight: float, k: int,
              scope: Scope | np.ndarray | None, lexical: tuple[float, np.ndarray | None] | None = None, extra=None,
              collapse: bool | None = None, query_text: str | None = None) -> list[SearchResult]:
        """Top `k` by visual cosine alone (no `text_query`) or fused with the item-text score (keywords of
        `query_text`), plus `extra` scores, near-duplicates collapsed unless `collapse` (default
        `collapse_duplicates`) is off: `Ranker.rank` in process, `StoreRanker.rank` with a store."""
        k = int(k)
        if k < 1:
            raise QueryError("k must be at least 1.")
        collapse = self.collapse_duplicates if collapse is None else bool(collapse)
        scope = scope if isinstance(scope, Scope) else Scope(scope)
        if self.store_ranker is not None:
            return self._results(self.store_ranker.rank(visual_query, k, scope, text_query, weight, query_text,
                                                        lexical[0] if lexical else 0.0, extra, collapse))
        return self._results(self.ranker.rank(visual_query, k, scope.mask, text_query, weight, lexical, extra,
                                              collapse))

    def _dense_vectors(self) -> np.ndarray:
        return self.ranker.dense_vectors()

    def _results(self, ranked: list[Ranked]) -> list[SearchResult]:
        if self._records is None:  # plain dicts: a pandas row lookup per result costs more than the search
            columns = [c for c in ("id", "title", "image_path", *self._attributes) if c in self.index.items]
            self._records = self.index.items[columns].to_dict("records")
        results = []
        for rank, row_ranked in enumerate(ranked, start=1):
            row = self._records[row_ranked.position]
            results.append(SearchResult(
                id=str(row["id"]), title=str(row.get("title", "")), image_path=str(row.get("image_path", "")),
                rank=rank, score=row_ranked.score, visual_score=row_ranked.visual, text_score=row_ranked.text,
                lexical_score=row_ranked.lexical, attributes={a: str(row[a]) for a in self._attributes if str(row[a])},
                duplicates=[self._ids[m] for m in row_ranked.duplicates],
            ))
        return results


__all__ = ["FashionSearchEngine", "SearchResult", "QueryError", "VisualReranker", "composed_query_text",
           "expand_queries", "top_k_order", "DEFAULT_LEXICAL_WEIGHT", "DEFAULT_QUERY_EXPANSION", "DEFAULT_TEXT_WEIGHT"]
