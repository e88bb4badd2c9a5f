# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""Catalog data layer.

Every catalog source goes through one normalisation path and comes out as a `datasets.Dataset` with canonical
columns, in this order:

- `id` (string), `image` (`datasets.Image(mode="RGB")`, decodes to an RGB `PIL.Image.Image`), `image_path`
  (absolute path of the image file, or "" when the image is embedded as bytes), `title` (string, "" if missing),
  `split` (string, "train" when the source has no split information);
- then each of `ATTRIBUTES` that the source has, as strings ("" for missing values, never None or NaN);
- then any other source column: scalars as strings (so CSV, JSON and Parquet give the same schema), nested
  columns as they are.

Supported sources:

- a folder holding `metadata.csv`, `metadata.jsonl` or `metadata.parquet`, with image paths relative to it;
- a single `.csv`, `.jsonl`/`.json` or `.parquet` file, with image paths relative to its folder (Parquet may embed
  the image bytes);
- a Hub dataset repository on disk (`data/*.parquet` and a dataset card), read by `load_dataset` like the Hub;
- a plain image folder without a metadata file (`root/<class>/<image>` or flat), read with `imagefolder`;
- anything else is taken as a Hugging Face Hub dataset id.

Source column names are mapped to canonical names with `DEFAULT_COLUMN_MAP`, updated by a caller's `column_map`.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from modeling.data.images import image_problem
from modeling.data.sources import CatalogError, load_source
from modeling.data.text import as_text
from modeling.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)

ATTRIBUTES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
CATALOG_COLUMNS = ("id", "image", "image_path", "title", "split")

# Source column name -> canonical name. Keys match case-insensitively. A mapping is used only when its canonical
# column is still free, in this order, after exact canonical names: a source with both `articleType` and
# `category` keeps `articleType`, and `name` becomes the title only when there is no `productDisplayName`.
DEFAULT_COLUMN_MAP: dict[str, str] = {
    # Ids.
    "product_id": "id",
    "item_id": "id",
    "sku": "id",
    # Image file paths (relative to the catalog folder) or embedded images.
    "image_path": "image",
    "img": "image",
    "img_path": "image",
    "image_file": "image",
    "file_name": "image",  # the `imagefolder` metadata convention
    "filename": "image",
    "filepath": "image",
    "file_path": "image",
    "path": "image",
    # Titles: product names first, then generic text columns of captioning datasets.
    "productDisplayName": "title",  # Kaggle "Fashion Product Images" styles.csv
    "product_name": "title",
    "product_title": "title",
    "name": "title",
    "caption": "title",
    "text": "title",
    # Splits.
    "partition": "split",
    # Attributes.
    "sex": "gender",
    "master_category": "masterCategory",
    "sub_category": "subCategory",
    "article_type": "articleType",
    "product_type": "articleType",
    "category": "articleType",
    "label": "articleType",  # class sub-folders of an image folder, and most classification datasets
    "base_colour": "baseColour",
    "base_color": "baseColour",
    "basecolor": "baseColour",
    "colour": "baseColour",
    "color": "baseColour",
    "occasion": "usage",
}

_INPUT_COLUMNS = ("id", "image", "title", "split", *ATTRIBUTES)


# --------------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------------


def plan_columns(columns: Sequence[str], column_map: Mapping[str, str] | None) -> dict[str, str]:
    """Returns `{output column: source column}` for every column kept: canonical ones, then extras."""
    plan: dict[str, str] = {}

    def claim(target: str, source: str) -> None:
        if target not in plan and source not in plan.values():
            plan[target] = source

    for source, target in (column_map or {}).items():
        if target == "image_path":
            raise ValueError("`image_path` is computed by the loader; map the image column to 'image' instead.")
        if source in columns:
            claim(target, source)
        else:
            logger.warning("column_map names column %r, which the catalog does not have: %s.", source, columns)
    # Exact canonical names first, so that `title` wins over a `Title` or a default such as `name`.
    for name in _INPUT_COLUMNS:
        if name in columns:
            claim(name, name)
    by_lower = {}
    for column in columns:
        by_lower.setdefault(column.lower(), column)
    for source, target in [*((name, name) for name in _INPUT_COLUMNS), *DEFAULT_COLUMN_MAP.items()]:
        if source.lower() in by_lower:
            claim(target, by_lower[source.lower()])
    if "image" not in plan:
        raise CatalogError(
            f"The catalog has no image column (columns: {list(columns)}). Name the column holding image paths or "
            "bytes with column_map={'<column>': 'image'}."
        )
    for column in columns:
        # An unused column named like a computed one (e.g. a second `image_path`) would clash with it.
        if column not in plan.values() and column not in CATALOG_COLUMNS:
            plan[column] = column
    return plan


def _is_scalar(feature: Any) -> bool:
    return isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype not in ("binary", "large_binary")
    )


def _is_image_storage(feature: Any) -> bool:
    """Whether a column can hold images: paths, encoded bytes, or a `{bytes, path}` struct."""
    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string", "binary", "large_binary")
    return isinstance(feature, dict) and bool({"bytes", "path"} & set(feature))


def image_ref(value: Any, root: str | None) -> tuple[dict[str, Any] | None, str]:
    """Turns an image cell into `datasets.Image` storage and the absolute local path ("" when embedded)."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data, path = bytes(value), None
    else:
        data, path = None, as_text(value)
    if data:
        return {"bytes": data, "path": path or None}, ""
    if not path:
        return None, ""
    if root and "://" not in path and not os.path.isabs(path):
        path = os.path.normpath(os.path.join(root, path))
    return {"bytes": None, "path": path}, path if os.path.isabs(path) else ""


def cell_text(value: Any, label_names: list[str] | None) -> str:
    """A metadata cell as text: class labels by name, everything else through `as_text`."""
    if label_names is None:
        return as_text(value)
    return label_names[value] if value is not None and value >= 0 else ""


def _normalise_batch(images: list[Any], *columns: list[Any], spec: dict[str, Any]) -> dict[str, list[Any]]:
    refs = [image_ref(value, spec["root"]) for value in images]
    size = len(refs)
    batch = {
        "id": [""] * size,
        "image": [ref for ref, _ in refs],
        "image_path": [path for _, path in refs],
        "title": [""] * size,
        "split": [spec["split"]] * size,
    }
    for (target, label_names), values in zip(spec["text"], columns):
        batch[target] = [cell_text(value, label_names) for value in values]
    return batch


def _normalise(part: datasets.Dataset, split_name: str, plan: dict[str, str], root: str | None) -> datasets.Dataset:
    features = part.features
    image_column = plan["image"]
    if isinstance(features[image_column], datasets.Image):
        part = part.cast_column(image_column, datasets.Image(decode=False))
    elif not _is_image_storage(features[image_column]):
        raise CatalogError(
            f"Column {image_column!r} cannot hold images (type {features[image_column]}); expected paths, bytes or "
            "an Image feature."
        )
    text = {
        target: source
        for target, source in plan.items()
        if target != "image" and (target in _INPUT_COLUMNS or _is_scalar(features[source]))
    }
    nested = {target: source for target, source in plan.items() if target != "image" and target not in text}
    spec = {
        "root": root,
        "split": split_name,
        "text": [
            (target, features[source].names if isinstance(features[source], datasets.ClassLabel) else None)
            for target, source in text.items()
        ],
    }
    string = datasets.Value("string")
    output_features = datasets.Features(
        {
            "id": string,
            "image": datasets.Image(decode=False),
            "image_path": string,
            "title": string,
            "split": string,
            **{target: string for target in text},
            **{source: features[source] for source in nested.values()},
        }
    )
    # In memory: `datasets` fingerprints module-level functions by name, so an on-disk cache of this map would
    # survive changes to this file. The normalised metadata is small.
    normalised = part.map(
        _normalise_batch,
        batched=True,
        input_columns=[image_column, *text.values()],
        remove_columns=[column for column in part.column_names if column not in nested.values()],
        fn_kwargs={"spec": spec},
        features=output_features,
        keep_in_memory=True,
        desc="Normalising catalog",
    )
    return normalised.rename_columns({source: target for target, source in nested.items() if source != target})


def _in_splits(values: list[Any], wanted: Sequence[str]) -> list[bool]:
    return [as_text(value) in wanted for value in values]


def _select_splits(
    parts: datasets.DatasetDict, plans: dict[str, dict[str, str]], wanted: list[str]
) -> dict[str, datasets.Dataset]:
    selected, available = {}, set()
    for name, part in parts.items():
        split_column = plans[name].get("split")
        if split_column is None:
            available.add(name)
            if name in wanted:
                selected[name] = part
        else:
            available.update(as_text(value) for value in part.unique(split_column))
            part = part.filter(
                _in_splits, batched=True, input_columns=split_column, fn_kwargs={"wanted": wanted}, keep_in_memory=True
            )
            if len(part):
                selected[name] = part
    if not selected:
        raise CatalogError(f"The catalog has no rows in split {wanted}; available splits: {sorted(available)}.")
    return selected


def _head(parts: dict[str, datasets.Dataset], max_items: int) -> dict[str, datasets.Dataset]:
    kept = {}
    for name, part in parts.items():
        if max_items <= 0:
            break
        kept[name] = part.select(range(min(max_items, len(part))))
        max_items -= len(kept[name])
    return kept


def _derived_ids(ids: list[str], refs: list[dict[str, Any] | None]) -> list[str]:
    """Fills missing ids with the image file stem (`<folder>/<stem>` where stems repeat) or the row number."""
    paths = [ref["path"] if ref and ref.get("path") else "" for ref in refs]
    stems = [Path(path).stem for path in paths]
    if len(set(filter(None, stems))) < len(list(filter(None, stems))):
        # Class folders often reuse file names (`shirts/0001.jpg`, `shoes/0001.jpg`).
        stems = ["/".join(Path(path).with_suffix("").parts[-2:]) if path else "" for path in paths]
    return [item_id or stem or str(index) for index, (item_id, stem) in enumerate(zip(ids, stems))]


def _image_problem(ref: dict[str, Any] | None, check: bool) -> str:
    if ref is None:
        return "missing image path"
    if not check:
        return ""
    if ref["bytes"] is None:
        return image_problem(ref["path"])
    return image_problem(io.BytesIO(ref["bytes"]), "Embedded image")


def _drop_unreadable(dataset: datasets.Dataset, check_images: bool) -> tuple[datasets.Dataset, list[dict[str, str]]]:
    problems: list[str] = []
    # Pillow releases the GIL while decoding, so threads speed up the check of many small files.
    with ThreadPoolExecutor() as pool:
        for batch in dataset.select_columns(["image"]).iter(batch_size=1024):
            problems.extend(pool.map(_image_problem, batch["image"], [check_images] * len(batch["image"])))
    bad = [index for index, problem in enumerate(problems) if problem]
    if not bad:
        return dataset, []
    ids, paths = dataset["id"], dataset["image_path"]
    skipped = [{"id": ids[index], "image_path": paths[index], "error": problems[index]} for index in bad]
    bad_set = set(bad)
    kept = dataset.select([index for index in range(len(dataset)) if index not in bad_set])
    return kept.flatten_indices(keep_in_memory=True), skipped


def parse_splits(split: str | Sequence[str] | None) -> list[str]:
    """Split names from one name, a comma-separated list (`"val,test"`) or a sequence; blanks are dropped."""
    names = split.split(",") if isinstance(split, str) else list(split or [])
    return [name.strip() for name in names if name.strip()]


def image_cache_dir() -> Path:
    """Where embedded catalog images are written as files for display (`FASHION_IMAGE_CACHE`)."""
    default = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).parent / "fashion-search" / "images"
    return Path(os.environ.get("FASHION_IMAGE_CACHE", default))


def materialise_images(dataset: datasets.Dataset, folder: str | os.PathLike | None = None) -> datasets.Dataset:
    """Give every row an image file: rows whose image is embedded (`image_path` "") get it written once, under its
    own bytes, to `folder/<catalog fingerprint>/<id>.<format>`, and that path. A web page (the app's gallery) shows
    files, not bytes. Returns the dataset (the same object when nothing was embedded)."""
    paths = list(dataset["image_path"])
    todo = [i for i, path in enumerate(paths) if not path]
    if not todo:
        return dataset
    root = Path(folder or image_cache_dir()) / dataset._fingerprint
    root.mkdir(parents=True, exist_ok=True)
    raw = dataset.select_columns(["id", "image"]).cast_column("image", datasets.Image(decode=False))
    for i in tqdm(todo, desc="writing catalog images", unit="img", disable=len(todo) < 1000):
        row = raw[i]
        data = (row["image"] or {}).get("bytes")
        if not data:
            continue
        try:
            fmt = (Image.open(io.BytesIO(data)).format or "png").lower()
        except (UnidentifiedImageError, OSError):
            continue  # reported when the catalog was loaded with check_images
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(row["id"]))
        path = root / f"{safe}.{'jpg' if fmt == 'jpeg' else fmt}"
        if not path.exists():
            atomic_write_bytes(path, data)
        paths[i] = str(path)
    order = dataset.column_names
    return dataset.remove_columns("image_path").add_column("image_path", paths).select_columns(order)


def load_catalog_with_report(
    source: str | os.PathLike,
    *,
    split: str | Sequence[str] | None = None,
    column_map: dict[str, str] | None = None,
    check_images: bool = True,
    max_items: int | None = None,
    revision: str | None = None,
) -> tuple[datasets.Dataset, list[dict[str, str]]]:
    """Loads a catalog like `load_catalog` and also returns the rows it skipped.

    Returns:
        The catalog, and one `{"id", "image_path", "error"}` dict per row dropped for a missing or (with
        `check_images`) unreadable image.
    """
    if max_items is not None and max_items < 0:
        raise ValueError(f"max_items must be >= 0, got {max_items}.")
    parts, root = load_source(source, revision)
    plans = {name: plan_columns(part.column_names, column_map) for name, part in parts.items()}
    wanted = parse_splits(split)
    selected = _select_splits(parts, plans, wanted) if wanted else dict(parts)
    if max_items is not None:
        selected = _head(selected, max_items)
    normalised = [_normalise(part, name, plans[name], root) for name, part in selected.items()]
    try:
        dataset = datasets.concatenate_datasets(normalised) if len(normalised) != 1 else normalised[0]
    except ValueError as error:
        raise CatalogError(f"The splits of '{source}' have different columns ({error}); use split=.") from error

    ids = list(dataset["id"])
    if "" in ids:
        dataset = dataset.remove_columns("id").add_column("id", _derived_ids(ids, list(dataset["image"])))
    dataset, skipped = _drop_unreadable(dataset, check_images)
    if skipped:
        logger.warning(
            "Skipped %d catalog rows of '%s' with a missing or unreadable image (ids: %s%s).",
            len(skipped),
            source,
            ", ".join(row["id"] for row in skipped[:5]),
            ", ..." if len(skipped) > 5 else "",
        )
    if len(dataset) == 0:
        raise CatalogError(f"The catalog '{source}' has no usable rows.")
    if len(set(dataset["id"])) < len(dataset):
        logger.warning("The catalog '%s' has duplicate ids; use row positions to identify items.", source)

    present = set(dataset.column_names)
    order = [*CATALOG_COLUMNS, *(name for name in ATTRIBUTES if name in present)]
    order += [name for name in dataset.column_names if name not in order]
    return dataset.select_columns(order).cast_column("image", datasets.Image(mode="RGB")), skipped


def load_catalog(
    source: str | os.PathLike,
    *,
    split: str | Sequence[str] | None = None,
    column_map: dict[str, str] | None = None,
    check_images: bool = True,
    max_items: int | None = None,
    revision: str | None = None,
) -> datasets.Dataset:
    """Loads a product catalog into a `datasets.Dataset` with the canonical columns described in this module.

    Args:
        source: a catalog folder (with `metadata.csv`/`.jsonl`/`.parquet`, or a plain image folder), a `.csv`,
            `.jsonl` or `.parquet` file, or a Hugging Face Hub dataset id.
        split: keep only this split, several splits, or a comma-separated list (`"val,test"`).
        column_map: source column -> output column, applied before (and winning over) `DEFAULT_COLUMN_MAP`,
            e.g. `{"image_224": "image"}` to use the larger images of the reference catalog.
        check_images: decode every image once and drop rows whose image is missing or unreadable. Rows without
            an image path are dropped either way. Dropped rows are logged; `load_catalog_with_report` returns them.
        max_items: keep only the first `max_items` rows after split filtering (before dropping unreadable images).
        revision: Hub dataset revision (ignored for local sources).

    Raises:
        CatalogError: the source does not exist, cannot be read, has no image column or no usable rows.
    """
    dataset, _ = load_catalog_with_report(
        source, split=split, column_map=column_map, check_images=check_images, max_items=max_items, revision=revision
    )
    return dataset
