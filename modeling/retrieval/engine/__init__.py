"""The search engine, above understanding and the backends: `search` (`FashionSearchEngine`: one `RankRequest` per
query to its `VectorBackend`), exact batch rankings (`exact_ranking`), scoring terms (`signals`), near-duplicate
groups and the collapse of a backend's rows (`dedup`), VSC (`vsc`), the query embedding cache (`cache`), hybrid
re-ranking (`rerank`), assembling an engine's parts (`loading`) and building a model's index for either backend
(`build_index`: `python -m modeling.retrieval.engine.build_index`)."""
