"""The engine's catalog positions and scopes: ids in index order, the one id -> position map, and which items a
query may return (`Scope`: filters and excluded ids as a mask over positions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from modeling.data.catalog import ATTRIBUTES
from modeling.retrieval.common.ranking import Scope
from modeling.retrieval.common.types import QueryError


class CatalogPositions:
    """Ids, positions and scopes over a `CatalogIndex`'s items."""

    def __init__(self, index):
        self.index = index
        self.ids = tuple(index.items["id"].astype(str))
        self.map = {item_id: i for i, item_id in enumerate(self.ids)}
        self.attributes = [c for c in ATTRIBUTES if c in index.items.columns]

    def check(self, vsc=None, reranker=None) -> None:
        """`ValueError` when the VSC scorer or the re-ranking index describe other items than the index."""
        if vsc is not None and len(vsc.descriptions) != len(self.ids):
            raise ValueError(f"the VSC scorer describes {len(vsc.descriptions)} items, the index {len(self.ids)}")
        if reranker is not None and tuple(reranker.ids) != self.ids:
            raise ValueError("the re-ranking index holds other items (or another order) than the main index; "
                             "rebuild it from the same catalog")

    def position(self, item_id) -> int:
        """Index position of a catalog item (ids compare as strings); `QueryError` when it is not in this catalog."""
        position = self.map.get(str(item_id))
        if position is None:
            raise QueryError(f"No item with id {item_id!r} in this catalog.")
        return position

    def positions(self, item_ids: Iterable) -> np.ndarray:
        """Index positions (int64) of several items; `QueryError` for an unknown id."""
        return np.array([self.position(item_id) for item_id in item_ids], dtype=np.int64)

    def allowed_mask(self, filters: Mapping | None = None, exclude_ids: Iterable[str] | None = None):
        """Boolean mask of searchable items (None when everything is allowed)."""
        try:
            mask = self.index.mask(dict(filters) if filters else None)
        except ValueError:  # an unknown key: name only the filters a user can set
            raise QueryError(f"Unknown filter in {sorted(filters)}; use one of {self.attributes}.") from None
        excluded = [self.map[str(i)] for i in (exclude_ids or ()) if str(i) in self.map]
        if excluded:
            mask = np.ones(len(self.ids), dtype=bool) if mask is None else mask.copy()
            mask[excluded] = False
        return mask

    def scope(self, filters: Mapping | None = None, exclude_ids: Iterable[str] | None = None) -> Scope:
        excluded = tuple(str(i) for i in (exclude_ids or ()))
        return Scope(self.allowed_mask(filters, excluded), dict(filters) if filters else None, excluded)


__all__ = ["CatalogPositions"]
