# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""Reading a raw catalog source into `datasets` splits, before any normalisation (`modeling.data.catalog`).

A source is a folder with a metadata file (`METADATA_FILES`), a dataset repository on disk (`data/*.parquet`), a plain
image folder, a single table file (`TABLE_BUILDERS`) or a Hugging Face Hub dataset id.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import datasets

TABLE_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


class CatalogError(ValueError):
    """A catalog source cannot be used: it does not exist, cannot be read, has no image column or no rows."""


def _load_table(file: Path) -> datasets.DatasetDict:
    builder = TABLE_BUILDERS[file.suffix.lower()]
    kwargs = {}
    if builder == "csv":
        # Without string features pandas infers numbers: ids would become integers, or "15970.0" with gaps.
        with open(file, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        if not header:
            raise CatalogError(f"Catalog file '{file}' is empty.")
        kwargs["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    try:
        return datasets.load_dataset(builder, data_files=str(file), **kwargs)
    except Exception as error:
        raise CatalogError(f"Cannot read catalog file '{file}': {type(error).__name__}: {error}") from error


def _load_image_folder(folder: Path) -> datasets.DatasetDict:
    try:
        parts = datasets.load_dataset("imagefolder", data_dir=str(folder))
    except Exception as error:
        raise CatalogError(
            f"'{folder}' has no metadata file ({', '.join(METADATA_FILES)}) and cannot be read as an image folder: "
            f"{type(error).__name__}: {error}"
        ) from error
    # Class sub-folders are the only text such a catalog has, so the class name also serves as the title.
    for name, part in parts.items():
        label = part.features.get("label")
        if isinstance(label, datasets.ClassLabel) and "title" not in part.column_names:
            parts[name] = part.add_column("title", [label.int2str(index) for index in part["label"]])
    return parts


def _load_hub(source: str, revision: str | None) -> datasets.DatasetDict:
    try:
        loaded = datasets.load_dataset(source, revision=revision)
    except Exception as error:
        raise CatalogError(
            f"'{source}' is not an existing file or folder, and loading it as a Hugging Face Hub dataset failed "
            f"({type(error).__name__}: {error}). Check the path, or the dataset id and that the Hub is reachable "
            "(it is not when HF_HUB_OFFLINE=1 or without network)."
        ) from error
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def _load_parquet_repo(folder: Path) -> datasets.DatasetDict:
    """`data/<split>-*.parquet` of a dataset repository on disk, read by the parquet builder (whose cache is keyed by
    the files; `load_dataset(folder)` would reuse the cache of any earlier folder of the same name)."""
    files: dict[str, list[str]] = {}
    for file in sorted(folder.glob("data/*.parquet")):
        files.setdefault(file.name.split("-")[0], []).append(str(file))
    try:
        return datasets.load_dataset("parquet", data_files=files)
    except Exception as error:
        raise CatalogError(f"Cannot read the dataset at '{folder}': {type(error).__name__}: {error}") from error


def load_source(source: str | os.PathLike, revision: str | None) -> tuple[datasets.DatasetDict, str | None]:
    """Loads the raw source; returns its splits and the folder that relative image paths are resolved against."""
    path = Path(source).expanduser()
    if path.is_dir():
        for name in METADATA_FILES:
            if (path / name).is_file():
                return _load_table(path / name), str(path.resolve())
        if any(path.glob("data/*.parquet")):  # a Hub dataset repository on disk (e.g. a `modeling.hub.push` export)
            return _load_parquet_repo(path), None
        return _load_image_folder(path), None
    if path.is_file():
        if path.suffix.lower() not in TABLE_BUILDERS:
            raise CatalogError(f"Unsupported catalog file '{path}': expected one of {', '.join(TABLE_BUILDERS)}.")
        return _load_table(path), str(path.resolve().parent)
    text = os.fspath(source)
    # A Hub id is "name" or "owner/name"; anything that looks like a file system path is reported as missing.
    if path.is_absolute() or text.startswith((".", "~")) or path.suffix.lower() in TABLE_BUILDERS:
        raise CatalogError(f"Catalog source '{text}' does not exist.")
    return _load_hub(text, revision), None


__all__ = ["METADATA_FILES", "TABLE_BUILDERS", "CatalogError", "load_source"]
