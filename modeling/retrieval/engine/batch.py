"""Batch helpers over an engine's catalog, for evaluations and batch jobs (not the serving path): exact "more like
this" for many items at once (`item_queries`, `item_rankings`) and every item's text-search scores (`fused_scores`).

    from modeling.retrieval.engine.batch import item_rankings
    item_rankings(engine, depth=10)  # index positions per item; ids in `engine.ids`
"""

from __future__ import annotations

import numpy as np

from modeling.retrieval.backends.faiss.ranking import fuse
from modeling.retrieval.common.types import QueryError
from modeling.retrieval.engine import exact_ranking
from modeling.retrieval.understanding.parser import QueryIntent


def item_queries(engine, positions=None, expansion: int | None = None) -> np.ndarray:
    """The unit query vectors "more like this" ranks by, for the items at `positions` (default all): each item's
    stored vector expanded with its `expansion` nearest other items (default `DEFAULT_QUERY_EXPANSION`)."""
    return exact_ranking.item_queries(engine.item_vectors(), positions, exact_ranking.query_expansion(expansion))


def item_rankings(engine, positions=None, depth: int = 10, expansion: int | None = None) -> np.ndarray:
    """Exact "more like this" for many catalog items at once: `search_item` without filters, re-ranking, the
    consistency term or collapsing, ranked by brute force instead of an index search per item.

    Returns:
        `np.ndarray` of shape `(len(positions), min(depth, num_items - 1))`: index positions of each item's
        results (map them to ids with `engine.ids`), best first, ties to catalog order, the item itself excluded.
    """
    if int(depth) < 1:
        raise QueryError("k must be at least 1.")
    expansion = exact_ranking.query_expansion(expansion)
    return exact_ranking.item_rankings(engine.item_vectors(), positions, int(depth), expansion)


def fused_scores(engine, query: str, text_weight: float | None = None, lexical_weight: float | None = None,
                 intent: "QueryIntent | bool | None" = None) -> dict[str, np.ndarray | None]:
    """Every item's scores for a text `query` as `search_text` computes them without filters, in index order:
    `score` (what ranks), `visual`, `text` (item-text cosine), `lexical` (keyword match in [0, 1]) and `intent`
    (boosts and penalties); each None when the query does not use it."""
    understood = engine.queries.intent(query, intent)
    text_query = engine.queries.text_query(understood.search_text if understood is not None else query,
                                           text_weight, lexical_weight)
    visual = engine.item_vectors() @ text_query.visual
    boosts = engine.intents.scores(understood, np.arange(len(engine.ids)))
    out = {"score": visual, "visual": visual, "text": None, "lexical": None, "intent": boosts}
    if text_query.text is not None:
        out["text"] = engine.index.text_embeddings @ text_query.text
        if text_query.lexical_weight > 0:
            out["lexical"] = engine.queries.keyword_scores(text_query.query)
        lexical = None if out["lexical"] is None else (text_query.lexical_weight, out["lexical"])
        out["score"] = fuse(visual, out["text"], text_query.weight, lexical)
    if boosts is not None:
        out["score"] = out["score"] + boosts
    return out


__all__ = ["fused_scores", "item_queries", "item_rankings"]
