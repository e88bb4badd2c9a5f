"""
Comparison charts as PNG files: grouped bars of metrics per model (`plot_comparison`) and of attribute consistency
per mode or model (`plot_attribute_consistency`).

Charts use `matplotlib.figure.Figure` directly (no pyplot, no global backend state) and are written atomically.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modeling.evaluation.reports.tables import format_value, is_missing, is_number
from modeling.utils.io import atomic_save

_DPI = 120


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure  # Figure draws with Agg when saved to PNG; no pyplot, no backend switch

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save_figure(fig, path: str | os.PathLike) -> Path:
    return atomic_save(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white", bbox_inches="tight"))


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_comparison(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[tuple[str, str]],
    path: str | os.PathLike,
    title: str | None = None,
    name_key: str = "model",
    *,
    digits: int = 3,
) -> Path:
    """
    A grouped horizontal bar chart: one group per row (model), one bar per metric, each bar annotated with its
    value. Missing values (absent, `None`, NaN) leave a gap rather than a zero-length bar. Saved as PNG.

    Args:
        rows: one mapping per model, with its name under `name_key` and the metric values.
        metrics: `(key, label)` pairs; labels go in the legend.
        path: the PNG file (folders are created).
        title: the chart title.
        name_key: key of the model name in each row.
        digits: decimals of the annotations.

    Returns:
        `path` as a `Path`.
    """
    rows, metrics = list(rows), [(str(k), str(label)) for k, label in metrics]
    if not rows or not metrics:
        raise ValueError("plot_comparison needs at least one row and one metric")
    names = ["\n".join(textwrap.wrap(str(row.get(name_key, f"row {i}")), 30)) or f"row {i}"
             for i, row in enumerate(rows)]
    values = [[row.get(key) for key, _ in metrics] for row in rows]
    present = [float(v) for row in values for v in row if is_number(v) and not is_missing(v)]

    n_rows, n_metrics = len(rows), len(metrics)
    bar = 0.8 / n_metrics
    fig = _new_figure(8.0, max(2.5, 0.28 * n_rows * n_metrics + 0.25 * n_rows + 1.5))
    ax = fig.add_subplot()
    colors = _colors(n_metrics)
    span = (max(present) - min(min(present), 0.0)) if present else 1.0
    for j, (_, label) in enumerate(metrics):
        for i in range(n_rows):
            value = values[i][j]
            if not is_number(value) or is_missing(value):
                continue
            value = float(value)
            y = i - 0.4 + bar * (j + 0.5)
            ax.barh(y, value, height=bar * 0.9, color=colors[j])
            offset = 0.01 * (span or 1.0)
            ax.text(value + (offset if value >= 0 else -offset), y, format_value(value, digits),
                    va="center", ha="left" if value >= 0 else "right", fontsize=7)
    ax.set_yticks(range(n_rows), names, fontsize=8)
    ax.set_ylim(n_rows - 0.5, -0.5)  # first row on top
    if present and min(present) >= 0 and max(present) <= 1:
        ax.set_xlim(0, 1.12)
    elif present:
        low, high = min(min(present), 0.0), max(max(present), 0.0)
        pad = 0.15 * ((high - low) or 1.0)
        ax.set_xlim(low - (pad if low < 0 else 0), high + pad)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colors[j], label=label) for j, (_, label) in enumerate(metrics)],
              loc="upper center", bbox_to_anchor=(0.5, -0.06 if n_rows > 3 else -0.12),
              ncol=min(n_metrics, 3), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return _save_figure(fig, path)


def plot_attribute_consistency(
    consistency: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    title: str | None = None,
    *,
    ylabel: str = "share of results with the query's value",
) -> Path:
    """
    A grouped bar chart of attribute consistency: one group per attribute (articleType, baseColour, ..., or
    "changed attribute matches text" for composed queries), one bar per mode or model, y in [0, 1].

    Args:
        consistency: `{label: {attribute: share}}`; shares must lie in [0, 1] (`ValueError` otherwise, which
            catches percentages). Missing attributes and `None`/NaN shares are skipped. Attributes appear in
            the order they are first met.
        path: the PNG file (folders are created).
        title: the chart title.
        ylabel: the y axis label.

    Returns:
        `path` as a `Path`.
    """
    labels = [str(label) for label in consistency]
    if not labels:
        raise ValueError("plot_attribute_consistency needs at least one mode or model")
    attributes: list[str] = []
    for shares in consistency.values():
        for attribute, share in shares.items():
            if not is_missing(share) and not is_number(share):
                raise ValueError(f"share of {attribute!r} is not a number: {share!r}")
            if is_number(share) and not is_missing(share) and not 0.0 <= float(share) <= 1.0:
                raise ValueError(f"share of {attribute!r} must lie in [0, 1], got {share}")
            if attribute not in attributes:
                attributes.append(str(attribute))
    if not attributes:
        raise ValueError("no attribute shares given")

    n_labels, n_attributes = len(labels), len(attributes)
    bar = 0.8 / n_labels
    fig = _new_figure(max(6.0, 0.32 * n_labels * n_attributes + 0.4 * n_attributes + 1.5), 4.2)
    ax = fig.add_subplot()
    colors = _colors(n_labels)
    rotate = n_labels * n_attributes > 12
    for j, (label, shares) in enumerate(consistency.items()):
        xs, heights = [], []
        for i, attribute in enumerate(attributes):
            share = shares.get(attribute)
            if is_missing(share):
                continue
            xs.append(i - 0.4 + bar * (j + 0.5))
            heights.append(float(share))
        container = ax.bar(xs, heights, width=bar * 0.9, color=colors[j], label=str(label))
        ax.bar_label(container, labels=[f"{h:.2f}" for h in heights], fontsize=6 if rotate else 7,
                     rotation=90 if rotate else 0, padding=2)
    ax.set_xticks(range(n_attributes), ["\n".join(textwrap.wrap(a, 14)) for a in attributes], fontsize=8)
    ax.set_xlim(-0.5, n_attributes - 0.5)
    ax.set_ylim(0, 1.15 if rotate else 1.08)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(n_labels, 3), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return _save_figure(fig, path)


__all__ = ["plot_attribute_consistency", "plot_comparison"]
