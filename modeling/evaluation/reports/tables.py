"""
Markdown for the files people look at: table cells (`format_value`) and GitHub tables (`markdown_table`).
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


__all__ = ["MISSING", "format_value", "is_missing", "is_number", "markdown_table"]
