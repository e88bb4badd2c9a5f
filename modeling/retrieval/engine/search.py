"""The search engine: `FashionSearchEngine.load("runs/dual-encoder", "runs/dual-encoder/index", catalog=...)`,
then `search_text`, `search_image`, `search_item`, `search_composed`.

Text search: `(1 - text_weight) * visual + text_weight * (text + lexical_weight * keywords)` (item-text MiniLM
cosine, BM25 in [0, 1]); image search: visual cosine to the expanded photo (optionally hybrid re-ranked); composed:
one composed query embedding, fused like text. Intents, negations and "more like this" consistency are
backend-neutral `ScoreTerm`s; every query is one `RankRequest` to the engine's `VectorBackend` (FAISS in process by
default, Qdrant with `vector_store="qdrant"`); near-duplicates collapse here, after the backend. Settings:
`EngineSettings`; query encoding: `QueryEncoder`, `TextQueries`; evaluation helpers: `engine.batch`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from modeling.data.photos import Isolation
from modeling.encoders.sentence import SentenceEncoder
from modeling.retrieval.backends.faiss.index import CatalogIndex
from modeling.retrieval.backends.faiss.ranking import FaissBackend
from modeling.retrieval.common.ranking import LocalCatalog, RankRequest, Scope, VectorBackend
from modeling.retrieval.common.types import QueryError, SearchResult, composed_query_text, validate_text
from modeling.retrieval.engine.catalog import CatalogPositions
from modeling.retrieval.engine.composed import compose, keep_reference, reference_of
from modeling.retrieval.engine.cutouts import prepared_photo
from modeling.retrieval.engine.dedup import DuplicateGroups
from modeling.retrieval.engine.encoding import QueryEncoder
from modeling.retrieval.engine.exact_ranking import DEFAULT_QUERY_EXPANSION, expand_queries, query_expansion
from modeling.retrieval.engine.exact_ranking import top_k_order  # noqa: F401 - re-exported
from modeling.retrieval.engine.loading import load_engine_parts
from modeling.retrieval.engine.photo_fusion import DEFAULT_PHOTO_MODEL, PhotoFusion, neighbour_values
from modeling.retrieval.engine.queries import TextQueries
from modeling.retrieval.engine.rerank import VisualReranker
from modeling.retrieval.engine.rerank import rerank_depth as hybrid_depth
from modeling.retrieval.engine.results import ResultTable, with_visual_cosine, with_vsc
from modeling.retrieval.engine.settings import (ATTRIBUTE_CONFIDENCE, DEFAULT_LEXICAL_WEIGHT,  # noqa: F401
                                                DEFAULT_RERANK_DEPTH, DEFAULT_TEXT_WEIGHT, EngineSettings)
from modeling.retrieval.engine.signals import NEIGHBOUR_TEMPERATURE, NEIGHBOURS, ConsistencyScorer, IntentScorer
from modeling.retrieval.engine.vsc import VSCScorer
from modeling.retrieval.understanding.heads import IntentHeads
from modeling.retrieval.understanding.parser import QueryIntent

if TYPE_CHECKING:
    from modeling.retrieval.backends.qdrant.store import QdrantConfig


class FashionSearchEngine:
    """Encoders + index + backend. Build with `load` (files) or the constructor (objects already in memory);
    `settings` (default `EngineSettings()`; `text_weight` / `lexical_weight` override its fields)."""

    def __init__(self, model, tokenizer, image_processor, index: CatalogIndex,
                 sentence_encoder: SentenceEncoder | None = None, text_weight: float | None = None,
                 model_name: str = "dual-encoder", reranker: "VisualReranker | None" = None,
                 vsc: VSCScorer | None = None, lexical_weight: float | None = None,
                 intent_heads: IntentHeads | None = None,
                 backend: "Callable[[LocalCatalog], VectorBackend] | None" = None,
                 settings: EngineSettings | None = None, photo_fusion: PhotoFusion | None = None,
                 parser_vocabulary: Mapping | None = None):
        given = {"text_weight": text_weight, "lexical_weight": lexical_weight}
        self.settings = replace(settings or EngineSettings(), **{k: v for k, v in given.items() if v is not None})
        self.model, self.tokenizer, self.image_processor = model.eval(), tokenizer, image_processor
        self.index, self.sentence_encoder, self.model_name = index, sentence_encoder, model_name
        self.vsc, self.reranker, self.photo_fusion = vsc, reranker, photo_fusion
        self.encoder = QueryEncoder(model, tokenizer, image_processor, sentence_encoder, model_name)
        self.catalog = catalog = CatalogPositions(index)
        # Delegated as they are: the encoder's and the catalog's public methods.
        self.encode_texts, self.encode_images = self.encoder.encode_texts, self.encoder.encode_images
        self.predict_attributes = self.encoder.predict_attributes
        self.position, self.positions, self.allowed_mask = catalog.position, catalog.positions, catalog.allowed_mask
        self._ids, self._position = catalog.ids, catalog.map
        catalog.check(vsc, reranker)
        catalog.check(reranker=photo_fusion)
        values = index.items if index.items is not None else index.catalog_values  # a `StoreCatalog`: no item table
        self.intents = IntentScorer(values, intent_heads, vocabulary=parser_vocabulary)
        self.queries = TextQueries(self.encoder, self.intents, index, lambda: self.settings)
        local = LocalCatalog(index, self._ids, self._position, self.queries.keyword_scores)
        # A local index (its vectors) serves whatever backend ranks; served from a collection alone (`index` a
        # `StoreCatalog`, modeling/retrieval/engine/stored.py) there is none: vectors come from the backend.
        self._local = FaissBackend(local) if index.vectors is not None else None
        self.backend: VectorBackend = self._local if backend is None else backend(local)
        dense = self._local.dense_vectors if self._local is not None else _no_local_vectors
        self.consistency = ConsistencyScorer(model, dense, values, self.settings.image_consistency)
        self.duplicates = DuplicateGroups(index.items, dense, source=index if index.items is None else None)
        self._table = ResultTable(catalog.attributes, self._ids, catalog.rows)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, index_dir: str | os.PathLike, *, catalog=None,
             text_encoder: str | None = "sentence-transformers/all-MiniLM-L6-v2", rebuild: bool = False,
             text_weight: float | None = None, rerank_model: str | os.PathLike | None = None,
             rerank_index: str | os.PathLike | None = None, vsc_source: str | None = "title",
             sentence_encoder: SentenceEncoder | None = None, onnx_dir: str | os.PathLike | None = None,
             lexical_weight: float | None = None, vector_store: str = "faiss",
             qdrant: "QdrantConfig | None" = None, qdrant_client=None,
             settings: EngineSettings | None = None, photo_model: str | os.PathLike | None = None,
             photo_index: str | os.PathLike | None = None) -> "FashionSearchEngine":
        """Load a model folder and its index (built from `catalog` when absent, or `rebuild`): the parameters are
        `modeling.retrieval.engine.loading.load_engine_parts`'s; `vector_store` names a backend of
        `modeling.retrieval.backends.registry` (`qdrant`: the collection `qdrant` locates, through
        `qdrant_client` when given); `photo_model` (e.g. `DEFAULT_PHOTO_MODEL`) a second encoder for photo
        queries, its index at `photo_index` (default `<index_dir>/photo`, built when absent)."""
        parts = load_engine_parts(model_dir, index_dir, catalog=catalog, text_encoder=text_encoder, rebuild=rebuild,
                                  rerank_model=rerank_model, rerank_index=rerank_index, vsc_source=vsc_source,
                                  sentence_encoder=sentence_encoder, onnx_dir=onnx_dir,
                                  vector_store=vector_store, qdrant=qdrant, qdrant_client=qdrant_client,
                                  photo_model=photo_model, photo_index=photo_index)
        return cls(*parts.pop("args"), text_weight=text_weight, lexical_weight=lexical_weight, settings=settings,
                   **parts)

    text_weight = property(lambda self: self.settings.text_weight)
    lexical_weight = property(lambda self: self.settings.lexical_weight)
    use_intents = property(lambda self: self.settings.use_intents)
    supports_text = property(lambda self: self.encoder.supports_text)
    ids = property(lambda self: self._ids, doc="The items' ids in index order.")

    def prepare_text_queries(self, queries: Sequence[str]) -> None:
        """Encode the not yet cached queries of a batch together (batched serving; `TextQueries.prepare`)."""
        self.queries.prepare(queries)

    def understand(self, query: str, learned: bool = True):
        """What the engine understands of a text query (`TextQueries.understand`)."""
        return self.queries.understand(query, learned)

    def item_vectors(self, positions=None) -> np.ndarray:
        """The index's stored unit image vectors in index order (read-only), or those of the items at `positions`
        (the backend's, one request, when the engine serves from a collection alone)."""
        if self._local is None:
            return self.backend.vectors(_no_local_vectors() if positions is None else positions)
        vectors = self._local.dense_vectors()
        return vectors if positions is None else vectors[np.asarray(positions, dtype=np.int64)]

    def search_text(self, query: str, k: int = 10, filters: Mapping | None = None,
                    text_weight: float | None = None, lexical_weight: float | None = None, *,
                    intent: "QueryIntent | bool | None" = None, collapse: bool | None = None) -> list[SearchResult]:
        """Text -> products, fused with the item-text match (dense + keywords) when the index holds item texts; the
        query's intents (`understand`, or your own `QueryIntent`, or False) boost and its negations sink items;
        near-duplicates collapse unless `collapse` is off (default the settings')."""
        understood = self.queries.intent(query, intent)
        query = self.queries.text_query(understood.search_text if understood is not None else query, text_weight,
                                        lexical_weight)
        terms = {"terms": tuple(self.intents.terms(understood))} if understood else None
        lexical = (query.lexical_weight, query.query) if query.lexical_weight > 0 else None
        results = self._rank(query.visual, query.text, query.weight, k, self.catalog.scope(filters), lexical, terms,
                             collapse)
        return self._with_vsc(results, query.query)

    def search_image(self, image, k: int = 10, filters: Mapping | None = None,
                     exclude_ids: Iterable[str] | None = None, rerank_weight: float = 0.0,
                     rerank_depth: int = DEFAULT_RERANK_DEPTH, expansion: int | None = None,
                     consistency: Mapping[str, float] | None = None, collapse: bool | None = None,
                     box=None) -> list[SearchResult]:
        """Image (path, bytes, PIL, array or a `prepare_photo` result) -> visually similar products: visual cosine to
        the photo (its product: `prepare_photo`, inside `box` when given) expanded with its `expansion` nearest
        allowed items, plus its colour and type agreement (`consistency` weights, default the settings'; {} = off);
        with `rerank_weight > 0` the top `rerank_depth` re-scored (hybrid search)."""
        scope = self.catalog.scope(filters, exclude_ids)
        image = self.prepare_photo(image, box, scope).image
        photo = self.encode_images([image])[0]
        second, fusion = self._second_view(image)
        if second is None:
            near_scores, near, _ = self.backend.nearest(photo, NEIGHBOURS, scope)
        else:
            fused_scores, fused = self.photo_fusion.nearest(self.item_vectors(), photo, second, fusion,
                                                            max(NEIGHBOURS, query_expansion(expansion)), scope.mask)
            near_scores, near = fused_scores[:NEIGHBOURS], fused[:NEIGHBOURS]
        weights = self.settings.image_consistency if consistency is None else consistency
        extra = self.consistency.request_terms(photo, weights, near, near_scores, self.settings.photo_type_vote)
        depth = hybrid_depth(k, rerank_weight, rerank_depth)
        depth = depth if second is None else max(depth, self.settings.photo_fusion_depth)
        query = self._expand(photo, expansion, scope) if second is None else self._expand_by(photo, fused, expansion)
        results = self._rank(query, None, 0.0, depth, scope, extra=extra, collapse=collapse)
        results = with_visual_cosine(results, self.item_vectors(self.positions(r.id for r in results)), photo)
        if second is not None:
            results = self.photo_fusion.rerank(results, self.positions(r.id for r in results), second, fusion,
                                               len(results))
        if rerank_weight > 0:
            results = self._rerank(results, lambda reranker: reranker.encode_images([image])[0], rerank_weight, k)
        return results[:k]  # an uploaded image has no description: VSC stays None

    def _second_view(self, image) -> tuple[np.ndarray | None, float]:
        """The photo's vector of the second encoder and its fusion weight ((None, 0) when off or absent)."""
        weight = self.settings.photo_fusion
        if self.photo_fusion is None or weight <= 0:
            return None, 0.0
        return self.photo_fusion.encode_images([image])[0], weight

    def photo_attributes(self, image, photo: np.ndarray) -> dict[str, str]:
        """A photo's type and gender as its nearest items by the fused cosine agree on them (each value at least
        `ATTRIBUTE_CONFIDENCE` of their weight); {} without the second encoder."""
        second, fusion = self._second_view(image)
        if second is None:
            return {}
        scores, near = self.photo_fusion.nearest(self.item_vectors(), photo, second, fusion, NEIGHBOURS, None)
        return neighbour_values(self.index.items, near, scores, ("articleType", "gender"), NEIGHBOUR_TEMPERATURE,
                                ATTRIBUTE_CONFIDENCE)

    def prepare_photo(self, image, box=None, scope: Scope | None = None) -> Isolation:
        """What a photo search encodes: `query_photo`, or the best cut-out by its nearest items in `scope`."""
        return prepared_photo(self, image, box, scope)

    def search_item(self, item_id: str, k: int = 10, filters: Mapping | None = None, rerank_weight: float = 0.0,
                    rerank_depth: int = DEFAULT_RERANK_DEPTH, expansion: int | None = None,
                    consistency: Mapping[str, float] | None = None, collapse: bool | None = None
                    ) -> list[SearchResult]:
        """More like this catalog item (itself excluded), as `search_image` from its stored vector, favouring items
        that share its catalog colour and type (`consistency` weights, default the settings'; {} = off)."""
        position = self.position(item_id)
        scope = self.catalog.scope(filters, [str(item_id)])
        own = self.backend.vector(position)
        weights = self.settings.item_consistency if consistency is None else dict(consistency)
        same = QueryIntent("", "", IntentScorer.reference(self.catalog.item_row(position),
                                                          attributes=[a for a, w in weights.items() if w]))
        extra = {"terms": tuple(self.intents.terms(same, weights))} if same else None
        results = self._rank(self._expand(own, expansion, scope), None, 0.0,
                             hybrid_depth(k, rerank_weight, rerank_depth), scope, extra=extra, collapse=collapse)
        results = with_visual_cosine(results, self.item_vectors(self.positions(r.id for r in results)), own)
        if rerank_weight > 0:
            results = self._rerank(results, lambda reranker: reranker.index.vectors.reconstruct(position),
                                   rerank_weight, k)
        # The item's own description: its VSC embedding is already in the scorer.
        return self._with_vsc(results[:k], self.vsc.item_description(position) if self.vsc else None,
                              self.vsc.vectors([position])[0] if self.vsc else None)

    def search_composed(self, image=None, text: str = "", k: int = 10, filters: Mapping | None = None,
                        text_weight: float | None = None, *, item_id: str | None = None, method: str | None = None,
                        item_text_weight: float | None = None, use_reference_attributes: bool = True,
                        exclude_ids: Iterable[str] | None = None, intent: bool | None = None,
                        collapse: bool | None = None, box=None) -> list[SearchResult]:
        """Reference (an uploaded `image`, its product as `prepare_photo` finds it or inside `box`; or a catalog
        `item_id`) + modification `text` -> target products.
        `text_weight`: the weighted-sum composition's text share (default the model's; the combiner ignores it);
        `method`: "sum" or "combiner"; `item_text_weight`: as `search_text`'s `text_weight`;
        `use_reference_attributes`: name the reference's type and gender in the text; `intent`: boost what the
        words ask and, where they do not change them, the reference's values. The reference never comes back."""
        text = validate_text(text)
        self.encoder.require_text()
        scope = self.catalog.scope(None, exclude_ids)  # the reference's cut-out: filters describe results, not it
        image = self.prepare_photo(image, box, scope).image if image is not None and item_id is None else image
        position, image_embeds, reference = reference_of(self, image, item_id)
        excluded = [str(i) for i in (exclude_ids or ())] + ([str(item_id)] if item_id is not None else [])
        asked = self.queries.intent(text, None if intent is None else bool(intent), learned=False)  # the type is known
        if asked is not None:
            asked, reference = keep_reference(asked, reference, 1.0 if item_id is not None else ATTRIBUTE_CONFIDENCE)
            text = asked.search_text
        query_text = composed_query_text(text, reference if use_reference_attributes else None)
        visual_query = compose(self.model, image_embeds, self.encoder.text(query_text), method, text_weight)
        weight = self.queries.fusion_weight(item_text_weight)
        terms = {"terms": tuple(self.intents.terms(asked))} if asked else None
        results = self._rank(visual_query, self.queries.item_text(query_text, weight), weight, k,
                             self.catalog.scope(filters, excluded), extra=terms, collapse=collapse)
        return self._with_vsc(results, self.describe_composed(text, position))

    def describe_composed(self, modification: str, position: int | None = None) -> str | None:
        """A composed query's description for VSC (modeling/retrieval/engine/vsc.py)."""
        return self.vsc.composed_description(modification, position) if self.vsc else None

    def _with_vsc(self, results, description: str | None, embedding: np.ndarray | None = None):
        return with_vsc(results, self.vsc, self.encoder, description, [self._position[r.id] for r in results],
                        embedding)

    def _expand(self, query: np.ndarray, expansion: int | None, scope: Scope) -> np.ndarray:
        """The unit image query expanded with its nearest allowed items (`expand_queries`)."""
        scores, positions, neighbours = self.backend.nearest(query, query_expansion(expansion), scope)
        return query if len(positions) == 0 else expand_queries(query[None], neighbours[None], scores[None])[0]

    def _expand_by(self, query: np.ndarray, nearest: np.ndarray, expansion: int | None) -> np.ndarray:
        """The unit image query expanded with the first of `nearest` (positions, e.g. by the fused cosine)."""
        neighbours = self.item_vectors(nearest[:query_expansion(expansion)])
        return query if len(neighbours) == 0 else expand_queries(query[None], neighbours[None],
                                                                 (neighbours @ query)[None])[0]

    def _rerank(self, results: list[SearchResult], query, weight: float, k: int) -> list[SearchResult]:
        """Hybrid: re-score candidates by `(1 - weight) * score + weight * rerank cosine` (`query(reranker)`)."""
        if self.reranker is None:
            raise QueryError("Hybrid re-ranking needs a re-ranking model (e.g. the VAE); none is loaded.")
        positions = np.array([self._position[r.id] for r in results])
        return self.reranker.rerank(results, positions, query(self.reranker), weight, k)

    def _rank(self, visual_query: np.ndarray, text_query: np.ndarray | None, weight: float, k: int,
              scope: Scope | np.ndarray | None, lexical: tuple[float, str] | None = None, extra: dict | None = None,
              collapse: bool | None = None) -> list[SearchResult]:
        """One `RankRequest` to the backend (`lexical`: keyword weight and query text; exact whenever terms are
        added or near-duplicates collapse), the rows collapsed here unless `collapse` (default the settings')."""
        k = int(k)
        if k < 1:
            raise QueryError("k must be at least 1.")
        collapse = self.settings.collapse_duplicates if collapse is None else bool(collapse)
        scope = scope if isinstance(scope, Scope) else Scope(scope)
        if scope.empty:
            return []
        lexical_weight, query_text = lexical or (0.0, None)
        request = RankRequest(visual_query, k, k, scope, text_query, weight if text_query is not None else 0.0,
                              query_text, lexical_weight, exact=collapse or extra is not None, **(extra or {}))
        if collapse:
            return self._table.results(self.duplicates.collapsed(self.backend.rank, request,
                                                                 self.backend.collapse_growth))
        return self._table.results(self.backend.rank(request))


def _no_local_vectors():
    raise QueryError("This needs the catalog's vectors in process (a local index folder): the engine serves from "
                     "a vector store alone.")


__all__ = ["DEFAULT_LEXICAL_WEIGHT", "DEFAULT_PHOTO_MODEL", "DEFAULT_QUERY_EXPANSION", "DEFAULT_TEXT_WEIGHT",
           "EngineSettings",
           "FashionSearchEngine", "QueryError", "SearchResult", "VisualReranker", "composed_query_text",
           "expand_queries", "top_k_order"]
