"""Where the vectors live, each backend a `VectorBackend` (`modeling.retrieval.common.ranking`) that answers the
engine's `RankRequest`: `faiss` (the in-process index: exact, HNSW and compressed IVF-PQ; evaluates requests in
numpy) and `qdrant` (a Qdrant collection: its schema and store, the streaming build that fills it; renders requests
as prefetches + formula). `registry` names them. Independent of query understanding and of the engine."""
