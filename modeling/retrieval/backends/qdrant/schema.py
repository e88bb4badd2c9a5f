"""The collection's schema: its vectors, storage, quantization and payload indexes (`create_collection`), and a
point's payload (`item_payload`). Written once for the build (`ingest.build_collection`) and the benchmarks."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from modeling.data.catalog import ATTRIBUTES
from modeling.retrieval.backends.qdrant.store import (DESCRIPTION_FIELD, GROUP_FIELD, KEYWORD_FIELDS, KEYWORDS,
                                                      METADATA_KEY, TITLE, VISUAL, QdrantClient, QdrantConfig, fold,
                                                      models)


def create_payload_indexes(client: "QdrantClient", name: str) -> None:
    """Keyword indexes on the filter attributes, `id` and `group`; an integer index on `position` (the engine reads
    items by catalog position); a full-text index (word tokenizer, lower-cased) on the item description. (Local
    mode records them and warns that it does not use them: silenced.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
        for field_name in KEYWORD_FIELDS:
            client.create_payload_index(name, field_name, field_schema=models.PayloadSchemaType.KEYWORD, wait=True)
        client.create_payload_index(name, "position", field_schema=models.PayloadSchemaType.INTEGER, wait=True)
        client.create_payload_index(name, DESCRIPTION_FIELD, wait=True, field_schema=models.TextIndexParams(
            type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, lowercase=True))


def create_collection(client: "QdrantClient", name: str, config: QdrantConfig, visual_dim: int,
                      text_dim: int | None, metadata: dict, extra_vectors: Mapping[str, int] | None = None) -> None:
    """Create a collection with the vectors, storage and quantization of `config` and every payload index;
    `extra_vectors`: more named dense vectors (cosine), e.g. `vsc` (the item descriptions VSC compares with)."""
    vectors = {VISUAL: models.VectorParams(size=int(visual_dim), distance=models.Distance.COSINE,
                                           on_disk=config.on_disk)}
    if text_dim:
        vectors[TITLE] = models.VectorParams(size=int(text_dim), distance=models.Distance.COSINE,
                                             on_disk=config.on_disk)
    for vector, size in (extra_vectors or {}).items():
        vectors[vector] = models.VectorParams(size=int(size), distance=models.Distance.COSINE, on_disk=config.on_disk)
    quantization = (models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
        type=models.ScalarType.INT8, quantile=config.quantile, always_ram=True)) if config.quantization else None)
    client.create_collection(
        name, vectors_config=vectors,
        sparse_vectors_config={KEYWORDS: models.SparseVectorParams(
            index=models.SparseIndexParams(on_disk=config.on_disk))},
        shard_number=int(config.shard_number), replication_factor=int(config.replication_factor),
        on_disk_payload=config.on_disk, quantization_config=quantization, metadata={METADATA_KEY: metadata})
    create_payload_indexes(client, name)


def item_payload(row: Mapping, position: int, description: str) -> dict:
    """A point's payload: display fields, case-folded filter attributes, their display values, the description,
    the catalog `split` and `group` when the row has them."""
    attributes = {a: str(row.get(a) or "") for a in ATTRIBUTES if a in row}
    payload: dict[str, Any] = {
        "id": str(row["id"]), "position": int(position), "title": str(row.get("title") or ""),
        "image_path": str(row.get("image_path") or ""), DESCRIPTION_FIELD: description,
        "attributes": {a: v for a, v in attributes.items() if v},
        **{a: fold(v) for a, v in attributes.items()},
    }
    if row.get("split"):
        payload["split"] = str(row["split"])
    if row.get(GROUP_FIELD):
        payload[GROUP_FIELD] = str(row[GROUP_FIELD])
    return payload



__all__ = ["create_collection", "create_payload_indexes", "item_payload"]
