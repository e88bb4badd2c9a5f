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

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from modeling.utils.io import atomic_write_bytes


logger = logging.getLogger(__name__)

ATTRIBUTES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
CATALOG_COLUMNS = ("id", "image", "image_path", "title", "split")
ITEM_TEXT_MODES = ("title", "caption", "both")

# Larger images are refused: a small compressed file can declare enough pixels to exhaust memory when decoded.
MAX_IMAGE_PIXELS = 50_000_000

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
_TABLE_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


class CatalogError(ValueError):
    """A catalog source cannot be used: it does not exist, cannot be read, has no image column or no rows."""


class ImageError(ValueError):
    """An image cannot be used: it is missing, unreadable, corrupt, not an image or too large."""


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels."
        )


def open_image(source: str | io.BytesIO, what: str) -> Image.Image:
    """Opens and fully decodes an image file or buffer, turning every failure into an `ImageError`."""
    try:
        with Image.open(source) as image:
            # The size comes from the header, so the check runs before any pixel is decoded.
            _check_size(image.width, image.height, what)
            image.load()
            return image
    except ImageError:
        raise
    except FileNotFoundError as error:
        raise ImageError(f"{what} does not exist.") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{what} is not an image file Pillow can read.") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own guard (the warning only arrives here when warnings are turned into errors).
        raise ImageError(f"{what} is too large to decode safely: {error}") from error
    except Exception as error:
        # Truncated or corrupt data surfaces as OSError, SyntaxError, ValueError, struct.error... depending on the
        # codec; for a caller they all mean the same thing.
        raise ImageError(f"{what} is corrupt or truncated ({type(error).__name__}: {error}).") from error


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ImageError(f"An array of shape {array.shape} is not an image (expected HxW, HxWx3 or HxWx4).")
    _check_size(array.shape[1], array.shape[0], "The image array")
    if array.dtype != np.uint8:
        # Float images follow the [0, 1] convention of tensors; anything else is clipped to the 8-bit range.
        if array.dtype == bool or np.issubdtype(array.dtype, np.floating):
            array = np.nan_to_num(array.astype(np.float32)) * 255
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    # Pillow converts 16/32-bit and float images to 8 bits by clipping, which turns most 16-bit photos white.
    array = np.asarray(image, dtype=np.float32)
    peak = float(array.max(initial=0))
    if image.mode == "F" and peak <= 1:
        array = array * 255
    elif image.mode.startswith("I;16") or peak > 255:
        array = array / 257
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    # Phone photos are often stored sideways with an orientation tag.
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_depth_to_l(image)
    if image.has_transparency_data:
        # Transparent product cut-outs belong on the white background of shop photos, not on black.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"Cannot convert a {image.mode} image to RGB: {error}") from error


def load_image(image: str | os.PathLike | bytes | Image.Image | np.ndarray | Mapping[str, Any]) -> Image.Image:
    """Loads an image from any usual form and returns it as RGB.

    Args:
        image: a file path, the encoded bytes of an image file, a `PIL.Image.Image`, a NumPy array (HxW, HxWx3 or
            HxWx4; floats are taken to be in [0, 1]) or a `datasets` image dict (`{"bytes": ..., "path": ...}`).

    Returns:
        A decoded RGB `PIL.Image.Image`, rotated upright following its EXIF orientation. Transparent images are
        composited on white; greyscale, palette, CMYK and 16-bit images are converted.

    Raises:
        ImageError: the input is missing, unreadable, corrupt, not an image, or larger than `MAX_IMAGE_PIXELS`.
        TypeError: the input is of none of the types above.
    """
    if isinstance(image, Mapping) and ("bytes" in image or "path" in image):
        image = image.get("bytes") or image.get("path")
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, "The image")
        try:
            image.load()  # a lazily opened image may still fail to decode
        except Exception as error:
            raise ImageError(f"The image is corrupt or truncated ({type(error).__name__}: {error}).") from error
    elif isinstance(image, np.ndarray):
        image = _array_to_image(image)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        image = open_image(io.BytesIO(image), "The image data")
    elif isinstance(image, (str, os.PathLike)):
        image = open_image(os.fspath(image), f"Image file '{os.fspath(image)}'")
    else:
        raise TypeError(f"Cannot load an image from {type(image).__name__}; pass a path, bytes, PIL image or array.")
    return _to_rgb(image)


# --------------------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------------------


def as_text(value: Any) -> str:
    """Renders a cell as stripped text; missing values become ""."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        # Integer columns with gaps are read as floats by pandas and JSON readers: 15970.0 means "15970".
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def normalise_title(text: str) -> str:
    """Lower-cases a title and collapses its whitespace, so that identical titles compare equal."""
    return " ".join(str(text).lower().split())


def attribute_caption(row: Mapping[str, Any]) -> str:
    """Builds the template caption `lower("<baseColour> <articleType> for <gender>[, <usage>]")`.

    This is the rule behind the `attr_caption` column of the reference catalog. Empty parts are left out without
    leaving stray spaces or separators.
    """
    colour, article, gender, usage = (as_text(row.get(k)) for k in ("baseColour", "articleType", "gender", "usage"))
    caption = f"{colour} {article}"
    if gender:
        caption += f" for {gender}"
    if usage:
        caption += f", {usage}"
    return " ".join(caption.lower().split()).strip(" ,")


def item_text(row: Mapping[str, Any], mode: str = "title") -> str:
    """Returns the text that describes a catalog item.

    Args:
        row: a catalog row (or any mapping with `title`, `attr_caption` and attribute keys).
        mode: `"title"` for the title, falling back to the caption when the title is empty; `"caption"` for
            `attr_caption` when present, else `attribute_caption(row)`; `"both"` for `"<title>. <caption>"`.
    """
    if mode not in ITEM_TEXT_MODES:
        raise ValueError(f"Unknown item text mode {mode!r}; use one of {ITEM_TEXT_MODES}.")
    title = as_text(row.get("title"))
    caption = as_text(row.get("attr_caption")) or attribute_caption(row)
    if mode == "caption" or not title:
        return caption
    if mode == "title":
        return title
    return f"{title.rstrip('. ')}. {caption}"


def item_description(row: Mapping) -> str:
    """What the text matcher reads of an item: its title, attribute caption and season."""
    title = str(row.get("title") or "").strip()
    caption = str(row.get("attr_caption") or "").strip() or attribute_caption(row)
    season = str(row.get("season") or "").strip().lower()
    parts = [p for p in (title, caption) if p]
    text = ". ".join(parts)
    return f"{text}, {season}" if season else text


def filter_values(dataset: datasets.Dataset) -> dict[str, list[str]]:
    """Returns the sorted distinct non-empty values of each attribute column of `dataset` (e.g. for dropdowns)."""
    return {
        attribute: sorted(value for value in dataset.unique(attribute) if value)
        for attribute in ATTRIBUTES
        if attribute in dataset.column_names
    }


# --------------------------------------------------------------------------------------------------------------
# Loading sources
# --------------------------------------------------------------------------------------------------------------


def _load_table(file: Path) -> datasets.DatasetDict:
    builder = _TABLE_BUILDERS[file.suffix.lower()]
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
            f"'{folder}' has no metadata file ({', '.join(_METADATA_FILES)}) and cannot be read as an image folder: "
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


def _load_source(source: str | os.PathLike, revision: str | None) -> tuple[datasets.DatasetDict, str | None]:
    """Loads the raw source; returns its splits and the folder that relative image paths are resolved against."""
    path = Path(source).expanduser()
    if path.is_dir():
        for name in _METADATA_FILES:
            if (path / name).is_file():
                return _load_table(path / name), str(path.resolve())
        if any(path.glob("data/*.parquet")):  # a Hub dataset repository on disk (e.g. a `modeling.hub.push` export)
            return _load_parquet_repo(path), None
        return _load_image_folder(path), None
    if path.is_file():
        if path.suffix.lower() not in _TABLE_BUILDERS:
            raise CatalogError(f"Unsupported catalog file '{path}': expected one of {', '.join(_TABLE_BUILDERS)}.")
        return _load_table(path), str(path.resolve().parent)
    text = os.fspath(source)
    # A Hub id is "name" or "owner/name"; anything that looks like a file system path is reported as missing.
    if path.is_absolute() or text.startswith((".", "~")) or path.suffix.lower() in _TABLE_BUILDERS:
        raise CatalogError(f"Catalog source '{text}' does not exist.")
    return _load_hub(text, revision), None


# --------------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------------


def _plan_columns(columns: Sequence[str], column_map: Mapping[str, str] | None) -> dict[str, str]:
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


def _image_ref(value: Any, root: str | None) -> tuple[dict[str, Any] | None, str]:
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


def _cell_text(value: Any, label_names: list[str] | None) -> str:
    if label_names is None:
        return as_text(value)
    return label_names[value] if value is not None and value >= 0 else ""


def _normalise_batch(images: list[Any], *columns: list[Any], spec: dict[str, Any]) -> dict[str, list[Any]]:
    refs = [_image_ref(value, spec["root"]) for value in images]
    size = len(refs)
    batch = {
        "id": [""] * size,
        "image": [ref for ref, _ in refs],
        "image_path": [path for _, path in refs],
        "title": [""] * size,
        "split": [spec["split"]] * size,
    }
    for (target, label_names), values in zip(spec["text"], columns):
        batch[target] = [_cell_text(value, label_names) for value in values]
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
    what = f"Image file '{ref['path']}'" if ref["bytes"] is None else "Embedded image"
    try:
        open_image(ref["path"] if ref["bytes"] is None else io.BytesIO(ref["bytes"]), what)
    except ImageError as error:
        return str(error)
    return ""


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


def _parse_splits(split: str | Sequence[str] | None) -> list[str]:
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
    parts, root = _load_source(source, revision)
    plans = {name: _plan_columns(part.column_names, column_map) for name, part in parts.items()}
    wanted = _parse_splits(split)
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
