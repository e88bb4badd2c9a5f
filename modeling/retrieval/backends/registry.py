"""The vector backends by name: what `--vector-store` / `FashionSearchEngine.load(vector_store=...)` choose from.

Each entry names the module whose `open_backend(index, *, name, config, encoder, client)` opens the backend for a
loaded catalog index (`name`: the entry's, for modules serving several) returns a factory `LocalCatalog -> VectorBackend` (the engine calls it with its local catalog), or
None for the engine's own in-process index. Adding a backend: one module implementing `VectorBackend` with its
`open_backend`, and one line here. Modules load on first use (Qdrant is an optional extra).
"""

from __future__ import annotations

from importlib import import_module

BACKENDS = {
    "faiss": "modeling.retrieval.backends.faiss.ranking",
    "qdrant": "modeling.retrieval.backends.qdrant.ranking",
    # the same collection schema and ranking request on the real Qdrant engine in process (qdrant-edge-py)
    "qdrant-edge": "modeling.retrieval.backends.qdrant.ranking",
}
BACKEND_NAMES = tuple(BACKENDS)


def open_backend(name: str, index, **options):
    """The backend factory of `name` for `index` (see the module docstring); `ValueError` for an unknown name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown vector store {name!r}; use one of {', '.join(BACKEND_NAMES)}")
    return import_module(BACKENDS[name]).open_backend(index, name=name, **options)


__all__ = ["BACKENDS", "BACKEND_NAMES", "open_backend"]
