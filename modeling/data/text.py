# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""Text of catalog items: cells as text, normalised titles, attribute captions and what the text matchers read.

Standard library only, so any layer (the numpy-only metrics included) can use the same normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

ITEM_TEXT_MODES = ("title", "caption", "both")


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


def normalise_text(text: Any) -> str:
    """Lower-cases, collapses whitespace runs to one space and strips; non-strings (None, NaN) give `""`."""
    if not isinstance(text, str):
        return ""
    return " ".join(text.lower().split())


def normalise_title(text: Any) -> str:
    """Lower-cases a title and collapses its whitespace, so that identical titles compare equal (`normalise_text` of
    `str(text)`)."""
    return normalise_text(str(text))


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


__all__ = ["ITEM_TEXT_MODES", "as_text", "attribute_caption", "item_description", "item_text", "normalise_text",
           "normalise_title"]
