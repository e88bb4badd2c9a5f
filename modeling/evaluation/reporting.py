"""
Evaluation results to the files people look at: markdown tables, comparison charts, query grids and the model card.

Every file is written atomically (a temporary file in the destination folder, then `os.replace`), so an interrupted
run leaves either the old file or the new one, never half of one. Charts use `matplotlib.figure.Figure` directly
(no pyplot, no global backend state); query grids use PIL only.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from modeling.utils.io import atomic_save, atomic_write_bytes, atomic_write_text  # noqa: F401 -- re-exported

RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"
MISSING = "–"  # en dash: what a table shows for a value that was not measured
DEFAULT_TAGS = ("fashion", "image-retrieval", "text-to-image-retrieval", "composed-image-retrieval", "multimodal")

_DPI = 120
_GREEN = (22, 163, 74)
_RED = (220, 38, 38)


# -- values --------------------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_missing(value: Any) -> bool:
    return value is None or (_is_number(value) and math.isnan(float(value)))


def format_value(value: Any, digits: int = 3) -> str:
    """One table cell: `None`/NaN -> "–", integers with thousands separators, other numbers with `digits`
    decimals (and separators), anything else as text (pipes escaped, line breaks turned into spaces)."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{int(value):,}"
    if _is_number(value):
        return f"{float(value):,.{digits}f}"
    return " ".join(str(value).split()).replace("|", "\\|")


# -- markdown ------------------------------------------------------------------------------------------------------
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
        numeric = [float(v) for v in values if _is_number(v) and not _is_missing(v)]
        if not numeric:
            continue
        best = format_value(max(numeric), digits)
        for i, value in enumerate(values):
            if _is_number(value) and not _is_missing(value) and format_value(float(value), digits) == best:
                cells[i][j] = f"**{cells[i][j]}**"

    aligns = []
    for j, key in enumerate(keys):
        present = [row.get(key) for row in rows if not _is_missing(row.get(key))]
        if j == 0:
            aligns.append(":---")
        elif present and all(_is_number(v) for v in present):
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


# -- charts --------------------------------------------------------------------------------------------------------
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
    present = [float(v) for row in values for v in row if _is_number(v) and not _is_missing(v)]

    n_rows, n_metrics = len(rows), len(metrics)
    bar = 0.8 / n_metrics
    fig = _new_figure(8.0, max(2.5, 0.28 * n_rows * n_metrics + 0.25 * n_rows + 1.5))
    ax = fig.add_subplot()
    colors = _colors(n_metrics)
    span = (max(present) - min(min(present), 0.0)) if present else 1.0
    for j, (_, label) in enumerate(metrics):
        for i in range(n_rows):
            value = values[i][j]
            if not _is_number(value) or _is_missing(value):
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
            if not _is_missing(share) and not _is_number(share):
                raise ValueError(f"share of {attribute!r} is not a number: {share!r}")
            if _is_number(share) and not _is_missing(share) and not 0.0 <= float(share) <= 1.0:
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
            if _is_missing(share):
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


# -- query grid (PIL) ----------------------------------------------------------------------------------------------
def _font():
    return ImageFont.load_default()


def _is_bitmap(font) -> bool:
    return not isinstance(font, ImageFont.FreeTypeFont)


def _clean(text: str, font) -> str:
    text = " ".join(str(text).split())
    if _is_bitmap(font):  # the fallback bitmap font only knows Latin-1
        text = text.encode("latin-1", "replace").decode("latin-1")
    return text


def _ellipsis(font) -> str:
    return "..." if _is_bitmap(font) else "…"


def _line_height(font) -> int:
    if hasattr(font, "getmetrics"):
        ascent, descent = font.getmetrics()
        return ascent + descent + 2
    return font.getbbox("Ag")[3] + 3


def _truncate(text: str, font, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    dots = _ellipsis(font)
    while text and font.getlength(text.rstrip() + dots) > width:
        text = text[:-1]
    return text.rstrip() + dots if text else ""


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap measured in pixels; a word wider than a line is cut; the last line is truncated."""
    words, lines, current = text.split(), [], ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while font.getlength(word) > width and len(word) > 1:
            cut = len(word)
            while cut > 1 and font.getlength(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last, dots = lines[-1], _ellipsis(font)
        while last and font.getlength(last.rstrip() + dots) > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + dots
    return lines


def _load_image(source) -> Image.Image | None:
    """A PIL image from a PIL image, a path or an array; `None` when absent or unreadable."""
    if source is None:
        return None
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (str, os.PathLike)):
            with Image.open(source) as opened:
                opened.load()
                image = opened.copy()
        elif hasattr(source, "__array__"):
            import numpy as np

            image = Image.fromarray(np.asarray(source))
        else:
            return None
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except Exception:  # noqa: BLE001 -- a broken file is shown as missing, never fatal to the whole grid
        return None


def _tile(image: Image.Image | None, size: tuple[int, int], font) -> Image.Image:
    width, height = size
    if image is None:
        tile = Image.new("RGB", size, (200, 200, 200))
        draw = ImageDraw.Draw(tile)
        text = "missing"
        draw.text(((width - font.getlength(text)) / 2, height / 2 - _line_height(font) / 2), text,
                  fill=(90, 90, 90), font=font)
        return tile
    tile = Image.new("RGB", size, (255, 255, 255))
    fitted = ImageOps.contain(image, size, method=Image.Resampling.BICUBIC)
    tile.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
    return tile


def _text_tile(text: str, size: tuple[int, int], font) -> Image.Image:
    width, height = size
    tile = Image.new("RGB", size, (241, 243, 247))
    draw = ImageDraw.Draw(tile)
    line_h = _line_height(font)
    lines = _wrap(_clean(text, font), font, width - 8, max(1, (height - 8) // line_h))
    top = max(4, (height - line_h * len(lines)) // 2)
    for n, line in enumerate(lines):
        draw.text((4, top + n * line_h), line, fill=(20, 20, 20), font=font)
    return tile


def query_grid(
    queries: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    k: int = 5,
    thumb: tuple[int, int] = (96, 128),
    *,
    score_label: str = "cos",
) -> Path:
    """
    A grid image of queries and their top-`k` results, one row per query. Saved as PNG.

    Each query is `{"text": str | None, "image": PIL image | path | None, "results": [...]}`: a text-only query
    is drawn as its text on a light tile, an image query as the photo, a composed query as the photo with the
    text under it. Each result is `{"image": PIL image | path | None, "title": str, "score": float,
    "vsc": float | None, "relevant": bool | None}`: the photo (a grey "missing" tile when absent or unreadable),
    a caption line "`score_label` 0.81 · VSC 0.62" and the title, truncated to the tile width; a green frame when
    `relevant` is true, red when false, none when `None` or absent. Rows with fewer than `k` results leave the
    remaining cells empty; extra results are ignored.

    Args:
        queries: the rows.
        path: the PNG file (folders are created).
        k: result columns.
        thumb: `(width, height)` of each photo tile; photos are fitted inside it, aspect ratio kept.
        score_label: what the score is called in the captions.

    Returns:
        `path` as a `Path`.
    """
    queries = list(queries)
    if not queries:
        raise ValueError("query_grid needs at least one query")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    width, height = int(thumb[0]), int(thumb[1])
    if width < 16 or height < 16:
        raise ValueError(f"thumb must be at least 16x16, got {thumb}")
    font = _font()
    line_h = _line_height(font)
    frame, pad = 3, 8
    cell_w, image_h = width + 2 * frame, height + 2 * frame
    cell_h = image_h + 2 * line_h + 4
    first_result_x = pad + cell_w + 3 * pad  # a wider gap, with a rule, between the query and its results
    canvas = Image.new("RGB", (first_result_x + k * (cell_w + pad), pad + len(queries) * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    rule_x = pad + cell_w + (3 * pad) // 2
    draw.line([(rule_x, pad), (rule_x, canvas.height - pad)], fill=(210, 210, 210), width=1)

    def caption(x: int, y: int, lines: list[str], color=(40, 40, 40)) -> None:
        for n, line in enumerate(lines[:2]):
            draw.text((x + frame, y + image_h + 2 + n * line_h), _truncate(_clean(line, font), font, width),
                      fill=color, font=font)

    for row, query in enumerate(queries):
        y = pad + row * (cell_h + pad)
        text = query.get("text") or None
        image_source = query.get("image")
        if text is None and image_source is None:
            raise ValueError(f"query {row} has neither text nor image")
        x = pad
        if image_source is not None:
            canvas.paste(_tile(_load_image(image_source), (width, height), font), (x + frame, y + frame))
            if text is None:
                caption(x, y, ["image query"], color=(110, 110, 110))
            else:
                for n, line in enumerate(_wrap(_clean(f"+ {text}", font), font, width, 2)):
                    draw.text((x + frame, y + image_h + 2 + n * line_h), line, fill=(20, 20, 20), font=font)
        else:
            canvas.paste(_text_tile(str(text), (width, height), font), (x + frame, y + frame))
            caption(x, y, ["text query"], color=(110, 110, 110))

        for col, result in enumerate(list(query.get("results") or [])[:k]):
            x = first_result_x + col * (cell_w + pad)
            canvas.paste(_tile(_load_image(result.get("image")), (width, height), font), (x + frame, y + frame))
            relevant = result.get("relevant")
            if relevant is not None:
                draw.rectangle([x, y, x + cell_w - 1, y + image_h - 1], outline=_GREEN if relevant else _RED,
                               width=frame)
            parts = []
            if _is_number(result.get("score")):
                parts.append(f"{score_label} {float(result['score']):.2f}")
            if _is_number(result.get("vsc")):
                parts.append(f"VSC {float(result['vsc']):.2f}")
            caption(x, y, [" · ".join(parts), str(result.get("title") or "")])
    return atomic_save(path, lambda tmp: canvas.save(tmp, format="PNG"))


# -- model card ----------------------------------------------------------------------------------------------------
_REQUIRED_METRIC_KEYS = ("task_type", "dataset_name", "dataset_type", "split", "metric_type", "value")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def eval_results(metrics: Sequence[Mapping[str, Any]]) -> list:
    """
    `huggingface_hub.EvalResult`s from plain metric dicts `{"task_type", "dataset_name", "dataset_type", "split",
    "metric_type", "metric_name", "value"}` (optional: `task_name`, `dataset_config`).

    The model-index wants an id as `task.type`: a free name such as "image-to-image retrieval" becomes the type
    "image-to-image-retrieval" and, unless `task_name` is given, the task's pretty name. `metric_name` defaults
    to `metric_type`. Values must be finite numbers (numpy scalars are turned into Python numbers so the YAML
    stays plain). Metrics of one (task, dataset, split) group must agree on the dataset's and task's names.
    """
    from huggingface_hub import EvalResult

    results, names = [], {}
    for n, metric in enumerate(metrics):
        missing = [key for key in _REQUIRED_METRIC_KEYS if metric.get(key) in (None, "")]
        if missing:
            raise ValueError(f"metric {n} lacks {missing}")
        value = metric["value"]
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ValueError(f"metric {n} ({metric['metric_type']}) has a non-numeric or non-finite value: {value!r}")
        value = int(value) if isinstance(value, numbers.Integral) else float(value)
        task_type = str(metric["task_type"])
        task_slug = _slug(task_type)
        if not task_slug:
            raise ValueError(f"metric {n} has an empty task type")
        task_name = metric.get("task_name") or (task_type if task_slug != task_type else None)
        group = (task_slug, str(metric["dataset_type"]), metric.get("dataset_config"), str(metric["split"]))
        label = (str(metric["dataset_name"]), task_name)
        if names.setdefault(group, label) != label:
            raise ValueError(f"metrics of {group} disagree on dataset or task name: {names[group]} vs {label}")
        results.append(EvalResult(
            task_type=task_slug,
            task_name=task_name,
            dataset_type=str(metric["dataset_type"]),
            dataset_name=str(metric["dataset_name"]),
            dataset_config=metric.get("dataset_config"),
            dataset_split=str(metric["split"]),
            metric_type=str(metric["metric_type"]),
            metric_name=str(metric.get("metric_name") or metric["metric_type"]),
            metric_value=value,
        ))
    return results


def results_block(results_markdown: str, command: str) -> str:
    """What a card holds between `RESULTS_START` and `RESULTS_END`: the results and the command that made them."""
    command = command.strip()
    if "\n" in command:
        produced = f"Produced by:\n\n```bash\n{command}\n```"
    else:
        ticks = "``" if "`" in command else "`"
        space = " " if ticks == "``" else ""
        produced = f"Produced by: {ticks}{space}{command}{space}{ticks}"
    return f"{results_markdown.strip()}\n\n{produced}"


def _fenced(code: str, language: str) -> str:
    code = code.strip("\n")
    return code if code.lstrip().startswith("```") else f"```{language}\n{code}\n```"


def render_model_card(
    *,
    model_name: str,
    model_path_or_repo: str,
    base_model: str | None,
    datasets: Sequence[str],
    metrics: Sequence[Mapping[str, Any]],
    results_markdown: str,
    command: str,
    intended_use: str,
    training_data: str,
    evaluation_protocol: str,
    limitations: str,
    usage_snippet: str,
    license: str = "apache-2.0",
    library_name: str = "transformers",
    tags: Sequence[str] = DEFAULT_TAGS,
    pipeline_tag: str | None = None,
    extra_sections: Mapping[str, str] | None = None,
    summary: str | None = None,
) -> str:
    """
    A Hugging Face model card: YAML metadata (license, library_name, base_model, datasets, tags, pipeline_tag,
    model-index built from `metrics`, see [`eval_results`]) and the sections title, summary, intended use, how to
    load, training data, evaluation protocol, results, `extra_sections` (title -> markdown, in order) and
    limitations.

    The results section holds `results_markdown` and "Produced by: `command`" between `RESULTS_START` and
    `RESULTS_END`, so `replace_section(card, RESULTS_START, RESULTS_END, results_block(md, command))` refreshes
    it alone. The training-data section gets a sentence saying the data's own licence is unverified unless
    `training_data` already speaks of the licence. The card is checked with [`check_model_card`] before it is
    returned.

    Returns:
        The card as text, ending with a newline.
    """
    from huggingface_hub import ModelCardData

    for name, value in [("model_name", model_name), ("model_path_or_repo", model_path_or_repo),
                        ("results_markdown", results_markdown), ("command", command), ("intended_use", intended_use),
                        ("training_data", training_data), ("evaluation_protocol", evaluation_protocol),
                        ("limitations", limitations), ("usage_snippet", usage_snippet), ("license", license)]:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string")
    if not metrics:
        raise ValueError("the model-index needs at least one metric")
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    results = eval_results(metrics)
    data = ModelCardData(
        license=license,
        library_name=library_name,
        base_model=base_model or None,
        datasets=datasets or None,
        tags=list(tags) or None,
        pipeline_tag=pipeline_tag,
        model_name=model_name,
        eval_results=results,
    )

    if summary is None:
        tasks = list(dict.fromkeys(r.task_name or r.task_type for r in results))
        summary = (f"`{model_path_or_repo}`" + (f", fine-tuned from `{base_model}`" if base_model else "")
                   + f", evaluated on {', '.join(tasks)}.")
    training = training_data.strip()
    if datasets:
        training += "\n\nDatasets: " + ", ".join(f"`{d}`" for d in datasets) + "."
    if not re.search(r"licen[cs]e", training_data, flags=re.IGNORECASE):
        training += ("\n\nThe training data's own licence has not been verified; the licence above covers this "
                     "model, not the data.")
    sections = [
        f"# {model_name.strip()}",
        summary.strip(),
        "## Intended use",
        intended_use.strip(),
        "## How to load",
        f"From `{model_path_or_repo}`:",
        _fenced(usage_snippet, "python"),
        "## Training data",
        training,
        "## Evaluation protocol",
        evaluation_protocol.strip(),
        "## Results",
        f"{RESULTS_START}\n{results_block(results_markdown, command)}\n{RESULTS_END}",
    ]
    for title, body in (extra_sections or {}).items():
        sections += [f"## {title}", str(body).strip()]
    sections += ["## Limitations", limitations.strip()]
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    check_model_card(text)
    return text


def write_model_card(path: str | os.PathLike, text: str, *, check: bool = True) -> Path:
    """
    Writes a model card atomically. With `check` (default) the card must pass [`check_model_card`] first, so an
    invalid card never replaces a valid one (`ValueError`); a `text` that is not a string raises `TypeError`.
    """
    if not isinstance(text, str):
        raise TypeError(f"model card text must be a str, got {type(text).__name__}")
    if check:
        check_model_card(text)
    return atomic_write_text(path, text)


def _read_card(path_or_text: str | os.PathLike) -> str:
    if isinstance(path_or_text, os.PathLike) or (
        isinstance(path_or_text, str) and "\n" not in path_or_text and not path_or_text.lstrip().startswith("---")
    ):
        path = Path(path_or_text)
        if not path.is_file():
            raise ValueError(f"no model card file at {path}")
        return path.read_text(encoding="utf-8-sig")
    if isinstance(path_or_text, str):
        return path_or_text
    raise TypeError(f"expected a path or the card's text, got {type(path_or_text).__name__}")


def check_model_card(path_or_text: str | os.PathLike) -> dict:
    """
    Validates a model card (a path, or the card's text when it has a line break) and returns its metadata.

    Checks that the YAML front matter exists and parses (the same block `huggingface_hub.repocard.metadata_load`
    reads), that `huggingface_hub.ModelCard` accepts it (including its model-index), that `license` is set, and
    that `model-index` has at least one result, each with `task.type`, `dataset.name`, `dataset.type` and metrics
    with a `type` and a numeric `value`. Raises `ValueError` listing the problems. This runs offline; the Hub's
    own validation (`ModelCard.validate`) needs the network.
    """
    import yaml
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    text = _read_card(path_or_text)
    match = REGEX_YAML_BLOCK.search(text)
    if not match:
        raise ValueError("the model card has no YAML metadata block (--- ... --- at the top)")
    try:
        metadata = yaml.safe_load(match.group(2))
    except yaml.YAMLError as error:
        raise ValueError(f"the model card's metadata is not valid YAML: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError("the model card's metadata must be a mapping")  # noqa: TRY004 -- one error type
    try:
        ModelCard(text, ignore_metadata_errors=False)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"huggingface_hub cannot parse the model card's metadata: {error}") from error

    problems = []
    if not isinstance(metadata.get("license"), str) or not metadata["license"].strip():
        problems.append("no license")
    model_index = metadata.get("model-index")
    if not isinstance(model_index, list) or not model_index:
        problems.append("no model-index")
    else:
        n_results = 0
        for entry in model_index:
            if not isinstance(entry, dict) or not entry.get("name"):
                problems.append("a model-index entry without a name")
                continue
            for result in entry.get("results") or []:
                n_results += 1
                task, dataset = result.get("task") or {}, result.get("dataset") or {}
                if not task.get("type"):
                    problems.append("a result without task.type")
                if not dataset.get("name") or not dataset.get("type"):
                    problems.append("a result without dataset.name and dataset.type")
                metric_list = result.get("metrics") or []
                if not metric_list:
                    problems.append("a result without metrics")
                for metric in metric_list:
                    if not metric.get("type") or not _is_number(metric.get("value")):
                        problems.append(f"a metric without a type or a numeric value: {metric}")
        if n_results == 0:
            problems.append("model-index has no results")
    if problems:
        raise ValueError("invalid model card: " + "; ".join(dict.fromkeys(problems)))
    return metadata
