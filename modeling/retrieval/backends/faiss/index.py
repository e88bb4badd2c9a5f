# coding=utf-8
"""The on-disk catalogue index: `CatalogIndex` (the `VectorIndex` of `vectors.py`, the item table, the item-text
embeddings and a manifest naming the model that built it; `IndexMismatchError` when another model reads it)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from modeling.retrieval.backends.faiss import compressed
from modeling.retrieval.common.ranking import filter_mask
from modeling.retrieval.backends.faiss.vectors import (EXACT_THRESHOLD, FILTERED_EF_MAX_SCALE,  # noqa: F401
                                                       FILTERED_EXACT_FRACTION, FILTERED_EXACT_MIN, IndexFormatError,
                                                       VectorIndex, _as_matrix, l2_normalise)
from modeling.utils.io import staged_folder

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.parquet"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
MANIFEST_FILE = "manifest.json"
REBUILD_HINT = (
    "re-embed the catalogue with the current model and write a new index with "
    "`CatalogIndex.build(embeddings, items, model_info=...).save(directory)`"
)


class IndexMismatchError(ValueError):
    """The index was built by a different embedding model than the one that will query it."""


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

    @property
    def has_item_texts(self) -> bool:
        """Whether the index holds the item-text embeddings that fused text search reads."""
        return self.text_embeddings is not None

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
        return filter_mask(self.items, filters, self._folded)
