"""The vector backends by name: what `--vector-store` / `FashionSearchEngine.load(vector_store=...)` choose from.

Each entry names the module of the backend. An in-process backend's module has `open_backend(index, **options)`,
the factory `LocalCatalog -> VectorBackend` for a loaded catalog index (None: the engine's own index). A store that
holds the catalog itself (the Qdrant entries) has none: the engine serves from its collection alone, without an
index folder (`modeling.retrieval.engine.stored`, `open_store`). Modules load on first use (Qdrant is an optional
extra).
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
    module = import_module(BACKENDS[name])
    if not hasattr(module, "open_backend"):
        raise ValueError(f"the {name} vector store serves from its own collection, not from a local index: "
                         f"load the engine with vector_store={name!r} (modeling.retrieval.engine.stored)")
    return module.open_backend(index, name=name, **options)


__all__ = ["BACKENDS", "BACKEND_NAMES", "open_backend"]
