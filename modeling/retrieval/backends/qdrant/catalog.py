"""The catalog a collection holds, for an engine that serves from the collection alone (no local index folder).

- `StoreCatalog`: what the engine keeps of the catalog: nothing per item. The collection's serving record (read at
  start, no scroll of the points) gives the number of items, each filter attribute's display values, the folders
  of the photos and an example photo per article type; ids, positions, what a result shows, near-duplicate groups
  and filters are read from the collection per request (`modeling.retrieval.backends.qdrant.lookup`). Rankings,
  neighbours, item vectors and VSC's title vectors stay in the collection too.
- The serving record (`SERVING_KEY` in the collection metadata): what the engine's query side needs at start (the
  query parser's vocabulary, the intent heads, which named vector VSC reads, the catalog facts above), versioned
  (`SERVING_FORMAT`) and tied to the model fingerprint and the catalog signature of the collection. Collection
  metadata is what a Qdrant server keeps per collection (qdrant-client local mode and the edge folder keep it
  too), so one record works on all three. The engine writes it at the end of the build
  (`modeling.retrieval.engine.stored`); `catalog_facts` computes its catalog part from the item table.
- `scroll_points`, `write_groups`, `write_serving_record`: the build's reads and writes of the finished collection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePath

import pandas as pd

from modeling.retrieval.backends.qdrant.lookup import ItemLookup, StoreIds, StoreValues, group_key
from modeling.retrieval.backends.qdrant.store import (COMPLETE_KEY, GROUP_FIELD, METADATA_KEY, QdrantStore,
                                                      QdrantStoreError, point_id)

SERVING_KEY = "fashion_search_serving"
# 2: the parser's vocabulary holds the usage shares per article type; 3: the catalog facts (`catalog_facts`)
SERVING_FORMAT = 3
VSC = "vsc"  # the named vector of the item descriptions VSC compares with
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
    table = pd.DataFrame([payload_row(p, attributes) for p in rows],
                         columns=["id", "title", "image_path", *attributes])
    for field in extra:
        table[field] = [str(p.get(field, "")) for p in rows]
    return table


def catalog_facts(items: pd.DataFrame, attributes: Sequence[str], type_attribute: str = "articleType") -> dict:
    """The serving record's catalog part, from the item table in catalog order: each filter attribute's display
    values (first appearance first, "" for items without one), the folders of the photos, and the first photo of
    each article type (catalog order)."""
    paths = items["image_path"].astype(str) if "image_path" in items else pd.Series([""] * len(items), dtype=str)
    photos = {}
    if type_attribute in items:
        firsts = items[paths.to_numpy() != ""].drop_duplicates(type_attribute)
        photos = {str(t): str(p) for t, p in zip(firsts[type_attribute], firsts["image_path"])}
    return {"attribute_values": {a: [str(v) for v in items[a].unique()] for a in attributes if a in items},
            "image_folders": sorted({str(PurePath(p).parent) for p in paths if p}), "example_photos": photos}


class StoreCatalog:
    """The serving record and the per-request reads of an open collection (see the module docstring); the engine's
    `index` when it serves from the collection alone. Nothing per item is held: `ids` (`StoreIds`) and
    `catalog_values` (`StoreValues`) read items through `lookup`, a bounded cache of the rows hits brought.
    `has_item_texts`: the collection holds `title` vectors."""

    vectors = None  # no vector is held in process
    items = None  # nor an item table

    def __init__(self, store: QdrantStore, record: dict):
        self.store, self.record = store, record
        self.lookup = ItemLookup(store, int(record["num_items"]))
        self.ids = StoreIds(self.lookup)
        self.catalog_values = StoreValues(self.lookup, record["attribute_values"])
        self.image_folders = tuple(record["image_folders"])
        self.example_photos = dict(record["example_photos"])
        self.manifest = {"model": dict(store.metadata.get("model", {})), "store": store.name,
                         "text_encoder": store.metadata.get("text_encoder")}
        self.has_item_texts = store.metadata.get("text_encoder") is not None
        self.text_embeddings = None

    def __len__(self) -> int:
        return self.lookup.num_items

    def __repr__(self) -> str:
        return f"StoreCatalog(collection={self.store.name!r}, num_items={len(self)})"

    @classmethod
    def read(cls, store: QdrantStore) -> "StoreCatalog":
        """Read the serving record (checked); no point is read."""
        everything = store.client.get_collection(store.name).config.metadata or {}
        record = check_serving_record(store, everything)
        if not record.get("num_items"):
            raise QdrantStoreError(f"collection {store.name!r} holds no items; rebuild it with the build command")
        return cls(store, record)

    def rows(self, positions: Sequence[int]) -> list[dict]:
        """What a result shows of the items at `positions` (id, title, image path, each filter attribute's display
        value, "" when it has none): the rows the hits brought, else one request."""
        return [payload_row(row, self.store.attributes) for row in self.lookup.rows_at(positions)]

    def mask(self, filters: Mapping | None) -> None:
        """No mask: the collection filters (`ValueError` for an unknown key, as `CatalogIndex.mask`)."""
        return self.catalog_values.mask(filters)

    def count(self, filters: Mapping | None = None, exclude_ids=()) -> int:
        """How many items `filters` allow, `exclude_ids` left out."""
        return self.lookup.count(filters, exclude_ids)

    def random_row(self, filters: Mapping | None = None) -> dict | None:
        """What a result shows of a random item `filters` allow (None when none is)."""
        row = self.lookup.random_row(filters)
        return None if row is None else payload_row(row, self.store.attributes)

    def group_keys(self, positions: Sequence[int]) -> list:
        """The near-duplicate group of each item at `positions` (`group_key`: a `group` payload or the position)."""
        return [group_key(row) for row in self.lookup.rows_at(positions)]

    def members(self, keys: Sequence, filters: Mapping | None = None, exclude_ids=()) -> dict:
        """The allowed positions (catalog order) of each group of `keys` that has a `group` payload."""
        return self.lookup.members([k for k in keys if isinstance(k, str)], filters, exclude_ids)


def payload_row(payload: Mapping, attributes: Sequence[str]) -> dict:
    """A point's payload as a row of `payload_items`' table."""
    return {"id": str(payload["id"]), "title": str(payload.get("title", "")),
            "image_path": str(payload.get("image_path", "")),
            **{a: str((payload.get("attributes") or {}).get(a, "")) for a in attributes}}


__all__ = ["SERVING_FORMAT", "SERVING_KEY", "StoreCatalog", "VSC", "catalog_facts", "check_serving_record",
           "payload_items", "payload_row", "scroll_points", "write_groups", "write_serving_record"]
