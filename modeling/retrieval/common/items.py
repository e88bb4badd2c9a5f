"""Compact per-item state for an engine that serves a catalog it does not hold (a vector store's collection): a few
bytes per item instead of Python objects per item, so the process's memory hardly grows with the catalog.

- `CompactIds`: the item ids in index order as one fixed-width byte array, with a sorted order over it for the id ->
  position lookup (`positions`, a read-only mapping view); a sequence of `str` to its callers.
- `ItemCodes`: each filter attribute's value per item as an integer code into the attribute's display values (in
  order of first appearance in the catalog), with the engine's filter semantics (`mask`), the `AttributeTable` the
  `ScoreTerm`s are evaluated with, and the codes mapped into another label list (a head's labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from modeling.retrieval.common.ranking import AttributeTable, active_filters


def _id_bytes(item_id) -> bytes:
    return str(item_id).encode("utf-8")


class CompactIds(Sequence):
    """Item ids (str) in index order, held as one `numpy.bytes_` array (the longest id's width per item) and an
    int32 sort order (id -> position by binary search)."""

    def __init__(self, ids: np.ndarray):
        self._ids = np.asarray(ids, dtype=np.bytes_)
        self._order = np.argsort(self._ids, kind="stable").astype(np.int32)
        self.positions = IdPositions(self)

    @classmethod
    def from_strings(cls, ids: Iterable) -> "CompactIds":
        return cls(np.array([_id_bytes(i) for i in ids], dtype=np.bytes_))

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(i.decode("utf-8") for i in self._ids[index].tolist())
        return self._ids[int(index)].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (i.decode("utf-8") for i in self._ids.tolist())

    def __eq__(self, other) -> bool:
        if isinstance(other, CompactIds):
            return np.array_equal(self._ids, other._ids)
        return isinstance(other, Sequence) and len(other) == len(self) and tuple(self) == tuple(other)

    __hash__ = None

    @property
    def nbytes(self) -> int:
        return int(self._ids.nbytes + self._order.nbytes)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Positions (int64) of byte-string ids, -1 for an id not held."""
        ids = np.asarray(ids, dtype=np.bytes_)
        if len(self._ids) == 0:
            return np.full(len(ids), -1, np.int64)
        found = np.searchsorted(self._ids, ids, sorter=self._order)
        found = np.minimum(found, len(self._ids) - 1)
        positions = self._order[found].astype(np.int64)
        return np.where(self._ids[positions] == ids, positions, -1)

    def position(self, item_id) -> int | None:
        try:
            key = _id_bytes(item_id)
        except UnicodeEncodeError:  # a lone surrogate from a JSON request: no catalog id is one
            return None
        if len(key) > self._ids.itemsize or key.endswith(b"\0"):
            return None
        position = int(self.lookup(np.array([key]))[0])
        return None if position < 0 else position


class IdPositions(Mapping):
    """The id -> position map of `CompactIds`, computed per lookup (nothing per item held)."""

    def __init__(self, ids: CompactIds):
        self._ids = ids

    def __getitem__(self, item_id) -> int:
        position = self._ids.position(item_id)
        if position is None:
            raise KeyError(item_id)
        return position

    def get(self, item_id, default=None):
        position = self._ids.position(item_id)
        return default if position is None else position

    def __contains__(self, item_id) -> bool:
        return self._ids.position(item_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def smallest_code_type(size: int):
    return np.int8 if size < 2**7 else np.int16 if size < 2**15 else np.int32


class ItemCodes:
    """Per attribute, each item's value as a code into `values[attribute]` (display values, first appearance
    first; "" for an item without one)."""

    def __init__(self, codes: Mapping[str, np.ndarray], values: Mapping[str, Sequence[str]]):
        self.codes = {a: np.asarray(c) for a, c in codes.items()}
        self.values = {a: [str(v) for v in values[a]] for a in codes}
        self.attributes = tuple(codes)
        self._length = len(next(iter(self.codes.values()))) if self.codes else 0

    @classmethod
    def in_catalog_order(cls, codes: Mapping[str, np.ndarray], values: Mapping[str, Sequence[str]]) -> "ItemCodes":
        """Renumber codes (any numbering, unused values dropped) so that values come in order of first appearance,
        each attribute's codes in the smallest integer type that holds them."""
        out_codes, out_values = {}, {}
        for attribute, array in codes.items():
            used, first, inverse = np.unique(np.asarray(array), return_index=True, return_inverse=True)
            rank = np.empty(len(used), np.int64)
            rank[np.argsort(first, kind="stable")] = np.arange(len(used))
            out_codes[attribute] = rank[inverse.ravel()].astype(smallest_code_type(len(used)))
            by_rank = [None] * len(used)
            for code, r in zip(used.tolist(), rank.tolist()):
                by_rank[r] = values[attribute][code]
            out_values[attribute] = by_rank
        return cls(out_codes, out_values)

    def __len__(self) -> int:
        return self._length

    def __contains__(self, attribute) -> bool:
        return attribute in self.codes

    @property
    def nbytes(self) -> int:
        return int(sum(c.nbytes for c in self.codes.values()))

    def value(self, attribute: str, position: int) -> str:
        return self.values[attribute][int(self.codes[attribute][position])]

    def mask(self, filters: Mapping | None) -> np.ndarray | None:
        """As `filter_mask` over these attributes: each key's values (a string or a list) compared stripped and
        case-folded, any may match, all keys must; None when no filter is active; `ValueError` for another key."""
        wanted = active_filters(filters, self.attributes)
        if wanted is None:
            return None
        mask = np.ones(len(self), dtype=bool)
        for key, chosen in wanted.items():
            hits = np.array([v.strip().casefold() in chosen for v in self.values[key]], dtype=bool)
            mask &= hits[self.codes[key]]
        return mask

    def table(self, attributes: Sequence[str]) -> AttributeTable:
        """The `AttributeTable` of these codes (what `AttributeTable(items, attributes)` makes of an item table)."""
        kept = [a for a in attributes if a in self.codes]
        return AttributeTable.from_codes({a: self.codes[a] for a in kept},
                                         {a: {v: i for i, v in enumerate(self.values[a])} for a in kept})

    def labels(self, attribute: str, labels: Sequence[str]) -> np.ndarray:
        """Each item's value as an index into `labels` (-1: not one of them), int16."""
        lookup = {str(v): i for i, v in enumerate(labels)}
        table = np.array([lookup.get(v, -1) for v in self.values[attribute]], dtype=np.int16)
        return table[self.codes[attribute]]


__all__ = ["CompactIds", "IdPositions", "ItemCodes"]
