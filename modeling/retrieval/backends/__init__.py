"""Where the vectors live: `faiss` (the in-process index: exact, HNSW and compressed IVF-PQ) and `qdrant` (a Qdrant
collection: its schema and store, and the streaming build that fills it). Independent of query understanding."""
