"""The search engine, above understanding and the backends: `search` (`FashionSearchEngine`), the ranking over the
in-process index (`index_ranker`) and through a Qdrant store (`store_ranker`), exact batch rankings
(`exact_ranking`), scoring terms (`signals`), near-duplicate groups (`dedup`), VSC (`vsc`), the query embedding
cache (`cache`), hybrid re-ranking (`rerank`), assembling an engine's parts (`loading`) and building a model's index
for either backend (`build_index`: `python -m modeling.retrieval.engine.build_index`)."""
