"""What the engine asks a vector backend and what comes back: the backend-neutral ranking request.

- `Scope`: which items may come back, as a boolean mask over index positions and as the filters and excluded ids a
  store turns into a server-side filter;
- `ScoreTerm`: an additive per-item score declared once, backend-neutral: `weight` for every item whose catalog
  value of `attribute` is one of `values` (query-intent boosts, negation penalties, the Unisex half credit, "more
  like this" consistency). FAISS evaluates the terms in numpy (`AttributeTable.evaluate`), Qdrant renders each as a
  payload-condition formula term;
- `RankRequest`: query vectors per signal, scope, terms, k and how many rows (`depth`);
- `VectorBackend`: what a backend implements (`rank`, `nearest`, `vector`);
- `Ranked`: one ranked row (index position, the score and the signals it was made of);
- `top_k_order`: best first, ties to catalog order (what every backend's order means).

Near-duplicate collapsing is no backend's business: the engine collapses the rows a backend returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from modeling.utils.topk import topk_indices


class Scope(NamedTuple):
    """The items a query may return: `mask` over index positions (None: every item) and the `filters` and
    `exclude_ids` it was made from (what a store filters by)."""

    mask: np.ndarray | None
    filters: Mapping | None = None
    exclude_ids: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.mask is not None and not self.mask.any()

    @property
    def size(self) -> int | None:
        """How many items it allows (None: every item)."""
        return None if self.mask is None else int(self.mask.sum())


@dataclass(frozen=True)
class ScoreTerm:
    """`+ weight` for the items whose catalog value of `attribute` is one of `values` (weights as float32 holds
    them, so every backend adds the same number)."""

    attribute: str
    values: tuple[str, ...]
    weight: float


@dataclass
class Ranked:
    """One ranked item: its index `position`, the ranking `score` and the signals it was made of."""

    position: int
    score: float
    visual: float
    text: float | None = None
    lexical: float | None = None
    duplicates: list[int] = field(default_factory=list)  # positions of the near-duplicates collapsed into it


@dataclass(frozen=True)
class RankRequest:
    """One ranking, backend-neutral: the top `depth` allowed items by visual cosine alone (no `text_query`) or by
    `(1 - weight) * visual + weight * (text + lexical_weight * keywords)` (keywords: the BM25 match of `query_text`
    normalised to [0, 1]), plus the `terms`.

    `exact`: score every allowed item exactly (ties to catalog order), not through an approximate index search
    (the engine asks for it whenever it adds terms or collapses near-duplicates). `local_scores`: per-item scores
    only an in-process backend can add (a photo's head agreement on a catalog without the attribute's column; a
    store leaves them out)."""

    visual_query: np.ndarray
    k: int  # the results the caller wants (sizes candidate pools)
    depth: int  # the rows to return (more than `k` when the caller collapses near-duplicates)
    scope: Scope
    text_query: np.ndarray | None = None
    weight: float = 0.0
    query_text: str | None = None
    lexical_weight: float = 0.0
    terms: tuple[ScoreTerm, ...] = ()
    exact: bool = False
    local_scores: Callable[[np.ndarray], np.ndarray | None] | None = None

    @property
    def fused(self) -> bool:
        return self.text_query is not None and self.weight > 0

    def deeper(self, depth: int) -> "RankRequest":
        from dataclasses import replace

        return replace(self, depth=int(depth))


@dataclass(frozen=True)
class LocalCatalog:
    """What the engine holds locally and shares with its backend: the catalog index (item table, vectors, item-text
    embeddings), the ids in index order, the id -> position map (built once, by the engine; over a catalog that
    holds no item table, views that read the collection per request) and the keyword match (BM25 of a query text
    over every item, normalised to [0, 1]; built once, by the engine)."""

    index: Any
    ids: Sequence[str]
    positions: Mapping[str, int]
    keywords: Callable[[str], np.ndarray] | None = None


class VectorBackend(Protocol):
    """A vector backend (FAISS in process, a Qdrant collection, ...): it ranks requests over the catalog whose
    index positions the engine knows. It never collapses near-duplicates (the engine does, over its rows)."""

    name: str
    collapse_growth: int  # how much deeper a collapsing ranking asks next when too few groups came back

    def rank(self, request: RankRequest) -> list[Ranked]:
        """The top `request.depth` allowed items, best first, exact ties to the lower position."""

    def nearest(self, query: np.ndarray, n: int, scope: Scope) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `n` nearest allowed items of a unit image query: (cosines, positions, unit vectors)."""

    def vector(self, position: int) -> np.ndarray:
        """A catalog item's stored unit image vector."""


def wanted_values(filters: Mapping | None) -> dict[str, set[str]]:
    """The active filters: each key's values (a string or a list of strings) stripped and case-folded; keys whose
    values are all empty or None left out."""
    wanted = {}
    for key, values in (filters or {}).items():
        if values is None or isinstance(values, (str, int, float)):
            values = [values]
        chosen = {str(value).strip().casefold() for value in values if value is not None and str(value).strip()}
        if chosen:
            wanted[key] = chosen
    return wanted


def active_filters(filters: Mapping | None, allowed: Sequence[str]) -> dict[str, set[str]] | None:
    """`wanted_values` of `filters`, None when none is active; `ValueError` for an active key not in `allowed`."""
    wanted = wanted_values(filters)
    unknown = [key for key in wanted if key not in allowed]
    if unknown:
        raise ValueError(f"unknown filter keys {unknown}; allowed keys are {list(allowed)}")
    return wanted or None


def filter_mask(items, filters: Mapping | None, folded: dict) -> np.ndarray | None:
    """Boolean mask over `items` (a DataFrame) matching metadata `filters`: each key an item column, its value a
    string or a list of strings (any may match), compared case-insensitively after stripping; all keys must match;
    empty values are ignored; None when no filter is active. `folded` caches the case-folded columns.

    Raises:
        `ValueError`: a key with a non-empty value is not an item column.
    """
    wanted = active_filters(filters, items.columns)
    if wanted is None:
        return None
    mask = np.ones(len(items), dtype=bool)
    for key, values in wanted.items():
        if key not in folded:
            folded[key] = items[key].astype("string").str.strip().str.casefold()
        mask &= folded[key].isin(values).to_numpy(dtype=bool, na_value=False)
    return mask


def top_k_order(scores: np.ndarray, positions: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` best `scores`, best first, ties broken by `positions` (catalog order): the first `k` of
    `np.lexsort((positions, -scores))` without sorting everything (`modeling.utils.topk.topk_indices`)."""
    return topk_indices(np.asarray(scores)[None], k, tie_key=np.asarray(positions)[None])[0]


class AttributeTable:
    """Each item's catalog values as integer codes, for evaluating `ScoreTerm`s in numpy: one table lookup per run
    of terms on one attribute."""

    def __init__(self, items, attributes: Sequence[str]):
        self.codes, self.vocab = {}, {}
        for attribute in attributes:
            if attribute in items:
                codes, uniques = np.unique(items[attribute].astype(str).to_numpy(), return_inverse=True)[::-1]
                self.codes[attribute] = codes.astype(np.int32)
                self.vocab[attribute] = {v: i for i, v in enumerate(uniques.tolist())}

    def evaluate(self, terms: Sequence[ScoreTerm], positions: np.ndarray | None = None) -> np.ndarray | None:
        """Sum of the terms (float32) for the items at `positions` (default all); None when there are none.
        Consecutive terms on one attribute with disjoint values share one table (an item holds one value, so the
        sum is the same)."""
        total = None
        table, attribute, seen = None, None, set()
        for term in [*terms, None]:
            if term is not None and term.attribute not in self.codes:
                continue
            flush = term is None or term.attribute != attribute or seen & set(term.values)
            if flush and table is not None:
                codes = self.codes[attribute]
                part = table[codes if positions is None else codes[positions]]
                total = part if total is None else total + part
                table, seen = None, set()
            if term is None:
                break
            if table is None:
                attribute, table = term.attribute, np.zeros(len(self.vocab[term.attribute]), dtype=np.float32)
            vocab = self.vocab[attribute]
            for value in term.values:
                if value in vocab:
                    table[vocab[value]] = term.weight
            seen |= set(term.values)
        return total


__all__ = ["AttributeTable", "LocalCatalog", "RankRequest", "Ranked", "ScoreTerm", "Scope", "VectorBackend",
           "active_filters", "filter_mask", "top_k_order", "wanted_values"]
