"""The catalog a collection holds, for an engine that serves from the collection alone (no local index folder).

- `StoreCatalog`: what the engine keeps of the catalog, read from the points' payloads at start: the item table
  (id, title, image path, the filter attributes' display values, in catalog order), the near-duplicate group of
  every item (the `group` payload the build wrote) and the collection's serving record. No vector is read: rankings,
  neighbours, item vectors and VSC's title vectors stay in the collection and are fetched per query.
- The serving record (`SERVING_KEY` in the collection metadata): what the engine's query side needs at start (the
  query parser's vocabulary, the intent heads, which named vector VSC reads), versioned (`SERVING_FORMAT`) and tied
  to the model fingerprint and the catalog signature of the collection. Collection metadata is what a Qdrant
  server keeps per collection (qdrant-client local mode and the edge folder keep it too), so one record works on
  all three. The engine writes it at the end of the build (`modeling.retrieval.engine.stored`).
- `scroll_points`, `write_groups`, `write_serving_record`: the build's reads and writes of the finished collection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from modeling.retrieval.backends.qdrant.store import (COMPLETE_KEY, GROUP_FIELD, METADATA_KEY, QdrantStore,
                                                      QdrantStoreError, point_id)
from modeling.retrieval.common.ranking import filter_mask

SERVING_KEY = "fashion_search_serving"
SERVING_FORMAT = 2  # 2: the parser's vocabulary holds the usage shares per article type
VSC = "vsc"  # the named vector of the item descriptions VSC compares with
ITEM_FIELDS = ("id", "position", "title", "image_path", "attributes", GROUP_FIELD)
SCROLL_PAGE = 2048


def scroll_points(client, name: str, fields: Sequence[str], vector: str | None = None,
                  page: int = SCROLL_PAGE) -> Iterator:
    """Every point of a collection (payload `fields`, and `vector` when given), page by page, in id order."""
    offset = None
    while True:
        points, offset = client.scroll(name, limit=page, offset=offset, with_payload=list(fields),
                                       with_vectors=[vector] if vector else False)
        yield from points
        if offset is None:
            return


def write_groups(client, name: str, groups: Mapping[str, Sequence[str]]) -> None:
    """Set the `group` payload (the group id) of the items of each near-duplicate group (group id -> item ids)."""
    for group, item_ids in groups.items():
        client.set_payload(name, payload={GROUP_FIELD: str(group)}, points=[point_id(i) for i in item_ids],
                           wait=True)


def write_serving_record(client, name: str, record: Mapping) -> None:
    client.update_collection(name, metadata={SERVING_KEY: dict(record, format_version=SERVING_FORMAT)})


def check_serving_record(store: QdrantStore, everything: Mapping) -> dict:
    """The collection's serving record, checked against the collection it came with; `QdrantStoreError` (no path,
    no exception name: the operator reads it at start) when it is missing, of another format or stale."""
    record, identity = everything.get(SERVING_KEY), everything.get(METADATA_KEY, {})
    rebuild = (f"rebuild it with `python -m modeling.retrieval.engine.build_index --vector-store "
               f"{store.config.store_name} --rebuild ...` (this version writes it)")
    if not isinstance(record, dict):
        raise QdrantStoreError(f"collection {store.name!r} holds no serving record (the query side the engine "
                               f"needs without a local index: parser vocabulary, intent heads, VSC); {rebuild}")
    if record.get("format_version") != SERVING_FORMAT:
        raise QdrantStoreError(f"collection {store.name!r} holds a serving record of format "
                               f"{record.get('format_version')!r}, this version reads {SERVING_FORMAT}; run the build "
                               f"command again (`python -m modeling.retrieval.engine.build_index --vector-store "
                               f"{store.config.store_name} ...`): it rewrites the record without encoding anything")
    complete = everything.get(COMPLETE_KEY) or {}
    expected = {"model_fingerprint": identity.get("model", {}).get("fingerprint"),
                "catalog_signature": identity.get("catalog", {}).get("signature"),
                "num_items": complete.get("num_items")}
    stale = [key for key, value in expected.items() if record.get(key) != value]
    if stale:
        raise QdrantStoreError(f"the serving record of collection {store.name!r} does not match the collection "
                               f"(its {', '.join(stale)} {'differs' if len(stale) == 1 else 'differ'}); {rebuild}")
    return record


def payload_items(rows: Sequence[Mapping], attributes: Sequence[str], extra: Sequence[str] = ()) -> pd.DataFrame:
    """The item table of payloads already in catalog order: id, title, image path, each filter attribute's display
    value ("" when the item has none, as a catalog's empty cell), and the `extra` payload fields."""
    return pd.DataFrame({
        "id": [str(p["id"]) for p in rows], "title": [str(p.get("title", "")) for p in rows],
        "image_path": [str(p.get("image_path", "")) for p in rows],
        **{a: [str((p.get("attributes") or {}).get(a, "")) for p in rows] for a in attributes},
        **{f: [str(p.get(f, "")) for p in rows] for f in extra}})


class StoreCatalog:
    """The item table, groups and serving record of an open collection (see the module docstring); the engine's
    `index` when it serves from the collection alone. `has_item_texts`: the collection holds `title` vectors."""

    vectors = None  # no vector is held in process

    def __init__(self, store: QdrantStore, items: pd.DataFrame, groups: np.ndarray, record: dict):
        self.store, self.items, self.groups, self.record = store, items, groups, record
        self.manifest = {"model": dict(store.metadata.get("model", {})), "store": store.name,
                         "text_encoder": store.metadata.get("text_encoder")}
        self.has_item_texts = store.metadata.get("text_encoder") is not None
        self.text_embeddings = None
        self._folded: dict = {}

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"StoreCatalog(collection={self.store.name!r}, num_items={len(self)})"

    @classmethod
    def read(cls, store: QdrantStore) -> "StoreCatalog":
        """Read the record (checked) and every point's payload (no vector): one scroll of the collection."""
        everything = store.client.get_collection(store.name).config.metadata or {}
        record = check_serving_record(store, everything)
        rows = sorted((p.payload for p in scroll_points(store.client, store.name, ITEM_FIELDS)),
                      key=lambda payload: int(payload["position"]))
        position = {str(p["id"]): i for i, p in enumerate(rows)}
        groups = np.array([position.get(str(p.get(GROUP_FIELD, "")), i) if p.get(GROUP_FIELD) else i
                           for i, p in enumerate(rows)], dtype=np.int64)
        return cls(store, payload_items(rows, store.attributes), groups, record)

    def mask(self, filters: Mapping | None) -> np.ndarray | None:
        """As `CatalogIndex.mask` (the store itself refuses a key that is not one of its filter attributes)."""
        return filter_mask(self.items, filters, self._folded)


__all__ = ["SERVING_FORMAT", "SERVING_KEY", "StoreCatalog", "VSC", "check_serving_record", "payload_items",
           "scroll_points",
           "write_groups", "write_serving_record"]
