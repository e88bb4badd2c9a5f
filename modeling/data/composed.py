# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""Data for composed retrieval: a reference product photo plus a modification text ("make it blue") -> targets.

Catalog-derived (reference, modification, target) triplets, `catalog_triplets`: pairs of catalog items of the same
articleType and gender whose baseColour (or usage / season) differs, with a template modification text naming the
target's value. Pairs never cross splits, so test triplets only ever use test items. (Fashion-IQ's human-written
triplets are in `modeling.data.fashion_iq`.)

`composed_relevance_matrix` defines a hit for catalog triplets: any gallery item of the reference's articleType and
gender that has the target's new value (the reference itself excluded), and the stricter "only the target item"
definition, for many triplets at once, ready for `modeling.evaluation.metrics.ranked_relevance` and
`modeling.evaluation.tasks.composed_metrics`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np

from modeling.data.catalog import ATTRIBUTES, parse_splits
from modeling.data.text import as_text

logger = logging.getLogger(__name__)

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
    names = parse_splits(split)
    if not names:
        raise ValueError("split must name at least one split, or be None for all.")
    return names


def _triplet_options(change, require_same, max_per_reference, phrasings):
    """`catalog_triplets`' arguments checked: (changed attributes, kept attributes, templates per attribute)."""
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
    return changes, require_same, templates


def _checked_splits(split, splits):
    """The wanted splits (None: all), each checked to hold items (`splits`: every item's, None without the column)."""
    wanted = _parse_wanted_splits(split)
    if wanted is not None:
        if splits is None:
            raise ValueError("The catalog has no 'split' column; pass split=None.")
        missing = sorted(set(wanted) - set(splits))
        if missing:
            raise ValueError(f"The catalog has no items in split {missing}; it has {sorted(set(splits))}.")
    return wanted


def _triplet_groups(columns, splits, wanted, changes, require_same):
    """(each item's group key or None when it takes no part, (split, require_same values) -> attribute -> value ->
    item positions in catalog order)."""
    groups: dict[tuple[str, ...], dict[str, dict[str, list[int]]]] = defaultdict(
        lambda: {name: defaultdict(list) for name in changes}
    )
    keys: list[tuple[str, ...] | None] = []
    for position in range(len(splits)):
        key = (splits[position], *(columns[name][position] for name in require_same))
        if (wanted is not None and splits[position] not in wanted) or not all(key[1:]):
            keys.append(None)
            continue
        keys.append(key)
        for name in changes:
            if columns[name][position]:
                groups[key][name][columns[name][position]].append(position)
    return keys, groups


def _triplet_row(columns, splits, position, target, name, value, template, require_same, has_paths) -> dict:
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
    return row


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
    changes, require_same, templates = _triplet_options(change, require_same, max_per_reference, phrasings)

    has_split = _has_column(dataset, "split")
    has_paths = _has_column(dataset, "image_path")
    names = ["id", *require_same, *changes, *(["split"] if has_split else []), *(["image_path"] if has_paths else [])]
    columns = {name: [as_text(value) for value in values] for name, values in _columns(dataset, names).items()}
    num_items = len(columns["id"])
    splits = columns["split"] if has_split else [""] * num_items
    wanted = _checked_splits(split, splits if has_split else None)

    keys, groups = _triplet_groups(columns, splits, wanted, changes, require_same)

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
            row = _triplet_row(columns, splits, position, target, name, value, template, require_same, has_paths)
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


def composed_relevance_matrix(
    items: datasets.Dataset | Any,
    triplets: datasets.Dataset | Any,
    require_same: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Which gallery items are correct answers to each catalog triplet, under two definitions.

    "Any matching item" (`relevant`): an item is relevant when it shares the reference's `require_same` attributes
    (articleType and gender by default), has the target's value of the changed attribute, and is not the
    reference itself (by id); the target item is one of them when it is in the gallery. "Exact target" (`exact`):
    only the triplet's target item (by id) is relevant.

    Args:
        items: the gallery, a `datasets.Dataset`, pandas DataFrame or mapping of columns with `id` and the
            attributes.
        triplets: a `catalog_triplets` dataset (or DataFrame / mapping of columns).
        require_same: the attributes to share; by default the catalog attributes (`ATTRIBUTES`) the triplets hold,
            i.e. the `require_same` they were built with.

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
    "catalog_triplets",
    "composed_relevance_matrix",
    "modification_text",
]
