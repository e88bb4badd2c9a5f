"""The in-process FAISS backend: `ranking` (`FaissBackend`: ranking requests in numpy), `vectors` (`VectorIndex`:
exact `IndexFlatIP` or HNSW), `index` (`CatalogIndex`: the index folder of items, vectors and manifest) and
`compressed` (OPQ + IVF-PQ codes with an exact re-rank, past a million
items). Imports nothing heavy beyond faiss and numpy."""
