# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""Data for composed retrieval: a reference product photo plus a modification text ("make it blue") -> targets.

Two sources of (reference, modification, target) triplets:

- **Fashion-IQ** (Wu et al., CVPR 2021) caption files, `load_fashion_iq` / `fashion_iq_gallery`. The captions
  are human-written; the images (Amazon photos named by ASIN) are not shipped with the shared data, so without an
  `image_dir` only the captions are parsed. With one, every triplet gets the paths of its two images, and
  triplets whose images are missing or unreadable are skipped and reported, like `load_catalog_with_report`.
- **Catalog-derived** triplets, `catalog_triplets`: pairs of catalog items of the same articleType and gender
  whose baseColour (or usage / season) differs, with a template modification text naming the target's value.
  Pairs never cross splits, so test triplets only ever use test items.

`composed_relevance` defines a hit for catalog triplets: any gallery item of the reference's articleType and
gender that has the target's new value (the reference itself excluded); `exact_target_mask` is the stricter
"only the target item" definition. `composed_relevance_matrix` builds both for many triplets at once, ready for
`modeling.metrics.ranked_relevance` and `modeling.metrics.composed_metrics`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from modeling.data.catalog import ATTRIBUTES, CatalogError, ImageError, as_text, open_image

logger = logging.getLogger(__name__)

FASHION_IQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHION_IQ_SPLITS = ("train", "val", "test")
FASHION_IQ_IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")

CHANGEABLE_ATTRIBUTES = ("baseColour", "usage", "season")
DEFAULT_REQUIRE_SAME = ("articleType", "gender")

# Modification templates per changed attribute. `{value}` is the target's value in lower case ("navy blue"),
# `{adjective}` and `{occasion}` are natural forms of usage values ("sporty", "sports"); for other attributes
# both equal `{value}`.
DEFAULT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "baseColour": (
        "make it {value}",
        "in {value}",
        "I want it in {value} instead",
        "same but {value}",
        "{value} version",
        "change the colour to {value}",
        "the same in {value}",
        "can I get this in {value}",
    ),
    "usage": (
        "for {occasion}",
        "a {adjective} version",
        "make it {adjective}",
        "same but for {occasion}",
        "I want a {adjective} one instead",
        "change it to {value} wear",
    ),
    "season": (
        "a {value} version",
        "for {value}",
        "same but for {value}",
        "I want one for {value} instead",
        "make it suitable for {value}",
        "something like this for {value}",
    ),
}

# Usage value (lower case) -> (adjective, occasion) for readable templates; unknown values use the value itself.
_USAGE_FORMS = {
    "casual": ("casual", "everyday wear"),
    "formal": ("formal", "formal occasions"),
    "sports": ("sporty", "sports"),
    "ethnic": ("ethnic", "traditional occasions"),
    "smart casual": ("smart casual", "smart casual occasions"),
    "party": ("party-ready", "parties"),
    "travel": ("travel-friendly", "travelling"),
    "home": ("homely", "lounging at home"),
}
# Colour values (lower case) whose plain name reads badly in a sentence.
_COLOUR_FORMS = {"multi": "multicoloured"}


class FashionIQError(CatalogError):
    """The Fashion-IQ files cannot be used: missing root or file, unknown category or split, malformed JSON."""


# --------------------------------------------------------------------------------------------------------------
# Fashion-IQ
# --------------------------------------------------------------------------------------------------------------


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


def _check_categories(categories: str | Sequence[str]) -> list[str]:
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

    def problem(path: str) -> str:
        try:
            open_image(path, f"Image file '{path}'")
        except ImageError as error:
            return str(error)
        return ""

    with ThreadPoolExecutor() as pool:  # Pillow releases the GIL while decoding
        return {path: error for path, error in zip(unique, pool.map(problem, unique)) if error}


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
    base = _resolve_root(root)
    categories = _check_categories(categories)
    split = _check_split(split)
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
        problems = _image_problems(
            [path for row in rows for path in (row["reference_image_path"], row["target_image_path"])], check_images
        )
        kept = []
        for row in rows:
            errors = []
            for role, asin, path in (
                ("reference", row["candidate"], row["reference_image_path"]),
                ("target", row["target"], row["target_image_path"]),
            ):
                if not asin:
                    continue  # test triplets have no target
                if not path:
                    errors.append(f"no {role} image for {asin} in '{image_dir}'")
                elif path in problems:
                    errors.append(problems[path])
            if errors:
                keys = ("category", "candidate", "target")
                skipped.append({key: row[key] for key in keys} | {"error": "; ".join(errors)})
            else:
                kept.append(row)
        _log_skipped(f"{split} triplets", skipped, len(rows))
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
    """`fashion_iq_gallery` and the `{"category", "id", "error"}` dicts of the images it skipped."""
    base = _resolve_root(root)
    categories = _check_categories(categories)
    split = _check_split(split)
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
        problems = _image_problems([row["image_path"] for row in rows], check_images)
        kept = []
        for row in rows:
            error = problems.get(row["image_path"], "") if row["image_path"] else f"no image in '{image_dir}'"
            if error:
                skipped.append({"category": row["category"], "id": row["id"], "error": error})
            else:
                kept.append(row)
        _log_skipped(f"{split} gallery images", skipped, len(rows))
        if rows and not kept:
            raise FashionIQError(f"None of the {len(rows)} Fashion-IQ {split} gallery images is in '{image_dir}'.")
        rows = kept
        features["image_path"] = datasets.Value("string")
    return datasets.Dataset.from_list(rows, features=datasets.Features(features)), skipped


def fashion_iq_gallery(
    root: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    categories: str | Sequence[str] = FASHION_IQ_CATEGORIES,
    split: str = "val",
    check_images: bool = True,
) -> datasets.Dataset:
    """The retrieval gallery of Fashion-IQ's protocol: the image ids of `image_splits/split.<category>.<split>.json`.

    Fashion-IQ ranks, for each triplet, the gallery of the triplet's own category and split, and reports recall
    per category. Duplicate ids within a category are listed once.

    Returns:
        Columns `category`, `id` (ASIN), and with `image_dir` also `image_path` (resolved like `load_fashion_iq`;
        ids without a readable image are skipped and logged).
    """
    dataset, _ = fashion_iq_gallery_with_report(root, image_dir, categories, split, check_images)
    return dataset


# --------------------------------------------------------------------------------------------------------------
# Catalog-derived triplets
# --------------------------------------------------------------------------------------------------------------


def _columns(items: Any, names: Sequence[str]) -> dict[str, list[Any]]:
    """Reads columns of a `datasets.Dataset`, a pandas DataFrame or a mapping of columns, without decoding images."""
    if isinstance(items, datasets.Dataset):
        missing = [name for name in names if name not in items.column_names]
        if missing:
            raise ValueError(f"The dataset has no column {missing}; columns: {items.column_names}.")
        table = items.select_columns(list(names))
        return {name: list(table[name]) for name in names}
    try:
        return {name: list(items[name]) for name in names}
    except KeyError as error:
        raise ValueError(f"The items have no column {error}.") from None


def _has_column(items: Any, name: str) -> bool:
    if isinstance(items, datasets.Dataset):
        return name in items.column_names
    return name in getattr(items, "columns", items)


def display_value(attribute: str, value: str) -> dict[str, str]:
    text = " ".join(value.lower().split())
    if attribute == "baseColour":
        text = _COLOUR_FORMS.get(text, text)
    adjective, occasion = _USAGE_FORMS.get(text, (text, f"{text} occasions")) if attribute == "usage" else (text, text)
    return {"value": text, "adjective": adjective, "occasion": occasion}


def modification_text(attribute: str, value: str, template: str) -> str:
    """Fills a modification template (see `DEFAULT_PHRASINGS`) with the natural form of `value`."""
    return " ".join(template.format_map(display_value(attribute, value)).split())


def _parse_wanted_splits(split: str | Sequence[str] | None) -> list[str] | None:
    if split is None:
        return None
    names = split.split(",") if isinstance(split, str) else list(split)
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise ValueError("split must name at least one split, or be None for all.")
    return names


def catalog_triplets(
    dataset: datasets.Dataset | Any,
    split: str | Sequence[str] | None = None,
    change: str | Sequence[str] = ("baseColour",),
    max_per_reference: int = 2,
    seed: int = 0,
    phrasings: Mapping[str, Sequence[str]] | None = None,
    require_same: Sequence[str] = DEFAULT_REQUIRE_SAME,
) -> datasets.Dataset:
    """Builds composed-retrieval triplets from a catalog: reference item + "make it <value>" -> target item.

    For every reference item, up to `max_per_reference` targets are drawn among the items of the same split that
    share all `require_same` attributes with it and differ in one `change` attribute. The target values of one
    reference are distinct (two triplets never ask for the same change); a value is drawn with probability
    proportional to how many candidate items have it, then one item with that value is drawn uniformly. Items
    with an empty changed or `require_same` value take no part. The modification text names the target's value
    in one of the `phrasings` templates, picked at random.

    Args:
        dataset: a catalog from `modeling.data.load_catalog` (or a pandas DataFrame / mapping of columns) with
            `id`, the `require_same` and `change` attributes, and optionally `split` and `image_path`.
        split: keep only this split, several (a list or `"val,test"`), or all when `None`. Pairs are formed
            within one split only, so no item is ever paired with an item of another split.
        change: the attribute(s) that may change, among `CHANGEABLE_ATTRIBUTES` (`baseColour`, `usage`, `season`).
        max_per_reference: at most this many triplets per reference item.
        seed: the random seed; the same catalog and arguments give the same triplets.
        phrasings: `{attribute: templates}` replacing `DEFAULT_PHRASINGS` for those attributes; templates may use
            `{value}`, `{adjective}` and `{occasion}`.
        require_same: attributes the reference and target must share (and that decide relevance).

    Returns:
        Columns `reference_id`, `target_id`, `changed_attribute`, `reference_value`, `target_value`,
        `modification`, then the reference's `require_same` attributes (`articleType`, `gender` by default), `split`
        and, when the catalog has `image_path`, `reference_image_path` and `target_image_path`. Rows follow the
        catalog order of the references.
    """
    changes = [change] if isinstance(change, str) else list(dict.fromkeys(change))
    require_same = list(dict.fromkeys(require_same))
    if not changes:
        raise ValueError(f"change must name at least one of {CHANGEABLE_ATTRIBUTES}.")
    unknown = [name for name in changes if name not in CHANGEABLE_ATTRIBUTES]
    if unknown:
        raise ValueError(f"Cannot change {unknown}; use some of {CHANGEABLE_ATTRIBUTES}.")
    overlap = set(changes) & set(require_same)
    if overlap:
        raise ValueError(f"{sorted(overlap)} cannot both change and stay the same (require_same).")
    if isinstance(max_per_reference, bool) or not isinstance(max_per_reference, int) or max_per_reference < 1:
        raise ValueError(f"max_per_reference must be a positive integer, got {max_per_reference!r}.")
    templates = {name: tuple(DEFAULT_PHRASINGS[name]) for name in changes}
    for name, values in (phrasings or {}).items():
        if name in templates:
            if isinstance(values, str) or not values:
                raise ValueError(f"phrasings[{name!r}] must be a non-empty list of templates.")
            templates[name] = tuple(values)

    has_split = _has_column(dataset, "split")
    has_paths = _has_column(dataset, "image_path")
    names = ["id", *require_same, *changes, *(["split"] if has_split else []), *(["image_path"] if has_paths else [])]
    columns = {name: [as_text(value) for value in values] for name, values in _columns(dataset, names).items()}
    num_items = len(columns["id"])
    splits = columns["split"] if has_split else [""] * num_items
    wanted = _parse_wanted_splits(split)
    if wanted is not None:
        if not has_split:
            raise ValueError("The catalog has no 'split' column; pass split=None.")
        missing = sorted(set(wanted) - set(splits))
        if missing:
            raise ValueError(f"The catalog has no items in split {missing}; it has {sorted(set(splits))}.")

    # (split, require_same values) -> attribute -> value -> item positions, in catalog order.
    groups: dict[tuple[str, ...], dict[str, dict[str, list[int]]]] = defaultdict(
        lambda: {name: defaultdict(list) for name in changes}
    )
    keys: list[tuple[str, ...] | None] = []
    for position in range(num_items):
        key = (splits[position], *(columns[name][position] for name in require_same))
        if (wanted is not None and splits[position] not in wanted) or not all(key[1:]):
            keys.append(None)
            continue
        keys.append(key)
        for name in changes:
            if columns[name][position]:
                groups[key][name][columns[name][position]].append(position)

    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    for position, key in enumerate(keys):
        if key is None:
            continue
        options = []  # (attribute, value, positions)
        for name in changes:
            own = columns[name][position]
            if own:
                options.extend((name, value, members) for value, members in groups[key][name].items() if value != own)
        if not options:
            continue
        sizes = np.array([len(members) for _, _, members in options], dtype=np.float64)
        count = min(max_per_reference, len(options))
        for choice in rng.choice(len(options), size=count, replace=False, p=sizes / sizes.sum()):
            name, value, members = options[choice]
            target = members[int(rng.integers(len(members)))]
            template = templates[name][int(rng.integers(len(templates[name])))]
            row = {
                "reference_id": columns["id"][position],
                "target_id": columns["id"][target],
                "changed_attribute": name,
                "reference_value": columns[name][position],
                "target_value": value,
                "modification": modification_text(name, value, template),
                **{attribute: columns[attribute][position] for attribute in require_same},
                "split": splits[position],
            }
            if has_paths:
                row["reference_image_path"] = columns["image_path"][position]
                row["target_image_path"] = columns["image_path"][target]
            # Pairs come from one (split, require_same) group, so they cannot leak across splits.
            assert splits[target] == splits[position] and keys[target] == key, "triplet crosses splits or groups"
            rows.append(row)

    string = datasets.Value("string")
    output = ["reference_id", "target_id", "changed_attribute", "reference_value", "target_value", "modification",
              *require_same, "split", *(["reference_image_path", "target_image_path"] if has_paths else [])]
    if not rows:
        logger.warning("No catalog triplets: no two items of one split share %s and differ in %s.", require_same,
                       changes)
    return datasets.Dataset.from_list(rows, features=datasets.Features({name: string for name in output}))


# --------------------------------------------------------------------------------------------------------------
# Relevance
# --------------------------------------------------------------------------------------------------------------


def _require_same_of(triplet: Mapping[str, Any], require_same: Sequence[str] | None) -> list[str]:
    if require_same is not None:
        return list(require_same)
    # catalog_triplets stores exactly the reference's require_same attributes among the catalog attributes.
    changed = triplet.get("changed_attribute")
    return [name for name in ATTRIBUTES if name in triplet and name != changed]


def composed_relevance(
    items: datasets.Dataset | Any,
    triplet: Mapping[str, Any],
    require_same: Sequence[str] | None = None,
) -> np.ndarray:
    """Which gallery items are correct answers to a catalog triplet (the "any matching item" definition).

    An item is relevant when it shares the reference's `require_same` attributes (articleType and gender by
    default), has the target's value of the changed attribute, and is not the reference itself (by id). The
    target item is one of them when it is in the gallery.

    Args:
        items: the gallery, a `datasets.Dataset`, pandas DataFrame or mapping of columns with `id` and the
            attributes.
        triplet: a row of `catalog_triplets`.
        require_same: the attributes to share; by default the catalog attributes (`ATTRIBUTES`) the triplet holds,
            i.e. the `require_same` it was built with.

    Returns:
        `np.ndarray` of shape `(num_items,)`, bool.
    """
    attribute = triplet["changed_attribute"]
    same = _require_same_of(triplet, require_same)
    columns = _columns(items, ["id", attribute, *same])
    mask = np.array([as_text(value) == as_text(triplet["target_value"]) for value in columns[attribute]], bool)
    for name in same:
        mask &= np.array([as_text(value) == as_text(triplet[name]) for value in columns[name]], bool)
    mask &= np.array([as_text(value) != as_text(triplet["reference_id"]) for value in columns["id"]], bool)
    return mask


def exact_target_mask(items: datasets.Dataset | Any, triplet: Mapping[str, Any]) -> np.ndarray:
    """The strict definition: only the triplet's target item (by id) is relevant. Shape `(num_items,)`, bool."""
    target = as_text(triplet["target_id"])
    return np.array([as_text(value) == target for value in _columns(items, ["id"])["id"]], bool)


def composed_relevance_matrix(
    items: datasets.Dataset | Any,
    triplets: datasets.Dataset | Any,
    require_same: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`composed_relevance` and `exact_target_mask` for many triplets at once.

    Args:
        items: the gallery (see `composed_relevance`).
        triplets: a `catalog_triplets` dataset (or DataFrame / mapping of columns).
        require_same: as in `composed_relevance`; by default the catalog attributes the triplets hold.

    Returns:
        `(relevant, exact)`, two bool arrays of shape `(num_triplets, num_items)`.
    """
    base = ["reference_id", "target_id", "changed_attribute", "target_value"]
    if require_same is None:
        require_same = [name for name in ATTRIBUTES if _has_column(triplets, name)]
    query = {name: [as_text(v) for v in values] for name, values in _columns(triplets, [*base, *require_same]).items()}
    changed = sorted(set(query["changed_attribute"]))
    overlap = set(require_same) & set(changed)
    if overlap:
        raise ValueError(f"{sorted(overlap)} are both require_same and changed attributes.")
    gallery_names = list(dict.fromkeys(["id", *require_same, *changed]))
    gallery = {name: [as_text(v) for v in values] for name, values in _columns(items, gallery_names).items()}

    def codes(name: str, values: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # Integer codes compare much faster than strings; query values absent from the gallery get -1.
        vocabulary = {value: code for code, value in enumerate(dict.fromkeys(gallery[name]))}
        return (np.array([vocabulary.get(value, -1) for value in values], dtype=np.int64),
                np.array([vocabulary[value] for value in gallery[name]], dtype=np.int64))

    num_queries, num_items = len(query["reference_id"]), len(gallery["id"])
    relevant = np.ones((num_queries, num_items), dtype=bool)
    for name in require_same:
        query_codes, item_codes = codes(name, query[name])
        relevant &= query_codes[:, None] == item_codes[None, :]
    attributes = np.asarray(query["changed_attribute"], dtype=object)
    for name in changed:
        rows = np.flatnonzero(attributes == name)
        query_codes, item_codes = codes(name, [query["target_value"][row] for row in rows])
        relevant[rows] &= query_codes[:, None] == item_codes[None, :]
    reference_codes, id_codes = codes("id", query["reference_id"])
    relevant &= reference_codes[:, None] != id_codes[None, :]
    target_codes, id_codes = codes("id", query["target_id"])
    exact = target_codes[:, None] == id_codes[None, :]
    return relevant, exact


__all__ = [
    "CHANGEABLE_ATTRIBUTES",
    "DEFAULT_PHRASINGS",
    "DEFAULT_REQUIRE_SAME",
    "FASHION_IQ_CATEGORIES",
    "FASHION_IQ_IMAGE_EXTENSIONS",
    "FASHION_IQ_SPLITS",
    "FashionIQError",
    "catalog_triplets",
    "composed_relevance",
    "composed_relevance_matrix",
    "exact_target_mask",
    "fashion_iq_gallery",
    "fashion_iq_gallery_with_report",
    "join_captions",
    "load_fashion_iq",
    "load_fashion_iq_with_report",
    "modification_text",
]
