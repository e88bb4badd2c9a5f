"""The Qdrant backend (optional extra `qdrant`): `ranking` (`QdrantBackend`: ranking requests rendered as
prefetches + formula), `store` (`QdrantConfig`, the collection schema, `QdrantStore`:
filtered, fused and boosted ranking server-side) and `ingest` (the streaming, sharded, resumable build of a
collection)."""
