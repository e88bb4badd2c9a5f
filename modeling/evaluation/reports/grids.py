"""
Query grids as PNG files (`query_grid`): one row per query (its text, photo or both) and its top results, each
result captioned with its score and title and framed green or red by relevance. PIL only; written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from modeling.evaluation.reports.tables import is_number
from modeling.utils.io import atomic_save

_GREEN = (22, 163, 74)
_RED = (220, 38, 38)


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


@dataclass(frozen=True)
class _Layout:
    """Sizes of a grid: photo tiles of `width` x `height` in cells framed by `frame` pixels, `pad` apart, with two
    caption lines under each photo; the results start at `first_result_x`."""

    font: Any
    width: int
    height: int
    frame: int = 3
    pad: int = 8

    @property
    def line_h(self) -> int:
        return _line_height(self.font)

    @property
    def cell_w(self) -> int:
        return self.width + 2 * self.frame

    @property
    def image_h(self) -> int:
        return self.height + 2 * self.frame

    @property
    def cell_h(self) -> int:
        return self.image_h + 2 * self.line_h + 4

    @property
    def first_result_x(self) -> int:
        return self.pad + self.cell_w + 3 * self.pad  # a wider gap, with a rule, between the query and its results


def _caption(draw: ImageDraw.ImageDraw, layout: _Layout, x: int, y: int, lines: list[str],
             color=(40, 40, 40)) -> None:
    """Up to two caption lines under the photo of the cell at (x, y), each truncated to the tile width."""
    font = layout.font
    for n, line in enumerate(lines[:2]):
        draw.text((x + layout.frame, y + layout.image_h + 2 + n * layout.line_h),
                  _truncate(_clean(line, font), font, layout.width), fill=color, font=font)


def _draw_query(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout, row: int, query, y: int) -> None:
    """The query's cell of row `row`: its photo (with its text under it, if any) or its text on a light tile."""
    text = query.get("text") or None
    image_source = query.get("image")
    if text is None and image_source is None:
        raise ValueError(f"query {row} has neither text nor image")
    x, font, size = layout.pad, layout.font, (layout.width, layout.height)
    if image_source is not None:
        canvas.paste(_tile(_load_image(image_source), size, font), (x + layout.frame, y + layout.frame))
        if text is None:
            _caption(draw, layout, x, y, ["image query"], color=(110, 110, 110))
        else:
            for n, line in enumerate(_wrap(_clean(f"+ {text}", font), font, layout.width, 2)):
                draw.text((x + layout.frame, y + layout.image_h + 2 + n * layout.line_h), line, fill=(20, 20, 20),
                          font=font)
    else:
        canvas.paste(_text_tile(str(text), size, font), (x + layout.frame, y + layout.frame))
        _caption(draw, layout, x, y, ["text query"], color=(110, 110, 110))


def _draw_result(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout, result, x: int, y: int,
                 score_label: str) -> None:
    """A result's cell: its photo, framed green or red by relevance, and the score line and title under it."""
    canvas.paste(_tile(_load_image(result.get("image")), (layout.width, layout.height), layout.font),
                 (x + layout.frame, y + layout.frame))
    relevant = result.get("relevant")
    if relevant is not None:
        draw.rectangle([x, y, x + layout.cell_w - 1, y + layout.image_h - 1], outline=_GREEN if relevant else _RED,
                       width=layout.frame)
    parts = []
    if is_number(result.get("score")):
        parts.append(f"{score_label} {float(result['score']):.2f}")
    if is_number(result.get("vsc")):
        parts.append(f"VSC {float(result['vsc']):.2f}")
    _caption(draw, layout, x, y, [" · ".join(parts), str(result.get("title") or "")])


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
    layout = _Layout(_font(), width, height)
    pad, cell_w, cell_h = layout.pad, layout.cell_w, layout.cell_h
    canvas = Image.new("RGB", (layout.first_result_x + k * (cell_w + pad), pad + len(queries) * (cell_h + pad)),
                       "white")
    draw = ImageDraw.Draw(canvas)
    rule_x = pad + cell_w + (3 * pad) // 2
    draw.line([(rule_x, pad), (rule_x, canvas.height - pad)], fill=(210, 210, 210), width=1)
    for row, query in enumerate(queries):
        y = pad + row * (cell_h + pad)
        _draw_query(canvas, draw, layout, row, query, y)
        for col, result in enumerate(list(query.get("results") or [])[:k]):
            _draw_result(canvas, draw, layout, result, layout.first_result_x + col * (cell_w + pad), y, score_label)
    return atomic_save(path, lambda tmp: canvas.save(tmp, format="PNG"))


__all__ = ["query_grid"]
