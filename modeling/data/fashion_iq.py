# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""Fashion-IQ (Wu et al., CVPR 2021): caption triplets and the per-category retrieval galleries.

`load_fashion_iq` reads the caption files (reference ASIN, two human-written relative captions, target ASIN) and
`fashion_iq_gallery_with_report` the image split files. The images (Amazon photos named by ASIN) are not shipped
with the shared data, so without an `image_dir` only the captions are parsed. With one, every triplet (gallery id)
gets the paths of its images, and those whose images are missing or unreadable are skipped and reported, like
`load_catalog_with_report`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets

from modeling.data.images import image_problem
from modeling.data.sources import CatalogError

logger = logging.getLogger(__name__)

FASHION_IQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHION_IQ_SPLITS = ("train", "val", "test")
FASHION_IQ_IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


class FashionIQError(CatalogError):
    """The Fashion-IQ files cannot be used: missing root or file, unknown category or split, malformed JSON."""


def join_captions(captions: Sequence[str]) -> str:
    """Joins Fashion-IQ's relative captions the usual way: `"<c1> and <c2>"`.

    Each caption is stripped of surrounding whitespace and of leading/trailing `.`, `?` and `,` (as CLIP4Cir
    does); empty captions are left out, so `["", "is red"]` gives `"is red"`.
    """
    parts = [str(caption).strip().strip(".?, \t\n").strip() for caption in captions]
    return " and ".join(part for part in parts if part)


def _resolve_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FashionIQError(f"Fashion-IQ root '{root}' does not exist or is not a folder.")
    if not (path / "captions").is_dir() and (path / "fashion-iq" / "captions").is_dir():
        path = path / "fashion-iq"  # the shared data folder holding `fashion-iq/`
    if not (path / "captions").is_dir() and not (path / "image_splits").is_dir():
        raise FashionIQError(
            f"'{path}' has neither a 'captions' nor an 'image_splits' folder; pass the Fashion-IQ folder "
            "(e.g. ../shared/data/fashion-iq)."
        )
    return path


def check_categories(categories: str | Sequence[str]) -> list[str]:
    names = [categories] if isinstance(categories, str) else list(categories)
    if not names:
        raise FashionIQError(f"No Fashion-IQ category given; use some of {FASHION_IQ_CATEGORIES}.")
    unknown = [name for name in names if name not in FASHION_IQ_CATEGORIES]
    if unknown:
        raise FashionIQError(f"Unknown Fashion-IQ categories {unknown}; use some of {FASHION_IQ_CATEGORIES}.")
    return list(dict.fromkeys(names))


def _check_split(split: str) -> str:
    if split not in FASHION_IQ_SPLITS:
        raise FashionIQError(f"Unknown Fashion-IQ split {split!r}; use one of {FASHION_IQ_SPLITS}.")
    return split


def _read_json_list(file: Path) -> list[Any]:
    if not file.is_file():
        raise FashionIQError(f"Fashion-IQ file '{file}' does not exist.")
    try:
        with open(file, encoding="utf-8") as handle:
            content = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FashionIQError(f"Fashion-IQ file '{file}' is not valid JSON: {error}") from error
    if not isinstance(content, list):
        raise FashionIQError(f"Fashion-IQ file '{file}' must hold a JSON list, not {type(content).__name__}.")
    return content


def _parse_triplets(file: Path, category: str, split: str) -> list[dict[str, Any]]:
    rows = []
    for index, entry in enumerate(_read_json_list(file)):
        where = f"Entry {index} of '{file}'"
        if not isinstance(entry, dict):
            raise FashionIQError(f"{where} is a {type(entry).__name__}, expected an object.")
        candidate, target, captions = entry.get("candidate"), entry.get("target"), entry.get("captions")
        if not isinstance(candidate, str) or not candidate.strip():
            raise FashionIQError(f"{where} has no 'candidate' ASIN.")
        if split != "test" and (not isinstance(target, str) or not target.strip()):
            raise FashionIQError(f"{where} has no 'target' ASIN.")
        if target is not None and not isinstance(target, str):
            raise FashionIQError(f"{where} has a non-string 'target' ({type(target).__name__}).")
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise FashionIQError(f"{where} must have 'captions', a non-empty list of strings.")
        rows.append(
            {
                "category": category,
                "candidate": candidate.strip(),
                "target": (target or "").strip(),
                "captions": [caption.strip() for caption in captions],
                "caption": join_captions(captions),
            }
        )
    return rows


def _image_index(image_dir: Path, categories: Sequence[str]) -> dict[str, dict[str, str]]:
    """`{category: {ASIN: path}}` from `<image_dir>/<category>/` plus `{"": {...}}` from `<image_dir>/` itself.

    One directory listing per folder instead of a `stat` per ASIN and extension; within a folder the first
    extension of `FASHION_IQ_IMAGE_EXTENSIONS` wins.
    """
    rank = {f".{ext}": position for position, ext in enumerate(FASHION_IQ_IMAGE_EXTENSIONS)}

    def scan(folder: Path) -> dict[str, str]:
        found: dict[str, tuple[int, str]] = {}
        if not folder.is_dir():
            return {}
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                order = rank.get(ext.lower())
                if order is not None and entry.is_file() and (stem not in found or order < found[stem][0]):
                    found[stem] = (order, os.path.abspath(entry.path))
        return {stem: path for stem, (_, path) in found.items()}

    index = {category: scan(image_dir / category) for category in categories}
    index[""] = scan(image_dir)
    return index


def _find_image(index: dict[str, dict[str, str]], category: str, asin: str) -> str:
    return index[category].get(asin) or index[""].get(asin, "")


def _check_image_dir(image_dir: str | os.PathLike) -> Path:
    folder = Path(image_dir).expanduser()
    if not folder.is_dir():
        raise FashionIQError(f"Fashion-IQ image folder '{image_dir}' does not exist or is not a folder.")
    return folder


def _image_problems(paths: Sequence[str], check_images: bool) -> dict[str, str]:
    """`{path: error}` for the unreadable ones among `paths` (only looked at with `check_images`)."""
    if not check_images:
        return {}
    unique = sorted(set(filter(None, paths)))
    with ThreadPoolExecutor() as pool:  # Pillow releases the GIL while decoding
        return {path: error for path, error in zip(unique, pool.map(image_problem, unique)) if error}


def _keep_with_images(
    rows: list[dict[str, Any]],
    images_of: Callable[[dict[str, Any]], list[tuple[str, str]]],
    keys: Sequence[str],
    image_dir: str | os.PathLike,
    check_images: bool,
    what: str,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The rows whose images were all found (and, with `check_images`, open), and a `{**keys, "error"}` dict per
    other row, logged as skipped `what`. `images_of(row)` lists the row's `(description, path)` pairs, `path` ""
    when no file was found."""
    problems = _image_problems([path for row in rows for _, path in images_of(row)], check_images)
    kept, skipped = [], []
    for row in rows:
        errors = [problems[path] if path else f"no {description} in '{image_dir}'"
                  for description, path in images_of(row) if not path or path in problems]
        if errors:
            skipped.append({key: row[key] for key in keys} | {"error": "; ".join(errors)})
        else:
            kept.append(row)
    _log_skipped(what, skipped, len(rows))
    return kept, skipped


def _log_skipped(what: str, skipped: list[dict[str, Any]], total: int) -> None:
    if not skipped:
        return
    per_category = Counter(row["category"] for row in skipped)
    logger.warning(
        "Skipped %d of %d Fashion-IQ %s with a missing or unreadable image (%s); e.g. %s.",
        len(skipped),
        total,
        what,
        ", ".join(f"{category}: {count}" for category, count in sorted(per_category.items())),
        skipped[0]["error"],
    )


_TRIPLET_FEATURES = {
    "category": datasets.Value("string"),
    "candidate": datasets.Value("string"),
    "target": datasets.Value("string"),
    "captions": datasets.Sequence(datasets.Value("string")),
    "caption": datasets.Value("string"),
}


def load_fashion_iq_with_report(
    root: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    categories: str | Sequence[str] = FASHION_IQ_CATEGORIES,
    split: str = "val",
    check_images: bool = True,
) -> tuple[datasets.Dataset, list[dict[str, str]]]:
    """Loads Fashion-IQ triplets like `load_fashion_iq` and also returns the triplets it skipped.

    Returns:
        The triplets, and one `{"category", "candidate", "target", "error"}` dict per triplet dropped because
        an image is missing or (with `check_images`) unreadable. Empty without `image_dir`.
    """
    base, categories, split = _resolve_root(root), check_categories(categories), _check_split(split)
    rows: list[dict[str, Any]] = []
    for category in categories:
        rows.extend(_parse_triplets(base / "captions" / f"cap.{category}.{split}.json", category, split))
    features = dict(_TRIPLET_FEATURES)
    skipped: list[dict[str, str]] = []
    if image_dir is not None:
        index = _image_index(_check_image_dir(image_dir), categories)
        for row in rows:
            row["reference_image_path"] = _find_image(index, row["category"], row["candidate"])
            row["target_image_path"] = _find_image(index, row["category"], row["target"]) if row["target"] else ""

        def images_of(row: dict[str, Any]) -> list[tuple[str, str]]:
            return [(f"{role} image for {asin}", path) for role, asin, path in (
                ("reference", row["candidate"], row["reference_image_path"]),
                ("target", row["target"], row["target_image_path"]),
            ) if asin]  # test triplets have no target

        kept, skipped = _keep_with_images(rows, images_of, ("category", "candidate", "target"), image_dir,
                                          check_images, f"{split} triplets")
        if rows and not kept:
            raise FashionIQError(
                f"None of the {len(rows)} Fashion-IQ {split} triplets has its images in '{image_dir}' (expected "
                f"<ASIN>.{{{','.join(FASHION_IQ_IMAGE_EXTENSIONS)}}}, flat or in per-category folders)."
            )
        rows = kept
        features["reference_image_path"] = datasets.Value("string")
        features["target_image_path"] = datasets.Value("string")
    return datasets.Dataset.from_list(rows, features=datasets.Features(features)), skipped


def load_fashion_iq(
    root: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    categories: str | Sequence[str] = FASHION_IQ_CATEGORIES,
    split: str = "val",
    check_images: bool = True,
) -> datasets.Dataset:
    """Loads Fashion-IQ triplets (reference ASIN, two relative captions, target ASIN) into a `datasets.Dataset`.

    Args:
        root: the Fashion-IQ folder holding `captions/cap.<category>.<split>.json` (or a folder holding
            `fashion-iq/`).
        image_dir: optional folder of the images, `<ASIN>.<png|jpg|jpeg|webp>` either flat or in per-category
            sub-folders (`<image_dir>/<category>/<ASIN>.jpg`, looked at first). Triplets whose images are missing
            (or unreadable, with `check_images`) are skipped and logged; `load_fashion_iq_with_report` returns them.
        categories: one or several of `FASHION_IQ_CATEGORIES`.
        split: `"train"`, `"val"` or `"test"`; the test files have no targets.
        check_images: decode every image once (only with `image_dir`).

    Returns:
        Columns `category`, `candidate` (reference ASIN), `target` (target ASIN, "" in the test split),
        `captions` (the list of raw captions, usually 2), `caption` (`join_captions(captions)`), and with
        `image_dir` also `reference_image_path` and `target_image_path` ("" for test targets). Rows keep the file
        order, category by category.

    Raises:
        FashionIQError: the root or a caption file does not exist, a category or split is unknown, a file is not
            a JSON list of triplets, or (with `image_dir`) no triplet has its images.
    """
    dataset, _ = load_fashion_iq_with_report(root, image_dir, categories, split, check_images)
    return dataset


def fashion_iq_gallery_with_report(
    root: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    categories: str | Sequence[str] = FASHION_IQ_CATEGORIES,
    split: str = "val",
    check_images: bool = True,
) -> tuple[datasets.Dataset, list[dict[str, str]]]:
    """The retrieval gallery of Fashion-IQ's protocol: the image ids of `image_splits/split.<category>.<split>.json`,
    and the `{"category", "id", "error"}` dicts of the images it skipped.

    Fashion-IQ ranks, for each triplet, the gallery of the triplet's own category and split, and reports recall
    per category. Duplicate ids within a category are listed once.

    Returns:
        The gallery, columns `category`, `id` (ASIN), and with `image_dir` also `image_path` (resolved like
        `load_fashion_iq`; ids without a readable image are skipped and logged), and the skipped images.
    """
    base, categories, split = _resolve_root(root), check_categories(categories), _check_split(split)
    rows = []
    for category in categories:
        file = base / "image_splits" / f"split.{category}.{split}.json"
        ids = _read_json_list(file)
        bad = [index for index, asin in enumerate(ids) if not isinstance(asin, str) or not asin.strip()]
        if bad:
            raise FashionIQError(f"Entry {bad[0]} of '{file}' is not an ASIN string.")
        rows.extend({"category": category, "id": asin.strip()} for asin in dict.fromkeys(ids))
    skipped: list[dict[str, str]] = []
    features = {"category": datasets.Value("string"), "id": datasets.Value("string")}
    if image_dir is not None:
        index = _image_index(_check_image_dir(image_dir), categories)
        for row in rows:
            row["image_path"] = _find_image(index, row["category"], row["id"])
        rows, skipped = _keep_with_images(rows, lambda row: [("image", row["image_path"])], ("category", "id"),
                                          image_dir, check_images, f"{split} gallery images")
        if skipped and not rows:
            raise FashionIQError(
                f"None of the {len(skipped)} Fashion-IQ {split} gallery images is in '{image_dir}'.")
        features["image_path"] = datasets.Value("string")
    return datasets.Dataset.from_list(rows, features=datasets.Features(features)), skipped


__all__ = [
    "FASHION_IQ_CATEGORIES",
    "FASHION_IQ_IMAGE_EXTENSIONS",
    "FASHION_IQ_SPLITS",
    "FashionIQError",
    "check_categories",
    "fashion_iq_gallery_with_report",
    "join_captions",
    "load_fashion_iq",
    "load_fashion_iq_with_report",
]
