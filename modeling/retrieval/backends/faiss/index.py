# coding=utf-8
"""Persistent FAISS index over L2-normalised embeddings, plus the on-disk catalogue around it.

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

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from modeling.retrieval.backends.faiss import compressed
from modeling.utils.io import staged_folder


# Batches of at least this many queries go through BLAS. faiss 1.15 defaults to 128,000 (it used to be 20), which
# leaves batched evaluation on the 4-5x slower one-query-at-a-time kernel.
faiss.cvar.distance_compute_blas_threshold = 20

EXACT_THRESHOLD = 50_000
FILTERED_EXACT_MIN = 4_096
FILTERED_EXACT_FRACTION = 0.05
FILTERED_EF_MAX_SCALE = 4

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.parquet"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
MANIFEST_FILE = "manifest.json"
REBUILD_HINT = (
    "re-embed the catalogue with the current model and write a new index with "
    "`CatalogIndex.build(embeddings, items, model_info=...).save(directory)`"
)


class IndexFormatError(ValueError):
    """The index directory is missing, incomplete or not a catalogue index of a supported format."""


class IndexMismatchError(ValueError):
    """The index was built by a different embedding model than the one that will query it."""


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


def _check_model_info(info: Any, name: str) -> dict:
    if not isinstance(info, dict):
        raise ValueError(f"{name} must be a dict with keys 'name', 'fingerprint' and 'embedding_dim'")
    for key in ("name", "fingerprint"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise ValueError(f"{name}[{key!r}] must be a non-empty string, got {info.get(key)!r}")
    dim = info.get("embedding_dim")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"{name}['embedding_dim'] must be a positive integer, got {dim!r}")
    return {**info, "embedding_dim": int(dim)}


def _describe_model(info: dict) -> str:
    return f"{info.get('name')!r} (fingerprint {info.get('fingerprint')}, dim {info.get('embedding_dim')})"


class CatalogIndex:
    """
    A searchable catalogue stored as a directory:

    * `index.faiss`: the [`VectorIndex`] over the item (image) embeddings;
    * `items.parquet`: one row per item, aligned with the index (an `id` string column plus any metadata such as
      title, image path and attributes);
    * `text_embeddings.npy` (optional): float32 `(num_items, text_dim)` embeddings of the item texts;
    * `manifest.json`: format version, creation time, faiss version, item count, index parameters and the
      identity (name, fingerprint, dimension) of the model that produced the embeddings.

    Use [`~CatalogIndex.build`] and [`~CatalogIndex.save`] to create one, [`~CatalogIndex.load`] to open it.
    """

    def __init__(
        self,
        vectors: VectorIndex,
        items: pd.DataFrame,
        manifest: dict,
        text_embeddings: np.ndarray | None = None,
    ):
        if vectors.ntotal != len(items):
            raise ValueError(f"the index holds {vectors.ntotal} vectors but there are {len(items)} items")
        if text_embeddings is not None and len(text_embeddings) != len(items):
            raise ValueError(f"there are {len(text_embeddings)} text embeddings but {len(items)} items")
        self.vectors = vectors
        self.items = items
        self.manifest = manifest
        self.text_embeddings = text_embeddings
        # Case-folded filter columns, computed on first use: filters run on every query.
        self._folded: dict[str, pd.Series] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        model = self.manifest.get("model", {}).get("name")
        return f"{self.__class__.__name__}(num_items={len(self)}, kind={self.vectors.kind!r}, model={model!r})"

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        items: pd.DataFrame | list[dict],
        *,
        model_info: dict,
        text_embeddings: np.ndarray | None = None,
        text_encoder_info: dict | None = None,
        **index_kwargs,
    ) -> "CatalogIndex":
        """
        Indexes `embeddings` (one row per item, in the order of `items`).

        Args:
            embeddings (`np.ndarray` of shape `(num_items, dim)`):
                Item embeddings from the model described by `model_info`.
            items (`pd.DataFrame` or `list[dict]`):
                Item metadata with a unique string `id` column.
            model_info (`dict`):
                `{"name": str, "fingerprint": str, "embedding_dim": int}`; the fingerprint identifies the weights and
                config (computed by the caller) and is what [`~CatalogIndex.load`] checks against.
            text_embeddings (`np.ndarray` of shape `(num_items, text_dim)`, *optional*):
                Embeddings of the item texts, stored as float32.
            text_encoder_info (`dict`, *optional*):
                Identity of the text encoder; its `embedding_dim`, when given, must match `text_embeddings`.
            index_kwargs:
                Passed to [`VectorIndex.build`].
        """
        model_info = _check_model_info(model_info, "model_info")
        embeddings = _as_matrix(embeddings, "embeddings")
        if embeddings.shape[1] != model_info["embedding_dim"]:
            raise ValueError(
                f"embeddings have dimension {embeddings.shape[1]} but model_info says {model_info['embedding_dim']}"
            )
        items = pd.DataFrame(items).reset_index(drop=True)
        if len(items) != len(embeddings):
            raise ValueError(f"{len(items)} items but {len(embeddings)} embeddings")
        if "id" not in items.columns:
            raise ValueError(f"items need an 'id' column; got columns {list(items.columns)}")
        if not all(isinstance(column, str) for column in items.columns):
            raise ValueError(f"item column names must be strings, got {list(items.columns)}")
        if not all(isinstance(item_id, str) and item_id for item_id in items["id"]):
            raise ValueError("item ids must be non-empty strings")
        duplicated = items["id"][items["id"].duplicated()]
        if len(duplicated):
            raise ValueError(f"item ids must be unique; duplicated: {list(duplicated.unique()[:5])}")

        text_dim = None
        if text_embeddings is not None:
            text_embeddings = _as_matrix(text_embeddings, "text_embeddings")
            if len(text_embeddings) != len(items):
                raise ValueError(f"{len(text_embeddings)} text embeddings but {len(items)} items")
            text_dim = text_embeddings.shape[1]
            expected = (text_encoder_info or {}).get("embedding_dim")
            if expected is not None and expected != text_dim:
                raise ValueError(f"text embeddings have dimension {text_dim} but text_encoder_info says {expected}")

        vectors = VectorIndex.build(embeddings, **index_kwargs)
        index_params = {"kind": vectors.kind, "dim": vectors.dim, "metric": "inner_product"}
        if vectors.kind == "hnsw":
            index_params.update(
                hnsw_m=vectors.hnsw_m, ef_construction=vectors.ef_construction, ef_search=vectors.ef_search
            )
        elif vectors.kind == compressed.COMPRESSED_KIND:
            index_params.update(vectors._index.params)
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "faiss_version": faiss.__version__,
            "num_items": len(items),
            "index": index_params,
            "model": model_info,
            "text_encoder": text_encoder_info,
            "text_embedding_dim": text_dim,
        }
        # Fail now rather than halfway through `save` if the infos are not JSON-serialisable.
        json.dumps(manifest)
        return cls(vectors, items, manifest, text_embeddings)

    def save(self, directory: str | os.PathLike) -> Path:
        """
        Writes the catalogue to `directory` atomically: everything goes to a temporary sibling directory that then
        replaces `directory`. On failure the previous index (if any) is left untouched and no temporary directory
        remains. Returns the directory path.

        The swap is two renames (old index to a backup name, new one into place), so a concurrent reader can see
        no directory for an instant, but never a partially written one.
        """
        directory = Path(directory)
        with staged_folder(directory, MANIFEST_FILE, durable=True) as tmp:
            self.vectors.write(tmp / INDEX_FILE)
            self.items.to_parquet(tmp / ITEMS_FILE, index=False)
            if self.text_embeddings is not None:
                np.save(tmp / TEXT_EMBEDDINGS_FILE, self.text_embeddings, allow_pickle=False)
            (tmp / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=2), encoding="utf-8")
        return directory

    @staticmethod
    def read_manifest(directory: str | os.PathLike) -> dict:
        """Reads and validates `manifest.json` of the catalogue at `directory`."""
        directory = Path(directory)
        path = directory / MANIFEST_FILE
        if not directory.is_dir():
            raise IndexFormatError(f"no catalogue index at {directory} (directory does not exist); {REBUILD_HINT}")
        if not path.is_file():
            raise IndexFormatError(f"{directory} is not a catalogue index: {MANIFEST_FILE} is missing; {REBUILD_HINT}")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexFormatError(f"{path} is not valid JSON ({e}); {REBUILD_HINT}") from e
        if not isinstance(manifest, dict):
            raise IndexFormatError(f"{path} must hold a JSON object; {REBUILD_HINT}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"{path} has format_version {manifest.get('format_version')!r} but this code reads version "
                f"{FORMAT_VERSION}; {REBUILD_HINT}"
            )
        missing = [key for key in ("num_items", "index", "model", "text_embedding_dim") if key not in manifest]
        if missing:
            raise IndexFormatError(f"{path} lacks the keys {missing}; {REBUILD_HINT}")
        try:
            manifest["model"] = _check_model_info(manifest["model"], "manifest['model']")
        except ValueError as e:
            raise IndexFormatError(f"{path}: {e}; {REBUILD_HINT}") from e
        return manifest

    @classmethod
    def load(cls, directory: str | os.PathLike, *, expected_model: dict | None = None) -> "CatalogIndex":
        """
        Opens the catalogue at `directory`.

        Args:
            directory (`str` or `os.PathLike`):
                A directory written by [`~CatalogIndex.save`].
            expected_model (`dict`, *optional*):
                Identity of the model that will query the index (`name`, `fingerprint`, `embedding_dim`). When
                it has a fingerprint, the fingerprint decides (a renamed copy of the same weights still matches);
                otherwise the name does. `embedding_dim`, when given, must always match.

        Raises:
            [`IndexFormatError`]: the directory, a file or the manifest is missing or malformed.
            [`IndexMismatchError`]: the index was built by another model than `expected_model`.
        """
        directory = Path(directory)
        manifest = cls.read_manifest(directory)
        built_by = manifest["model"]
        if expected_model is not None:
            if expected_model.get("fingerprint") is not None:
                keys = ("fingerprint", "embedding_dim")
            else:
                keys = ("name", "embedding_dim")
            if any(expected_model.get(key) is not None and expected_model[key] != built_by[key] for key in keys):
                raise IndexMismatchError(
                    f"index at {directory} was built by model {_describe_model(built_by)}; the loaded model is "
                    f"{_describe_model(expected_model)}. Its embeddings are not comparable: rebuild the index with "
                    f"the loaded model ({REBUILD_HINT})."
                )

        files = [INDEX_FILE, ITEMS_FILE] + ([TEXT_EMBEDDINGS_FILE] if manifest["text_embedding_dim"] else [])
        missing = [name for name in files if not (directory / name).is_file()]
        if missing:
            raise IndexFormatError(f"catalogue index at {directory} is incomplete: missing {missing}; {REBUILD_HINT}")

        vectors = VectorIndex.read(directory / INDEX_FILE)
        try:
            items = pd.read_parquet(directory / ITEMS_FILE)
        except Exception as e:  # pyarrow raises several unrelated types for corrupt files
            raise IndexFormatError(f"cannot read {directory / ITEMS_FILE}: {e}; {REBUILD_HINT}") from e
        text_embeddings = None
        if manifest["text_embedding_dim"]:
            try:
                text_embeddings = np.load(directory / TEXT_EMBEDDINGS_FILE, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise IndexFormatError(f"cannot read {directory / TEXT_EMBEDDINGS_FILE}: {e}; {REBUILD_HINT}") from e

        problems = []
        if vectors.dim != built_by["embedding_dim"]:
            problems.append(f"index dimension {vectors.dim} != manifest embedding_dim {built_by['embedding_dim']}")
        if not vectors.ntotal == len(items) == manifest["num_items"]:
            problems.append(
                f"index holds {vectors.ntotal} vectors, items.parquet {len(items)} rows, "
                f"manifest {manifest['num_items']}"
            )
        if text_embeddings is not None and text_embeddings.shape != (len(items), manifest["text_embedding_dim"]):
            problems.append(
                f"text embeddings have shape {text_embeddings.shape}, expected "
                f"({len(items)}, {manifest['text_embedding_dim']})"
            )
        if "id" not in items.columns:
            problems.append("items.parquet has no 'id' column")
        if problems:
            raise IndexFormatError(
                f"inconsistent catalogue index at {directory}: {'; '.join(problems)}; {REBUILD_HINT}"
            )
        return cls(vectors, items, manifest, text_embeddings)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Searches the item embeddings; see [`VectorIndex.search`]. Positions index `self.items`."""
        return self.vectors.search(queries, k, allowed)

    def mask(self, filters: dict[str, str | list[str] | None] | None) -> np.ndarray | None:
        """
        Boolean mask over the items matching metadata `filters`, for `allowed=` in [`~CatalogIndex.search`].

        Each key is an item column; its value is a string or a list of strings (any of them may match), compared
        case-insensitively after stripping whitespace. All keys must match. Empty values (`None`, `""`, `[]`) are
        ignored, and `None` is returned when no filter is active.

        Raises:
            `ValueError`: a key with a non-empty value is not an item column.
        """
        wanted = {}
        for key, values in (filters or {}).items():
            if values is None or isinstance(values, (str, int, float)):
                values = [values]
            folded = {str(value).strip().casefold() for value in values if value is not None and str(value).strip()}
            if folded:
                wanted[key] = folded
        unknown = [key for key in wanted if key not in self.items.columns]
        if unknown:
            raise ValueError(f"unknown filter keys {unknown}; allowed keys are {list(self.items.columns)}")
        if not wanted:
            return None
        mask = np.ones(len(self.items), dtype=bool)
        for key, values in wanted.items():
            if key not in self._folded:
                self._folded[key] = self.items[key].astype("string").str.strip().str.casefold()
            mask &= self._folded[key].isin(values).to_numpy(dtype=bool, na_value=False)
        return mask
