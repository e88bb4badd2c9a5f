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
from pathlib import PurePath

import numpy as np
import pandas as pd

from modeling.retrieval.backends.qdrant.store import (COMPLETE_KEY, GROUP_FIELD, METADATA_KEY, QdrantStore,
                                                      QdrantStoreError, point_id)
from modeling.retrieval.common.items import CompactIds, ItemCodes
from modeling.utils.memory import trim_heap

SERVING_KEY = "fashion_search_serving"
SERVING_FORMAT = 2  # 2: the parser's vocabulary holds the usage shares per article type
VSC = "vsc"  # the named vector of the item descriptions VSC compares with
ITEM_FIELDS = ("id", "position", "image_path", "attributes", GROUP_FIELD)  # what `StoreCatalog.read` scrolls
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


class StoreCatalog:
    """The compact item state, groups and serving record of an open collection (see the module docstring); the
    engine's `index` when it serves from the collection alone. Per item it holds the id (`CompactIds`), the filter
    attributes' codes (`ItemCodes`) and the group (int32): a few bytes, no Python object. Titles and image paths stay
    in the collection: `rows` fetches what a result shows for the positions asked. `has_item_texts`: the collection
    holds `title` vectors."""

    vectors = None  # no vector is held in process
    items = None  # nor an item table

    def __init__(self, store: QdrantStore, ids: CompactIds, codes: ItemCodes, groups: np.ndarray, record: dict,
                 image_folders: Sequence[str] = ()):
        self.store, self.ids, self.codes, self.groups, self.record = store, ids, codes, groups, record
        self.image_folders = tuple(image_folders)
        self.manifest = {"model": dict(store.metadata.get("model", {})), "store": store.name,
                         "text_encoder": store.metadata.get("text_encoder")}
        self.has_item_texts = store.metadata.get("text_encoder") is not None
        self.text_embeddings = None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"StoreCatalog(collection={self.store.name!r}, num_items={len(self)})"

    @classmethod
    def read(cls, store: QdrantStore) -> "StoreCatalog":
        """Read the record (checked) and every point's id, position, group and filter attributes (no vector, no
        title): one scroll of the collection, each page turned into arrays at once."""
        everything = store.client.get_collection(store.name).config.metadata or {}
        record = check_serving_record(store, everything)
        attributes = store.attributes
        coders: dict[str, dict[str, int]] = {a: {} for a in attributes}
        parts: dict[str, list[np.ndarray]] = {"position": [], "id": [], "group": [], **{a: [] for a in attributes}}
        folders: set[str] = set()
        page: list = []
        for point in scroll_points(store.client, store.name, ITEM_FIELDS):
            page.append(point.payload)
            if len(page) == SCROLL_PAGE:
                _add_page(parts, coders, folders, page)
                page = []
        _add_page(parts, coders, folders, page)
        if not any(len(part) for part in parts["position"]):
            raise QdrantStoreError(f"collection {store.name!r} holds no items; rebuild it with the build command")
        order = np.argsort(np.concatenate(parts["position"]), kind="stable")
        ids = CompactIds(np.concatenate(parts["id"])[order])
        groups = np.arange(len(order), dtype=np.int32)
        named = np.concatenate(parts["group"])[order]
        positions = ids.lookup(named)
        grouped = (named != b"") & (positions >= 0)
        groups[grouped] = positions[grouped]
        codes = ItemCodes.in_catalog_order({a: np.concatenate(parts[a])[order] for a in attributes},
                                           {a: list(coders[a]) for a in attributes})
        del parts, page
        trim_heap()  # the pages' payloads, freed, would otherwise stay in the heap
        return cls(store, ids, codes, groups, record, sorted(folders))

    def rows(self, positions: Sequence[int]) -> list[dict]:
        """What a result shows of the items at `positions` (id, title, image path, each filter attribute's display
        value, "" when it has none), read from their payloads: one request."""
        item_ids = [self.ids[int(p)] for p in positions]
        if not item_ids:
            return []
        points = self.store.client.retrieve(self.store.name, ids=[point_id(i) for i in item_ids],
                                            with_payload=["id", "title", "image_path", "attributes"])
        found = {str(p.payload["id"]): p.payload for p in points}
        missing = [i for i in item_ids if i not in found]
        if missing:
            raise QdrantStoreError(f"collection {self.store.name!r} no longer holds item {missing[0]!r}: the "
                                   "collection changed under the running engine; restart it")
        return [payload_row(found[i], self.store.attributes) for i in item_ids]

    def mask(self, filters: Mapping | None) -> np.ndarray | None:
        """As `CatalogIndex.mask`, over the filter attributes (the store filters on nothing else)."""
        return self.codes.mask(filters)


def _add_page(parts: dict, coders: dict, folders: set, page: list) -> None:
    """One scroll page of payloads into `parts` (arrays per field) and the attributes' value -> code maps."""
    if not page:
        return
    parts["position"].append(np.array([int(p["position"]) for p in page], dtype=np.int64))
    parts["id"].append(np.array([str(p["id"]).encode("utf-8") for p in page], dtype=np.bytes_))
    parts["group"].append(np.array([str(p.get(GROUP_FIELD) or "").encode("utf-8") for p in page], dtype=np.bytes_))
    for attribute, coder in coders.items():
        values = [str((p.get("attributes") or {}).get(attribute, "")) for p in page]
        parts[attribute].append(np.array([coder.setdefault(v, len(coder)) for v in values], dtype=np.int32))
    folders.update(str(PurePath(p["image_path"]).parent) for p in page if p.get("image_path"))


def payload_row(payload: Mapping, attributes: Sequence[str]) -> dict:
    """A point's payload as a row of `payload_items`' table."""
    return {"id": str(payload["id"]), "title": str(payload.get("title", "")),
            "image_path": str(payload.get("image_path", "")),
            **{a: str((payload.get("attributes") or {}).get(a, "")) for a in attributes}}


__all__ = ["SERVING_FORMAT", "SERVING_KEY", "StoreCatalog", "VSC", "check_serving_record", "payload_items",
           "payload_row", "scroll_points",
           "write_groups", "write_serving_record"]
