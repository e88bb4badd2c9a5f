"""
Markdown for the files people look at: table cells (`format_value`), GitHub tables (`markdown_table`) and sections
between marker comments (`replace_section`, `get_section`) that a script can refresh without touching the rest.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MISSING = "–"  # en dash: what a table shows for a value that was not measured


def is_number(value: Any) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_missing(value: Any) -> bool:
    """`None` or NaN: a value that was not measured."""
    return value is None or (is_number(value) and math.isnan(float(value)))


def format_value(value: Any, digits: int = 3) -> str:
    """One table cell: `None`/NaN -> "–", integers with thousands separators, other numbers with `digits`
    decimals (and separators), anything else as text (pipes escaped, line breaks turned into spaces)."""
    if is_missing(value):
        return MISSING
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{int(value):,}"
    if is_number(value):
        return f"{float(value):,.{digits}f}"
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    digits: int = 3,
    bold_best: Iterable[str] = (),
) -> str:
    """
    A GitHub markdown table.

    Args:
        rows: one mapping per table row; a key that is absent, `None` or NaN shows as "–".
        columns: `(key, header)` pairs, in order. The first column is left-aligned (`:---`), every other column
            whose present values are all numbers is right-aligned (`---:`), the rest left-aligned (`---`).
        digits: decimals of non-integer numbers; integers are shown with thousands separators (`1,404`).
        bold_best: keys whose highest value is bolded; values that look the same once formatted are tied and
            all bolded. Missing values are ignored; a key that is not a column raises `ValueError`.

    Returns:
        The table, one line per row, without a trailing newline.
    """
    columns = [(str(key), str(header)) for key, header in columns]
    if not columns:
        raise ValueError("a table needs at least one column")
    keys = [key for key, _ in columns]
    bold_best = set(bold_best)
    unknown = bold_best - set(keys)
    if unknown:
        raise ValueError(f"bold_best names keys that are not columns: {sorted(unknown)}")

    cells = [[format_value(row.get(key), digits) for key in keys] for row in rows]
    for j, key in enumerate(keys):
        if key not in bold_best:
            continue
        values = [row.get(key) for row in rows]
        numeric = [float(v) for v in values if is_number(v) and not is_missing(v)]
        if not numeric:
            continue
        best = format_value(max(numeric), digits)
        for i, value in enumerate(values):
            if is_number(value) and not is_missing(value) and format_value(float(value), digits) == best:
                cells[i][j] = f"**{cells[i][j]}**"

    aligns = []
    for j, key in enumerate(keys):
        present = [row.get(key) for row in rows if not is_missing(row.get(key))]
        if j == 0:
            aligns.append(":---")
        elif present and all(is_number(v) for v in present):
            aligns.append("---:")
        else:
            aligns.append("---")
    lines = [
        "| " + " | ".join(format_value(header) for _, header in columns) + " |",
        "|" + "|".join(aligns) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _find_unique(markdown: str, marker: str) -> int:
    count = markdown.count(marker)
    if count == 0:
        raise ValueError(f"marker {marker!r} not found")
    if count > 1:
        raise ValueError(f"marker {marker!r} occurs {count} times")
    return markdown.index(marker)


def _section_bounds(markdown: str, start_marker: str, end_marker: str) -> tuple[int, int]:
    if not start_marker or not end_marker:
        raise ValueError("markers must not be empty")
    if start_marker == end_marker:
        raise ValueError("start and end markers must differ")
    start = _find_unique(markdown, start_marker) + len(start_marker)
    end = _find_unique(markdown, end_marker)
    if end < start:
        raise ValueError(f"end marker {end_marker!r} comes before start marker {start_marker!r}")
    return start, end


def replace_section(markdown: str, start_marker: str, end_marker: str, new_text: str) -> str:
    """
    Replaces what lies between `start_marker` and `end_marker` (both kept, each on its own line around the new
    text) with `new_text`. Raises `ValueError` when a marker is missing, occurs more than once, or the end marker
    comes first.
    """
    start, end = _section_bounds(markdown, start_marker, end_marker)
    body = new_text.strip("\n")
    return markdown[:start] + "\n" + (body + "\n" if body else "") + markdown[end:]


def get_section(markdown: str, start_marker: str, end_marker: str) -> str:
    """The text between the two markers, without the line breaks next to them (inverse of `replace_section`)."""
    start, end = _section_bounds(markdown, start_marker, end_marker)
    return markdown[start:end].strip("\n")


__all__ = ["MISSING", "format_value", "get_section", "is_missing", "is_number", "markdown_table", "replace_section"]
