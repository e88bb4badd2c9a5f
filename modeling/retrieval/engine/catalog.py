"""The engine's catalog positions and scopes: ids in index order, the one id -> position map, which items a query
may return (`Scope`: filters and excluded ids as a mask over positions), and the item fields results and the app
show (`rows`, `item_row`, `attribute_values`, `example_photos`, `random_row`, `image_folders`)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from modeling.data.catalog import ATTRIBUTES
from modeling.retrieval.common.ranking import Scope
from modeling.retrieval.common.types import QueryError


class CatalogPositions:
    """Ids, positions, scopes and item fields over a `CatalogIndex`'s items, or over an index that holds no item
    table (`StoreCatalog`: `ids` and `map`, its id -> position view, read from the collection per request, as are
    the item fields; filters are the collection's, so a scope has no mask)."""

    def __init__(self, index):
        self.index = index
        self._records: list[dict] | None = None
        if index.items is None:
            self.ids, self.map = index.ids, index.ids.positions
            self.attributes = [c for c in ATTRIBUTES if c in index.catalog_values]
            return
        self.ids = tuple(index.items["id"].astype(str))
        self.map = {item_id: i for i, item_id in enumerate(self.ids)}
        self.attributes = [c for c in ATTRIBUTES if c in index.items.columns]

    def check(self, vsc=None, reranker=None) -> None:
        """`ValueError` when the VSC scorer or the re-ranking index describe other items than the index."""
        if vsc is not None and len(vsc) != len(self.ids):
            raise ValueError(f"the VSC scorer describes {len(vsc)} items, the index {len(self.ids)}")
        if reranker is not None and not same_ids(reranker.ids, self.ids):
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
        """Boolean mask of searchable items (None when everything is allowed, or when a store filters them)."""
        try:
            mask = self.index.mask(dict(filters) if filters else None)
        except ValueError:  # an unknown key: name only the filters a user can set
            raise QueryError(f"Unknown filter in {sorted(filters)}; use one of {self.attributes}.") from None
        if self.index.items is None:  # the collection filters and excludes
            return mask
        excluded = [self.map[str(i)] for i in (exclude_ids or ()) if str(i) in self.map]
        if excluded:
            mask = np.ones(len(self.ids), dtype=bool) if mask is None else mask.copy()
            mask[excluded] = False
        return mask

    def rows(self, positions: Sequence[int]) -> list[dict]:
        """What a result shows of the items at `positions` (id, title, image path, the filter attributes): plain
        dicts of the item table built on first use (a pandas row lookup per result costs more than the search), or
        the collection's payloads (`StoreCatalog.rows`, one request)."""
        if self.index.items is None:
            return self.index.rows(positions)
        if self._records is None:
            columns = [c for c in ("id", "title", "image_path", *self.attributes) if c in self.index.items]
            self._records = self.index.items[columns].to_dict("records")
        return [self._records[p] for p in positions]

    def item_row(self, position: int) -> dict:
        """What the catalog holds of the item at `position`: its item table row, or what a result shows of it."""
        if self.index.items is not None:
            return self.index.items.iloc[position].to_dict()
        return self.rows([position])[0]

    def attribute_values(self, attribute: str) -> list[str]:
        """The distinct values of a catalog attribute, in order of first appearance ([] when it has none)."""
        items = self.index.items
        if items is None:
            return list(self.index.catalog_values.values.get(attribute, ()))
        return [str(v) for v in items[attribute].unique()] if attribute in items else []

    def first_photo(self, attribute: str, value: str) -> str | None:
        """The photo path of the first item (catalog order) whose `attribute` is `value` and that has a photo (an
        item table's; None without one)."""
        items = self.index.items
        if items is None or attribute not in items or "image_path" not in items:
            return None
        rows = items[(items[attribute] == value) & (items["image_path"] != "")]
        return rows["image_path"].iloc[0] if len(rows) else None

    def example_photos(self, types) -> dict[str, str]:
        """One photo per article type of `types`: the first item of that type (catalog order) that has a photo,
        when the file exists (a collection's serving record names them)."""
        if self.index.items is None:
            paths = {article: self.index.example_photos.get(article) for article in types}
        else:
            paths = {article: self.first_photo("articleType", article) for article in types}
        return {article: path for article, path in paths.items() if path and Path(path).exists()}

    def random_row(self, filters: Mapping | None = None) -> dict | None:
        """What the catalog holds of a random item among those `filters` allow; None when none is."""
        mask = self.allowed_mask(filters)
        if self.index.items is None:
            return self.index.random_row(filters)
        allowed = None if mask is None else np.flatnonzero(mask)
        count = len(self.ids) if allowed is None else len(allowed)
        if count == 0:
            return None
        choice = random.randrange(count)
        return self.item_row(choice if allowed is None else int(allowed[choice]))

    def image_folders(self) -> list[str]:
        """The folders of the catalog's photos (what the app may serve files from)."""
        if self.index.items is None:
            return list(self.index.image_folders)
        return sorted({str(Path(p).parent) for p in self.index.items.get("image_path", []) if p})

    def scope(self, filters: Mapping | None = None, exclude_ids: Iterable[str] | None = None) -> Scope:
        excluded = tuple(str(i) for i in (exclude_ids or ()))
        return Scope(self.allowed_mask(filters, excluded), dict(filters) if filters else None, excluded)


def same_ids(local: Sequence[str], ids: Sequence[str], spot_checks: int = 64) -> bool:
    """Whether a local index's ids (a sequence in memory) are `ids` in the same order: every id, or when `ids` are a
    collection's (read per request) their number and `spot_checks` positions spread over the catalog."""
    if isinstance(ids, (tuple, list)):
        return tuple(local) == tuple(ids)
    if len(local) != len(ids) or len(ids) == 0:
        return len(local) == len(ids)
    positions = sorted({0, len(ids) - 1, *np.linspace(0, len(ids) - 1, spot_checks).astype(int).tolist()})
    return [str(local[p]) for p in positions] == list(ids.take(positions))


__all__ = ["CatalogPositions", "same_ids"]
