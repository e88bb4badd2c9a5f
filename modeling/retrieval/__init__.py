"""Retrieval, in rooms (imports go downwards only, kept by `lint-imports`):

    engine          the search engine (`FashionSearchEngine`), ranking on either backend, scoring terms, near-duplicate
                    groups, VSC, re-ranking, index building (`python -m modeling.retrieval.engine.build_index`)
    understanding   query parsing (`QueryParser`), the synonym lexicon, learned intent heads, intent boosts
    backends        where vectors live: `faiss` (exact, HNSW, compressed) and `qdrant` (store, streaming ingest)
    common          the query and result types, the word tokenizer and BM25

`understanding` and `backends` are independent of each other. Serving (request contract, batching, JSON routes,
the model registry) is the layer above: `modeling.serving`. Importing the package loads nothing heavy."""
