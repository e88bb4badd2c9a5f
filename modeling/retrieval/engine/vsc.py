"""Visual-semantic consistency (VSC): does a result's description agree with what the query asked for?

VSC is the raw cosine similarity, in [-1, 1], between two sentence embeddings (all-MiniLM-L6-v2 by default, the
same encoder and the same embeddings cache as the fused item-text score of the search engine): the **query's
description** and the **retrieved item's description**. It is reported beside the cosine similarity of the
model's own embeddings, for visual-only rankings as well as fused ones. Because VSC and the fused text score share
their encoder, a fused ranking is partly optimised for VSC: compare VSC across rankings of the same kind.

Item description (`source`): `"title"` (default; the product title, or its attribute caption when the title is
empty) or `"caption"` (the attribute caption, "navy blue tshirts for men, casual").

Query description, per mode:

* text query: the query text;
* image query of a catalog item ("more like this"): that item's description;
* composed query (reference + modification): the reference's description with the modification applied when it is
  derivable, else the modification text. Derivable means the modification names a value of a changeable attribute
  (baseColour, usage, season: the catalog's values and their phrasings, longest match first, e.g. "navy blue"
  before "blue") that differs from the reference's; the reference's current value is then replaced by the new one
  in its description (in the attribute caption when the description does not name the current value; appended to
  the caption when neither names it, as seasons usually are not). "Make it sleeveless" names no catalog value, so
  its description is the modification text. An uploaded
  reference photo has no description, so its composed queries use the modification text;
* an uploaded image with no text: none. VSC is then absent (`None`, "n/a" in the app), never invented.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from modeling.utils.io import atomic_save, atomic_write_text, save_npy

from modeling.data.composed import CHANGEABLE_ATTRIBUTES, display_value
from modeling.data.text import attribute_caption
from modeling.encoders.sentence import SentenceEncoder

VSC_SOURCES = ("title", "caption")
VSC_FILE = "vsc_{source}.npy"
VSC_MANIFEST = "vsc_{source}.json"


def item_vsc_text(row: Mapping, source: str = "title") -> str:
    """An item's description for VSC: its title (attribute caption when untitled) or its attribute caption."""
    if source not in VSC_SOURCES:
        raise ValueError(f"unknown VSC description source {source!r}; use one of {VSC_SOURCES}")
    caption = str(row.get("attr_caption") or "").strip() or attribute_caption(row)
    title = " ".join(str(row.get("title") or "").split())
    return title if source == "title" and title else caption


def _phrases(attribute: str, value: str) -> set[str]:
    forms = display_value(attribute, value)
    return {p for p in (value.lower(), forms["value"], forms["adjective"]) if p} | (
        {forms["occasion"]} if attribute == "usage" else set())


def _contains(text: str, phrase: str) -> re.Match | None:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, flags=re.IGNORECASE)


class ModificationParser:
    """Finds which attribute value a modification text names ("make it navy blue" -> baseColour = Navy Blue)."""

    def __init__(self, items: "pd.DataFrame | Mapping[str, Sequence[str]]",
                 attributes: Sequence[str] = CHANGEABLE_ATTRIBUTES):
        """`items`: the item table, or each attribute's values (a catalog that holds no item table)."""
        phrases = []
        for attribute in attributes:
            if attribute not in (items if isinstance(items, Mapping) else items.columns):
                continue
            column = items[attribute] if isinstance(items, Mapping) else items[attribute].astype(str)
            for value in sorted(set(column)):
                if value.strip() and value not in ("NA", "nan"):
                    phrases += [(p, attribute, value) for p in _phrases(attribute, value)]
        # Longest phrase first, so "navy blue" wins over "blue" and "smart casual" over "casual".
        self._phrases = sorted(set(phrases), key=lambda p: (-len(p[0]), p))

    def parse(self, modification: str, reference: Mapping | None = None) -> tuple[str, str] | None:
        """(attribute, new value) named by the modification and differing from the reference's, else None.

        Phrases are tried longest first and a matched span is not matched again by a shorter phrase, so "make it
        navy blue" of a navy blue item names its current colour (no change), not "blue"."""
        taken: list[tuple[int, int]] = []
        for phrase, attribute, value in self._phrases:
            match = _contains(modification, phrase)
            if match is None or any(a <= match.start() and match.end() <= b for a, b in taken):
                continue
            taken.append(match.span())
            if reference is not None and str(reference.get(attribute, "")).lower() == value.lower():
                continue
            return attribute, value
        return None

    def apply(self, reference: Mapping, modification: str, source: str = "title") -> str | None:
        """The reference's description with the modification applied; None when not derivable.

        The current value is replaced in the description (in the attribute caption when the description does not
        name it); when neither names it (a season, say), the new value is appended to the attribute caption."""
        change = self.parse(modification, reference)
        if change is None:
            return None
        attribute, value = change
        old = str(reference.get(attribute) or "").strip()
        caption = item_vsc_text(reference, "caption")
        for description in (item_vsc_text(reference, source), caption):
            match = _contains(description, old) if old else None
            if match:
                new = value if description[match.start()].isupper() else value.lower()
                return description[:match.start()] + new + description[match.end():]
        return f"{caption}, {value.lower()}"


class VSCScorer:
    """Item descriptions and their sentence embeddings; scores a query description against retrieved items."""

    def __init__(self, encoder: SentenceEncoder, items: pd.DataFrame, source: str = "title",
                 embeddings: np.ndarray | None = None, progress: bool = False,
                 lookup: Callable[[Sequence[int]], np.ndarray] | None = None):
        """`lookup`: the items' description embeddings by position, fetched per query (a vector store's `vsc`
        vectors) instead of held in `embeddings`. `items`: the item table, or a catalog that holds none (a
        `StoreCatalog`: its `rows` are fetched per description, nothing per item is kept; needs `lookup`)."""
        if source not in VSC_SOURCES:
            raise ValueError(f"unknown VSC description source {source!r}; use one of {VSC_SOURCES}")
        self.encoder, self.source = encoder, source
        self._lookup = lookup
        self.embeddings = None
        if not isinstance(items, pd.DataFrame):  # a catalog that holds no item table (`StoreCatalog`)
            if lookup is None:
                raise ValueError("VSC over a catalog without an item table needs a lookup of its embeddings")
            self._rows, self._records, self.descriptions, self.ids_digest = items.rows, None, None, None
            self._num_items, self.parser = len(items), ModificationParser(items.catalog_values.values)
            return
        records = items.to_dict("records")
        self.descriptions = [item_vsc_text(r, source) for r in records]
        self._records, self._num_items = records, len(records)
        self.parser = ModificationParser(items)
        self.ids_digest = _ids_digest(items)
        if lookup is not None:
            return
        if embeddings is None:
            # Catalogs repeat titles (12,168 distinct among the shared catalog's 14,999): each is encoded once.
            unique = list(dict.fromkeys(self.descriptions))
            row = {text: i for i, text in enumerate(unique)}
            embeddings = np.asarray(encoder.encode(unique, progress=progress))[[row[d] for d in self.descriptions]]
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape != (len(records), encoder.dim):
            raise ValueError(f"VSC embeddings have shape {embeddings.shape}, expected ({len(records)}, {encoder.dim})")
        self.embeddings = embeddings

    # -- query descriptions ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_items

    def _record(self, position: int) -> Mapping:
        return self._records[position] if self._records is not None else self._rows([position])[0]

    def item_description(self, position: int) -> str:
        if self.descriptions is None:
            return item_vsc_text(self._record(position), self.source)
        return self.descriptions[position]

    def composed_description(self, modification: str, position: int | None = None) -> str:
        """A composed query's description: see the module docstring."""
        modification = " ".join(modification.split())
        if position is None:
            return modification
        return self.parser.apply(self._record(position), modification, self.source) or modification

    # -- scoring ----------------------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(texts))

    def vectors(self, positions: Sequence[int]) -> np.ndarray:
        """The description embeddings of the items at `positions`."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._lookup is not None:
            return np.asarray(self._lookup(positions.tolist()), np.float32).reshape(len(positions), -1)
        return self.embeddings[positions]

    def scores(self, query_embedding: np.ndarray, positions: Sequence[int]) -> np.ndarray:
        """VSC of items at `positions` for a query description's (unit-norm) embedding."""
        return self.vectors(positions) @ np.asarray(query_embedding, np.float32)

    # -- persistence (next to an index; rebuilt when the items, the encoder or the source change) --------------------
    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {"encoder": self.encoder.name, "source": self.source, "num_items": len(self.descriptions),
                    "ids_sha256": self.ids_digest, "dim": int(self.embeddings.shape[1])}
        atomic_save(directory / VSC_FILE.format(source=self.source), lambda tmp: save_npy(tmp, self.embeddings))
        atomic_write_text(directory / VSC_MANIFEST.format(source=self.source), json.dumps(manifest, indent=2))

    @classmethod
    def load_or_build(cls, directory: str | os.PathLike | None, encoder: SentenceEncoder, items: pd.DataFrame,
                      source: str = "title") -> "VSCScorer":
        """The scorer cached in `directory` when it matches these items and encoder, else built (and cached)."""
        if directory is not None:
            directory = Path(directory)
            try:
                manifest = json.loads((directory / VSC_MANIFEST.format(source=source)).read_text())
                if manifest == {"encoder": encoder.name, "source": source, "num_items": len(items),
                                "ids_sha256": _ids_digest(items), "dim": encoder.dim}:
                    embeddings = np.load(directory / VSC_FILE.format(source=source), allow_pickle=False)
                    return cls(encoder, items, source, embeddings=embeddings)
            except (OSError, ValueError):
                pass  # absent, stale or unreadable: rebuild below
        scorer = cls(encoder, items, source, progress=True)
        if directory is not None:
            scorer.save(directory)
        return scorer


def _ids_digest(items: pd.DataFrame) -> str:
    return hashlib.sha256("\n".join(items["id"].astype(str)).encode()).hexdigest()[:16]


def summarise(results: Sequence) -> dict:
    """VSC@k (mean VSC of the results; None when VSC is absent) and the mean cosine of the top k."""
    vsc = [r.vsc for r in results if r.vsc is not None]
    return {"k": len(results),
            "vsc@k": float(np.mean(vsc)) if results and len(vsc) == len(results) else None,
            "mean_cosine": float(np.mean([r.visual_score for r in results])) if results else None,
            "mean_score": float(np.mean([r.score for r in results])) if results else None}


def observation_note(cosine: float, vsc: float | None, cos_high: float, vsc_high: float) -> str:
    """The seeds' observation column: how a query's mean cosine and VSC relate (thresholds: the run's medians)."""
    if vsc is None:
        return "no description: VSC n/a"
    if cosine >= cos_high and vsc >= vsc_high:
        return "Ideal retrieval in both metrics"
    if vsc >= vsc_high:
        return "Semantically right but visually weaker"
    if cosine >= cos_high:
        return "Visually close but semantically off"
    return "Weak in both metrics"


__all__ = ["ModificationParser", "VSCScorer", "VSC_SOURCES", "item_vsc_text", "observation_note", "summarise"]
