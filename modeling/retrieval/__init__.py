"""Retrieval, in rooms (imports go downwards only, kept by `lint-imports`):

    engine          the search engine (`FashionSearchEngine`: one `RankRequest` per query to its `VectorBackend`),
                    settings, query encoding, scoring terms, near-duplicate collapsing, VSC, re-ranking, batch
                    helpers, index building (`python -m modeling.retrieval.engine.build_index`)
    understanding   query parsing (`QueryParser`), the synonym lexicon, learned intent heads, intent boosts
    backends        where vectors live, each a `VectorBackend`: `faiss` (numpy ranking; exact, HNSW, compressed) and
                    `qdrant` (rendered ranking, store, streaming ingest); `registry` names them
    common          the query and result types, the backend interface (`ranking`), the word tokenizer and BM25

`understanding` and `backends` are independent of each other. Serving (request contract, batching, JSON routes,
the model registry) is the layer above: `modeling.serving`. Importing the package loads nothing heavy."""
