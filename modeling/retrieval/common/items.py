"""The catalog values of an engine that holds no item table (served from a vector store's collection).

`CatalogValues`: each filter attribute's display values (first appearance in the catalog first, "" for items
without one), which a store keeps in its serving record, and the per-position reads a store implements (its
items' values are read per request, nothing per item is held): `mask` (a store filters server-side: no mask),
`labels` (each item's value as an index into a head's labels, indexable by positions) and `table` (the
`AttributeTable.evaluate` of a few positions).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence


class CatalogValues(ABC):
    """Display values per filter attribute, and per-position reads (see the module docstring)."""

    def __init__(self, values: Mapping[str, Sequence[str]]):
        self.values = {a: [str(v) for v in vs] for a, vs in values.items()}
        self.attributes = tuple(self.values)

    def __contains__(self, attribute) -> bool:
        return attribute in self.values

    @abstractmethod
    def __len__(self) -> int:
        """The number of items."""

    @abstractmethod
    def mask(self, filters: Mapping | None):
        """A boolean mask over positions, or None (every item, or a store that filters server-side); `ValueError`
        for a key that is not a filter attribute."""

    @abstractmethod
    def labels(self, attribute: str, labels: Sequence[str]):
        """Each item's value of `attribute` as an index into `labels` (-1: none of them), indexable by positions."""

    @abstractmethod
    def table(self, attributes: Sequence[str]):
        """An object whose `evaluate(terms, positions)` is `AttributeTable.evaluate` over these items."""


__all__ = ["CatalogValues"]
