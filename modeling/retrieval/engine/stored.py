"""The engine served from a Qdrant collection alone: the model folder and the collection, no local index folder.

Build (`build_store`, what `python -m modeling.retrieval.engine.build_index --vector-store qdrant|qdrant-edge` runs):
the streamed build of `modeling.retrieval.backends.qdrant.ingest`, plus
- a `vsc` named vector: the sentence embedding of each item's VSC description (`item_vsc_text`, source "title");
- once every batch is in (`finalize_collection`, main process): the near-duplicate groups (`duplicate_groups` over
  each title shared by several items, their `visual` vectors read back) written into the `group` payload; the
  query-intent heads fitted on the collection's `title` vectors of the training split; and the serving record
  (the parser's vocabulary, the heads, the VSC vector, the catalog facts: attribute values, photo folders, an
  example photo per type) in the collection metadata, tied to the model fingerprint and the catalog signature
  (`modeling.retrieval.backends.qdrant.catalog`).

Load (`load_store_parts`): open the collection, read the record (no point), and give the engine a `StoreCatalog`
as its index: rankings, neighbours, item vectors, VSC vectors, what a result shows, near-duplicate groups and
filters come from the collection per query; the engine holds nothing per item.
"""

from __future__ import annotations

import base64
import logging
from collections import defaultdict
from functools import partial

import numpy as np

from modeling.data.text import normalise_title
from modeling.encoders.loading import embedding_dim, has_text_tower, model_fingerprint
from modeling.retrieval.backends.qdrant.catalog import (SERVING_FORMAT, SERVING_KEY, VSC, StoreCatalog,
                                                        catalog_facts, payload_items, scroll_points, write_groups,
                                                        write_serving_record)
from modeling.retrieval.backends.qdrant.ingest import build_collection, create_payload_indexes
from modeling.retrieval.backends.qdrant.ranking import QdrantBackend, open_store
from modeling.retrieval.backends.qdrant.store import METADATA_KEY, TITLE, VISUAL, QdrantStoreError, point_id
from modeling.retrieval.engine.dedup import duplicate_groups
from modeling.retrieval.engine.vsc import VSCScorer, item_vsc_text
from modeling.retrieval.understanding.heads import IntentHeads, fit_intent_heads
from modeling.retrieval.understanding.parser import INTENT_ATTRIBUTES
from modeling.retrieval.understanding.vocabulary import catalog_vocabulary

logger = logging.getLogger(__name__)

VSC_SOURCE = "title"  # the description the `vsc` vector holds (VSCScorer's default source)
HEADS_MAX_ITEMS = 200_000  # the intent heads are fitted on at most this many items' title vectors
RETRIEVE_CHUNK = 1024


def vsc_description(row) -> str:
    return item_vsc_text(row, VSC_SOURCE)


def build_store(model, processor, catalog, config, *, model_info, sentence_encoder=None, client=None, **options):
    """`build_collection` with the `vsc` vector and `finalize_collection` (see the module docstring). A collection
    already up to date whose serving record is of an older format gets the finishing step again (groups, heads,
    record; the main process), without encoding anything."""
    report = build_collection(model, processor, catalog, config, model_info=model_info,
                              sentence_encoder=sentence_encoder, named_texts={VSC: vsc_description},
                              finalize=finalize_collection, client=client, **options)
    state = options.get("state")
    if report.up_to_date and (state is None or state.is_main_process):
        store = client or config.connect()
        try:
            metadata = store.get_collection(report.collection).config.metadata or {}
            if (metadata.get(SERVING_KEY) or {}).get("format_version") != SERVING_FORMAT:
                logger.info("refreshing the serving record of %s (format %s)", report.collection, SERVING_FORMAT)
                finalize_collection(store, report.collection, metadata)
        finally:
            if client is None:
                store.close()
    return report


def near_duplicate_groups(client, name: str, items) -> dict[str, list[str]]:
    """Group id (its first item's id) -> the item ids of every near-duplicate group of two or more items: the
    engine's `duplicate_groups`, per title shared by several items (groups never span two titles)."""
    by_title: dict[str, list[int]] = defaultdict(list)
    for position, title in enumerate(items["title"].map(normalise_title)):
        if title:
            by_title[title].append(position)
    shared = [positions for positions in by_title.values() if len(positions) > 1]
    ids = items["id"].tolist()
    wanted = [ids[p] for positions in shared for p in positions]
    vectors = {}
    for start in range(0, len(wanted), RETRIEVE_CHUNK):
        chunk = wanted[start:start + RETRIEVE_CHUNK]
        found = {str(p.id): p for p in client.retrieve(name, ids=[point_id(i) for i in chunk],
                                                       with_vectors=[VISUAL], with_payload=False)}
        for item_id in chunk:
            vector = np.asarray(found[point_id(item_id)].vector[VISUAL], np.float32)
            vectors[item_id] = vector / max(float(np.linalg.norm(vector)), 1e-12)
    groups: dict[str, list[str]] = {}
    for positions in shared:
        members = [ids[p] for p in positions]
        roots = duplicate_groups(["t"] * len(members), np.stack([vectors[i] for i in members]))
        for root in set(roots.tolist()):
            group = [members[j] for j in np.flatnonzero(roots == root)]
            if len(group) > 1:
                groups[members[root]] = group
    return groups


def read_back(client, name: str, attributes, with_titles: bool):
    """The built collection's item table (catalog order, with `split`) and, when `with_titles`, the `title`
    vectors of at most `HEADS_MAX_ITEMS` items (None for the others)."""
    rows, vectors = [], []
    for point in scroll_points(client, name, ("id", "position", "title", "image_path", "attributes", "split"),
                               TITLE if with_titles else None):
        rows.append(point.payload)
        keep = with_titles and len(rows) <= HEADS_MAX_ITEMS
        vectors.append(np.asarray(point.vector[TITLE], np.float32) if keep else None)
    order = np.argsort([int(p["position"]) for p in rows], kind="stable")
    return payload_items([rows[i] for i in order], attributes, ("split",)), [vectors[i] for i in order]


def finalize_collection(client, name: str, metadata: dict) -> None:
    """The build's last step (main process): groups, intent heads, serving record (see the module docstring)."""
    identity = metadata[METADATA_KEY]
    text_info = identity.get("text_encoder")
    create_payload_indexes(client, name)  # idempotent: a collection of an older build gets the newer indexes
    items, titles = read_back(client, name, identity.get("attributes", ()), text_info is not None)
    groups = near_duplicate_groups(client, name, items)
    write_groups(client, name, groups)
    logger.info("%d near-duplicate groups written into the group payload", len(groups))
    heads = None
    if text_info is not None:
        kept = np.array([v is not None for v in titles])
        heads = fit_intent_heads(np.stack([v for v in titles if v is not None]), items[kept].reset_index(drop=True))
        heads.num_items = len(items)
    write_serving_record(client, name, {
        "model_fingerprint": identity["model"]["fingerprint"], "catalog_signature": identity["catalog"]["signature"],
        "num_items": len(items), "parser": catalog_vocabulary(items, INTENT_ATTRIBUTES), "groups": len(groups),
        "intent_heads": base64.b64encode(heads.to_bytes()).decode("ascii") if heads is not None else None,
        "vsc": {"vector": VSC, "source": VSC_SOURCE, "encoder": text_info["name"]}
        if VSC in identity.get("named_texts", ()) else None, **catalog_facts(items, identity.get("attributes", ()))})


def load_store_parts(model, encoder, model_dir, *, config, client=None, vsc_source: str | None = "title",
                     vector_store: str = "qdrant") -> dict:
    """The engine constructor's keywords for a collection (`index` a `StoreCatalog`); `QdrantStoreError` when the
    collection does not fit the model or lacks its serving record."""
    info = {"name": str(model_dir), "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
    text_dim = encoder.dim if encoder is not None and has_text_tower(model) else None
    store = open_store(vector_store, config, info, text_dim=text_dim, client=client)
    try:
        catalog = StoreCatalog.read(store)
    except Exception:
        if client is None:
            store.close()
        raise
    record = catalog.record
    heads = None
    if record.get("intent_heads") and catalog.has_item_texts and text_dim is not None:
        heads = IntentHeads.from_bytes(base64.b64decode(record["intent_heads"]))
    vsc = None
    if encoder is not None and vsc_source:
        if not record.get("vsc") or record["vsc"]["source"] != vsc_source or record["vsc"]["encoder"] != encoder.name:
            raise QdrantStoreError(f"collection {store.name!r} holds no VSC vectors of {vsc_source!r} descriptions by "
                                   f"{encoder.name}; serve without VSC or rebuild the collection")
        ids, using = catalog.ids, record["vsc"].get("vector", VSC)
        vsc = VSCScorer(encoder, catalog, vsc_source,
                        lookup=lambda positions: store.item_vectors(ids.take(positions), using=using))
    return {"index": catalog, "vsc": vsc, "intent_heads": heads, "parser_vocabulary": record["parser"],
            "backend": partial(QdrantBackend, store, catalog.lookup)}


__all__ = ["HEADS_MAX_ITEMS", "build_store", "finalize_collection", "load_store_parts", "near_duplicate_groups"]
