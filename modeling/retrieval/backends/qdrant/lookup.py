"""Per-item facts of a collection read per request, for an engine that holds nothing per item (no scroll at start).

- `ItemLookup`: the `ROW_FIELDS` of items by catalog position or id, from a bounded least-recently-used cache that
  every hit feeds (`remember`; the rows a result list shows are those hits), else from the collection: one scroll
  filtered on the `position` payload (integer index) or one `retrieve` by point id. A cached row is used for at
  most `ROW_TTL_S` seconds (a payload changed in the collection shows within that time; the hits of a request are
  always fresh). Also what a scope allows (`count`), the members of near-duplicate groups (`members`) and a
  uniformly random allowed item (`random_row`, the collection's random sample).
- `StoreIds`: the item ids in catalog order as a read-only sequence (and `positions`, the id -> position view).
- `StoreValues`: the filter attributes' display values (from the serving record) and, per position, each item's
  values read through the lookup: the head labels of a few positions (a photo's neighbours' colour vote) and the
  `ScoreTerm` sums of a few positions (`ValuesTable`).

The cache holds at most `CACHE_ROWS` rows (~1-2 KB each as Python objects), whatever the catalog's size.
"""

from __future__ import annotations

import operator
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from modeling.retrieval.backends.qdrant.store import GROUP_FIELD, QdrantStore, QdrantStoreError, models, point_id
from modeling.retrieval.common.items import CatalogValues
from modeling.retrieval.common.ranking import AttributeTable, ScoreTerm, active_filters
from modeling.retrieval.common.types import QueryError

ROW_FIELDS = ("id", "position", "title", "image_path", "attributes", GROUP_FIELD)
CACHE_ROWS = 4096  # a request reads at most a few hundred rows (a collapsed ranking and its duplicates)
ROW_TTL_S = 10.0
PAGE = 1024  # positions per request when a caller walks many


def slim(payload: Mapping) -> dict:
    """The `ROW_FIELDS` of a payload."""
    return {field: payload[field] for field in ROW_FIELDS if field in payload}


def group_key(payload: Mapping):
    """The near-duplicate group of a row: its `group` payload, or its own position when it has none."""
    return payload.get(GROUP_FIELD) or int(payload["position"])


class ItemLookup:
    """Rows of a collection by position or id through a bounded cache (see the module docstring)."""

    def __init__(self, store: QdrantStore, num_items: int, capacity: int = CACHE_ROWS):
        self.store, self.num_items, self.capacity = store, int(num_items), int(capacity)
        self._rows: OrderedDict[int, tuple[float, dict]] = OrderedDict()  # position -> (when read, row)
        self._positions: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def remember(self, payloads: Iterable[Mapping]) -> None:
        """Keep (or refresh) the rows of payloads just read."""
        now = time.monotonic()
        with self._lock:
            for payload in payloads:
                if payload is None or "position" not in payload:
                    continue
                row = slim(payload)
                position = int(row["position"])
                old = self._rows.pop(position, None)
                if old is not None:
                    self._positions.pop(str(old[1]["id"]), None)
                self._rows[position] = (now, row)
                self._positions[str(row["id"])] = position
            while len(self._rows) > self.capacity:
                _, (_, row) = self._rows.popitem(last=False)
                self._positions.pop(str(row["id"]), None)

    def _cached(self, position: int) -> dict | None:
        """The cached row at `position` when read less than `ROW_TTL_S` ago."""
        with self._lock:
            entry = self._rows.get(position)
            if entry is None or time.monotonic() - entry[0] > ROW_TTL_S:
                return None
            self._rows.move_to_end(position)
            return entry[1]

    def fetch(self, positions: Sequence[int], query_filter=None, remember: bool = True) -> dict[int, dict]:
        """The rows at `positions` read from the collection (one request; `query_filter` narrows them)."""
        if not positions:
            return {}
        condition = models.FieldCondition(key="position", match=models.MatchAny(any=[int(p) for p in positions]))
        scroll_filter = models.Filter(must=[condition, *([query_filter] if query_filter is not None else [])])
        points, _ = self.store.client.scroll(self.store.name, scroll_filter=scroll_filter, limit=len(positions),
                                             with_payload=list(ROW_FIELDS), with_vectors=False)
        rows = {int(p.payload["position"]): slim(p.payload) for p in points}
        if remember:
            self.remember(rows.values())
        return rows

    def rows_at(self, positions: Sequence[int], remember: bool = True) -> list[dict]:
        """The rows of the items at `positions`, in that order; `QdrantStoreError` when one is gone."""
        positions = [int(p) for p in positions]
        rows = {p: row for p in positions if (row := self._cached(p)) is not None}
        missing = sorted(set(positions) - set(rows))
        for start in range(0, len(missing), PAGE):
            rows.update(self.fetch(missing[start:start + PAGE], remember=remember))
        gone = [p for p in positions if p not in rows]
        if gone:
            if 0 <= gone[0] < self.num_items:
                raise QdrantStoreError(f"collection {self.store.name!r} no longer holds the item at position "
                                       f"{gone[0]}: the collection changed under the running engine; restart it")
            raise IndexError(f"position {gone[0]} is outside the catalog of {self.num_items} items")
        return [rows[p] for p in positions]

    def position_of(self, item_id) -> int | None:
        """The catalog position of an item id (None when the collection does not hold it)."""
        key = str(item_id)
        with self._lock:
            position = self._positions.get(key)
        if position is not None and self._cached(position) is not None:
            return position
        try:
            points = self.store.client.retrieve(self.store.name, ids=[point_id(key)], with_payload=list(ROW_FIELDS))
        except UnicodeEncodeError:  # a lone surrogate from a JSON request: no catalog id is one
            return None
        found = [p.payload for p in points if p.payload and str(p.payload.get("id")) == key]
        if not found:
            return None
        self.remember(found)
        return int(found[0]["position"])

    def count(self, filters: Mapping | None = None, exclude_ids: Iterable[str] = ()) -> int:
        """How many items the filters allow (every item when none)."""
        query_filter = self.store.query_filter(filters, exclude_ids)
        if query_filter is None:
            return self.num_items
        return int(self.store.client.count(self.store.name, count_filter=query_filter, exact=True).count)

    def members(self, groups: Sequence[str], filters: Mapping | None = None,
                exclude_ids: Iterable[str] = ()) -> dict[str, list[int]]:
        """The allowed positions of each near-duplicate group (group payload -> positions in catalog order)."""
        wanted = sorted({str(g) for g in groups})
        if not wanted:
            return {}
        condition = models.FieldCondition(key=GROUP_FIELD, match=models.MatchAny(any=wanted))
        scope = self.store.query_filter(filters, exclude_ids)
        scroll_filter = models.Filter(must=[condition, *([scope] if scope is not None else [])])
        out: dict[str, list[int]] = {g: [] for g in wanted}
        offset = None
        while True:
            points, offset = self.store.client.scroll(self.store.name, scroll_filter=scroll_filter, limit=PAGE,
                                                      offset=offset, with_payload=list(ROW_FIELDS),
                                                      with_vectors=False)
            self.remember(p.payload for p in points)
            for point in points:
                out[str(point.payload[GROUP_FIELD])].append(int(point.payload["position"]))
            if offset is None:
                return {g: sorted(positions) for g, positions in out.items()}

    def random_row(self, filters: Mapping | None = None) -> dict | None:
        """A uniformly random allowed item's row (the collection's random sample); None when none is allowed."""
        points = self.store.client.query_points(self.store.name, query=models.SampleQuery(sample=models.Sample.RANDOM),
                                                query_filter=self.store.query_filter(filters), limit=1,
                                                with_payload=list(ROW_FIELDS)).points
        return slim(points[0].payload) if points else None


class StoreIds(Sequence):
    """The item ids in catalog order, read through an `ItemLookup` (nothing per item held)."""

    def __init__(self, lookup: ItemLookup):
        self.lookup = lookup
        self.positions = IdPositions(lookup)

    def __len__(self) -> int:
        return self.lookup.num_items

    def __getitem__(self, index):
        if isinstance(index, slice):
            positions = range(*index.indices(len(self)))
            return tuple(row["id"] for row in self.lookup.rows_at(positions, remember=len(positions) <= PAGE))
        index = operator.index(index)
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError(f"index {index} is outside the catalog of {len(self)} items")
        return str(self.lookup.rows_at([position])[0]["id"])

    def __contains__(self, item_id) -> bool:
        return self.lookup.position_of(item_id) is not None

    def index(self, item_id, start: int = 0, stop: int | None = None) -> int:
        position = self.lookup.position_of(item_id)
        if position is None or position < start or (stop is not None and position >= stop):
            raise ValueError(f"{item_id!r} is not in the catalog")
        return position

    def take(self, positions: Sequence[int]) -> list[str]:
        """The ids at several positions (one request for those not cached)."""
        return [str(row["id"]) for row in self.lookup.rows_at(positions)]

    def __iter__(self) -> Iterator[str]:
        """Every id in catalog order: one request per `PAGE` positions (a scan of the collection)."""
        for start in range(0, len(self), PAGE):
            yield from (str(r["id"]) for r in self.lookup.rows_at(range(start, min(start + PAGE, len(self))),
                                                                  remember=False))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and tuple(self) == tuple(other)

    __hash__ = None


class IdPositions(Mapping):
    """The id -> position map of a collection, one lookup per id not cached."""

    def __init__(self, lookup: ItemLookup):
        self.lookup = lookup

    def __getitem__(self, item_id) -> int:
        position = self.lookup.position_of(item_id)
        if position is None:
            raise KeyError(item_id)
        return position

    def get(self, item_id, default=None):
        position = self.lookup.position_of(item_id)
        return default if position is None else position

    def __contains__(self, item_id) -> bool:
        return self.lookup.position_of(item_id) is not None

    def __iter__(self) -> Iterator[str]:
        """Every id: a scan of the collection (`StoreIds.__iter__`)."""
        return iter(StoreIds(self.lookup))

    def __len__(self) -> int:
        return self.lookup.num_items

    def values(self):
        raise TypeError("the id -> position map of a collection is read per id; it has no view of every value")

    def items(self):
        raise TypeError("the id -> position map of a collection is read per id; it has no view of every item")


class StoreValues(CatalogValues):
    """The filter attributes of a collection: display values from the serving record, per-item values read through
    the lookup for the positions asked."""

    def __init__(self, lookup: ItemLookup, values: Mapping[str, Sequence[str]]):
        super().__init__(values)
        self.lookup = lookup

    def __len__(self) -> int:
        return self.lookup.num_items

    def mask(self, filters: Mapping | None) -> None:
        """No mask: the collection filters (`ValueError` for a key that is not a filter attribute, as a mask)."""
        active_filters(filters, self.attributes)
        return None

    def at(self, attribute: str, positions: Sequence[int]) -> list[str]:
        return [str((row.get("attributes") or {}).get(attribute, "")) for row in self.lookup.rows_at(positions)]

    def labels(self, attribute: str, labels: Sequence[str]) -> "LabelsAt":
        return LabelsAt(self, attribute, labels)

    def table(self, attributes: Sequence[str]) -> "ValuesTable":
        return ValuesTable(self, [a for a in attributes if a in self])


class LabelsAt:
    """Each item's value of an attribute as an index into `labels` (-1: not one of them), read per position."""

    def __init__(self, values: StoreValues, attribute: str, labels: Sequence[str]):
        self.values, self.attribute = values, attribute
        self.lookup = {str(v): i for i, v in enumerate(labels)}

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, positions) -> np.ndarray:
        found = self.values.at(self.attribute, np.atleast_1d(np.asarray(positions)).tolist())
        out = np.array([self.lookup.get(v, -1) for v in found], dtype=np.int16)
        return out if np.ndim(positions) else out[0]


class ValuesTable:
    """`AttributeTable.evaluate` for the items at given positions, their values read through the lookup."""

    def __init__(self, values: StoreValues, attributes: Sequence[str]):
        self.values, self.attributes = values, list(attributes)

    def evaluate(self, terms: Sequence[ScoreTerm], positions: np.ndarray | None = None) -> np.ndarray | None:
        if positions is None:
            raise QueryError("Scoring every item needs the catalog in process (a local index folder): the engine "
                             "serves from a vector store alone.")
        positions = np.asarray(positions, dtype=np.int64).tolist()
        rows = pd.DataFrame({a: self.values.at(a, positions) for a in self.attributes}, index=range(len(positions)))
        return AttributeTable(rows, self.attributes).evaluate(terms)


__all__ = ["CACHE_ROWS", "IdPositions", "ItemLookup", "LabelsAt", "ROW_FIELDS", "ROW_TTL_S", "StoreIds",
           "StoreValues", "ValuesTable", "group_key", "slim"]
