# coding=utf-8
"""`VectorIndex`: the FAISS index over L2-normalised embeddings (exact, HNSW or compressed), `l2_normalise`.

Index choice
------------
Embeddings are L2-normalised, so cosine similarity is an inner product (`METRIC_INNER_PRODUCT`).

* Below `EXACT_THRESHOLD` (50,000) items the index is an exact `IndexFlatIP`. A brute-force scan of a fashion
  catalogue of that size takes a few milliseconds per query, so there is nothing to gain from an approximation
  and exact results keep evaluation numbers reproducible.
* At or above it the index is `IndexHNSWFlat` (M=32, efConstruction=200, efSearch=128 by default), up to
  `COMPRESSED_THRESHOLD` (1M) items, where `compressed.CompressedIndex` (OPQ + IVF-PQ codes) takes over. HNSW was
  chosen over IVF/PQ because it needs no training step (the index can be built from any number of vectors, with
  no k-means whose quality depends on the sample), it keeps the full float32 vectors so recall is high, and it
  supports filtered search natively: an `IDSelector` passed through `SearchParametersHNSW(sel=...)` restricts
  the graph search itself, so `k` results come back whenever `k` items are allowed.

Measured on this project's CPU box (2 cores, faiss 1.15) with the defaults on 20,000 clustered synthetic 64-d
vectors (200 Gaussian clusters), 500 queries, k=10, against exact search
(`tests/retrieval/backends/faiss/test_index.py`, which asserts >= 0.95 for both): recall@10 = 0.9998 unfiltered and
1.0000 with a random 30% filter; the build takes ~1.4 s on an idle machine and the 500 queries ~20-60 ms.

Filtered HNSW loses recall as the filter gets narrow, because most graph neighbours are rejected (measured
at efSearch=128: ~0.93-0.97 at 5% allowed, ~0.77-0.86 at 2%, ~0.5-0.7 at 0.5%). Two mitigations:

* when fewer than `max(FILTERED_EXACT_MIN, FILTERED_EXACT_FRACTION * ntotal)` items are allowed, the search is
  exact over just those vectors (reconstructed from the HNSW storage: a few milliseconds for thousands of rows);
* above that, efSearch is scaled by `1 / allowed_fraction` (at most `FILTERED_EF_MAX_SCALE` times), which
  measured 0.99-1.00 recall@10 down to 5% allowed (20k and 100k vectors).
"""

from __future__ import annotations

import math
import os

import faiss
import numpy as np

from modeling.retrieval.backends.faiss import compressed

# Batches of at least this many queries go through BLAS. faiss 1.15 defaults to 128,000 (it used to be 20), which
# leaves batched evaluation on the 4-5x slower one-query-at-a-time kernel.
faiss.cvar.distance_compute_blas_threshold = 20

EXACT_THRESHOLD = 50_000
FILTERED_EXACT_MIN = 4_096
FILTERED_EXACT_FRACTION = 0.05
FILTERED_EF_MAX_SCALE = 4


class IndexFormatError(ValueError):
    """The index directory is missing, incomplete or not a catalogue index of a supported format."""

def l2_normalise(x: np.ndarray) -> np.ndarray:
    """
    Returns a float32 copy of `x` with every row (last axis) scaled to unit L2 norm.

    Rows with zero norm stay zero instead of becoming NaN, so a blank embedding simply never matches.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (num_items, dim), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


class VectorIndex:
    """
    Inner-product (cosine) index over L2-normalised vectors: exact `IndexFlatIP` for small collections, HNSW
    for large ones (see the module docstring).

    Args:
        dim (`int`):
            Dimension of the vectors.
        exact_threshold (`int`, *optional*, defaults to `EXACT_THRESHOLD`):
            Collections with at least this many vectors get an HNSW index in [`~VectorIndex.build`].
        compressed_threshold (`int`, *optional*, defaults to `compressed.COMPRESSED_THRESHOLD`):
            Collections with at least this many vectors get a [`CompressedIndex`] instead.
        hnsw_m (`int`, *optional*, defaults to 32):
            Graph degree of the HNSW index.
        ef_construction (`int`, *optional*, defaults to 200):
            HNSW candidate list size while building.
        ef_search (`int`, *optional*, defaults to 128):
            HNSW candidate list size while searching (raised to `k` when `k` is larger).
    """

    def __init__(
        self,
        dim: int,
        *,
        exact_threshold: int = EXACT_THRESHOLD,
        compressed_threshold: int = compressed.COMPRESSED_THRESHOLD,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
    ):
        for name, value in [
            ("dim", dim),
            ("exact_threshold", exact_threshold), ("compressed_threshold", compressed_threshold),
            ("hnsw_m", hnsw_m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ]:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.dim = int(dim)
        self.exact_threshold = int(exact_threshold)
        self.compressed_threshold = int(compressed_threshold)
        self.hnsw_m = int(hnsw_m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self._index: faiss.Index = faiss.IndexFlatIP(self.dim)

    @classmethod
    def build(cls, embeddings: np.ndarray, **kwargs) -> "VectorIndex":
        """
        Normalises `embeddings` (num_items, dim) and indexes them, flat or HNSW depending on their number.
        Keyword arguments are those of [`VectorIndex`].
        """
        embeddings = _as_matrix(embeddings, "embeddings")
        index = cls(embeddings.shape[1], **kwargs)
        if len(embeddings) >= index.compressed_threshold:
            index._index = compressed.CompressedIndex.build(l2_normalise(embeddings))
            return index
        if len(embeddings) >= index.exact_threshold:
            hnsw = faiss.IndexHNSWFlat(index.dim, index.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = index.ef_construction
            # Stored in the file, so a read index searches with the same default.
            hnsw.hnsw.efSearch = index.ef_search
            index._index = hnsw
        index._index.add(l2_normalise(embeddings))
        return index

    @property
    def kind(self) -> str:
        """`"hnsw"`, `"flat"` or `"ivfpq"` (a [`CompressedIndex`])."""
        if isinstance(self._index, compressed.CompressedIndex):
            return compressed.COMPRESSED_KIND
        return "hnsw" if isinstance(self._index, faiss.IndexHNSW) else "flat"

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(kind={self.kind!r}, ntotal={self.ntotal}, dim={self.dim})"

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Returns the `k` most similar items for each query.

        Args:
            queries (`np.ndarray` of shape `(num_queries, dim)` or `(dim,)`):
                Query embeddings; normalised here. A single 1-D query is treated as one row.
            k (`int`):
                Number of results per query.
            allowed (`np.ndarray`, *optional*):
                Restricts the results to some items: a boolean mask of shape `(ntotal,)` or an array of item
                positions. The restriction is applied inside the search, so `k` results come back whenever at
                least `k` items are allowed.

        Returns:
            `tuple[np.ndarray, np.ndarray]`: cosine scores (float32, `(num_queries, k)`, descending) and item
            positions (int64, `(num_queries, k)`). Slots without a result hold score `-inf` and position `-1`.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (num_queries, {self.dim}) or ({self.dim},), got {queries.shape}")
        queries = l2_normalise(queries)

        mask = None if allowed is None else self._allowed_mask(allowed)
        num_allowed = self.ntotal if mask is None else int(mask.sum())
        if num_allowed == 0:
            scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
            indices = np.full((len(queries), k), -1, dtype=np.int64)
        elif self.kind == compressed.COMPRESSED_KIND:
            scores, indices = self._index.search(queries, k, mask)
        elif num_allowed == self.ntotal:
            scores, indices = self._index.search(queries, k, params=self._params(k, None, 1.0))
        elif self.kind == "hnsw" and num_allowed < max(FILTERED_EXACT_MIN, FILTERED_EXACT_FRACTION * self.ntotal):
            scores, indices = self._search_exact_subset(queries, k, np.flatnonzero(mask))
        else:
            # A bitmap costs ntotal / 8 bytes and an O(1) membership test, however many items are allowed.
            bitmap = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(bitmap)
            scores, indices = self._index.search(
                queries, k, params=self._params(k, selector, num_allowed / self.ntotal)
            )
        # faiss pads with -FLT_MAX; -inf can never be mistaken for a real (if terrible) score.
        scores[indices < 0] = -np.inf
        return scores, indices

    def _params(self, k: int, selector: faiss.IDSelector | None, allowed_fraction: float) -> faiss.SearchParameters:
        if self.kind == "flat":
            return faiss.SearchParameters(sel=selector)
        # A graph search returns at most efSearch results, and a filter rejects most of the candidates it visits.
        scale = min(1.0 / allowed_fraction, FILTERED_EF_MAX_SCALE)
        params = faiss.SearchParametersHNSW(efSearch=math.ceil(max(self.ef_search, k) * scale))
        if selector is not None:
            params.sel = selector
        return params

    def _search_exact_subset(
        self, queries: np.ndarray, k: int, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        subset = faiss.IndexFlatIP(self.dim)
        subset.add(self.reconstruct_batch(positions))
        scores, local = subset.search(queries, k)
        indices = np.where(local >= 0, positions[np.maximum(local, 0)], -1)
        return scores, indices.astype(np.int64)

    def reconstruct(self, position: int) -> np.ndarray:
        """The stored (normalised) float32 vector of the item at `position`, shape `(dim,)`."""
        return self.reconstruct_batch(np.array([position]))[0]

    def reconstruct_batch(self, positions: np.ndarray) -> np.ndarray:
        """The stored (normalised) float32 vectors of the items at `positions`, shape `(len(positions), dim)`."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if positions.min() < 0 or positions.max() >= self.ntotal:
            raise ValueError(f"positions must lie in [0, {self.ntotal})")
        return self._index.reconstruct_batch(positions)

    def _allowed_mask(self, allowed: np.ndarray) -> np.ndarray:
        allowed = np.asarray(allowed)
        if allowed.dtype == bool:
            if allowed.shape != (self.ntotal,):
                raise ValueError(f"a boolean `allowed` mask must have shape ({self.ntotal},), got {allowed.shape}")
            return allowed
        if allowed.ndim != 1 or (allowed.size and not np.issubdtype(allowed.dtype, np.integer)):
            raise ValueError("`allowed` must be a boolean mask or a 1-D array of integer item positions")
        if allowed.size and (allowed.min() < 0 or allowed.max() >= self.ntotal):
            raise ValueError(f"`allowed` positions must lie in [0, {self.ntotal})")
        mask = np.zeros(self.ntotal, dtype=bool)
        mask[allowed.astype(np.int64)] = True
        return mask

    @property
    def nbytes(self) -> int:
        """Size of the serialised faiss index (what `write` puts on disk)."""
        return compressed.index_nbytes(self._index)

    def write(self, path: str | os.PathLike) -> None:
        """Writes the faiss index (vectors and HNSW graph, efSearch included) to `path` (and the vectors file of a
        compressed index beside it)."""
        compressed.write_index(self._index, path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "VectorIndex":
        """Reads an index written by [`~VectorIndex.write`]."""
        try:
            index = compressed.read_index(path)
        except (RuntimeError, OSError, ValueError) as e:
            raise IndexFormatError(f"cannot read faiss index {path}: {e}") from e
        if index.metric_type != faiss.METRIC_INNER_PRODUCT or not isinstance(
            index, (faiss.IndexFlat, faiss.IndexHNSWFlat, compressed.CompressedIndex)
        ):
            raise IndexFormatError(
                f"{path} holds a {type(index).__name__} (metric {index.metric_type}); expected an inner-product "
                "IndexFlat or IndexHNSWFlat"
            )
        if isinstance(index, faiss.IndexHNSWFlat):
            vectors = cls(
                index.d,
                hnsw_m=index.hnsw.nb_neighbors(1),
                ef_construction=index.hnsw.efConstruction,
                ef_search=index.hnsw.efSearch,
            )
        else:
            vectors = cls(index.d)
        vectors._index = index
        return vectors


__all__ = ["EXACT_THRESHOLD", "IndexFormatError", "VectorIndex", "l2_normalise"]
