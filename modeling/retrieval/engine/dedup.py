"""Distinct results: near-duplicate catalog items collapse into one result with "N more like it".

The catalog lists many products under one title with an almost identical photo ("Q&Q Men Black Watch" five
times); a shopper sees one product five times. Two items are near-duplicates when their normalised titles are equal
and their image embeddings' cosine is at least `DUPLICATE_THRESHOLD`; groups are the transitive closure of that
relation (union-find), so no two items of different groups are ever near-duplicates, and a ranking that keeps the
best item of each group has no two results sharing a title and a near-identical photo.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from modeling.data.text import normalise_title
from modeling.retrieval.common.ranking import Ranked, RankRequest
from modeling.retrieval.common.types import QueryError

# Cosine of the model's image embeddings above which two same-title items count as the same product. Measured on
# the shared catalog (runs/dual-encoder): same-title pairs have a median cosine of 0.95, random pairs of one article
# type 0.85 (99th percentile 0.97), so a same title is required as well.
DUPLICATE_THRESHOLD = 0.95
# How many candidates per requested result a collapsing search looks at before asking for more.
COLLAPSE_OVERFETCH = 4


def duplicate_groups(titles: Sequence[str], vectors: np.ndarray, threshold: float = DUPLICATE_THRESHOLD) -> np.ndarray:
    """Group id (int64, the group's smallest position) of every item; an item without near-duplicates is its own
    group. `titles` are compared as given (normalise them first), `vectors` are unit rows."""
    n = len(titles)
    parent = np.arange(n, dtype=np.int64)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    by_title: dict[str, list[int]] = defaultdict(list)
    for position, title in enumerate(titles):
        if title:
            by_title[title].append(position)
    for positions in by_title.values():
        if len(positions) < 2:
            continue
        block = np.asarray(vectors[positions], dtype=np.float32)
        similar = np.argwhere(np.triu(block @ block.T >= threshold, 1))
        for a, b in similar:
            ra, rb = find(positions[a]), find(positions[b])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def collapse(order: np.ndarray, groups, k: int) -> tuple[list[int], dict[int, list[int]], bool]:
    """Walk `order` (item positions, best first) keeping the first item of each group until `k` are kept;
    `groups[position]` is the group of an item (an array over every position, or a mapping of those in `order`).

    Returns:
        (kept positions, {kept position: the positions of its group found later in `order`}, whether `order` ran
        out before `k` groups were found — the caller may then look deeper). Duplicates found after the k-th kept
        item are still attached to their kept item.
    """
    kept: list[int] = []
    first: dict[int, int] = {}
    duplicates: dict[int, list[int]] = {}
    for position in np.asarray(order).tolist():
        group = groups[position]
        if group in first:
            duplicates.setdefault(first[group], []).append(position)
        elif len(kept) < k:
            first[group] = position
            kept.append(position)
    return kept, duplicates, len(kept) < k


class DuplicateGroups:
    """The catalog's near-duplicate groups (computed once, on first use) and the collapse of a backend's rows:
    written once for every backend."""

    def __init__(self, items, vectors: Callable[[], np.ndarray], source=None):
        """Groups computed from the titles of `items` and `vectors()` on first use, or kept by `source`, a catalog
        that knows its groups (a collection's `group` payloads, `StoreCatalog`: `group_keys(positions)`,
        `members(keys, filters, exclude_ids)`; nothing per item is held then)."""
        self.items, self.vectors, self.source = items, vectors, source
        self._groups: np.ndarray | None = None
        # The items of groups of two or more: their positions grouped (catalog order within a group), and the
        # group id of each (sorted), for a binary search; nothing per item beyond two integers per grouped item.
        self._order = self._keys = np.zeros(0, np.int64)
        self._lock = threading.Lock()

    def groups(self) -> np.ndarray:
        """Group id of every item (`duplicate_groups` over normalised titles and the image vectors); a catalog that
        keeps its groups (`source`, a collection) has no such array."""
        if self.source is not None:
            raise QueryError("Every item's near-duplicate group needs the catalog in process (a local index "
                             "folder): the engine serves from a vector store alone.")
        with self._lock:
            if self._groups is not None:
                return self._groups
        titles = (self.items["title"].map(normalise_title).tolist() if "title" in self.items
                  else [""] * len(self.items))
        return self._set(duplicate_groups(titles, self.vectors()))

    def _set(self, groups: np.ndarray) -> np.ndarray:
        order = np.argsort(groups, kind="stable")
        keys = groups[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        shared = np.repeat(np.diff(np.r_[starts, len(keys)]) > 1, np.diff(np.r_[starts, len(keys)]))
        with self._lock:
            self._order, self._keys = order[shared], keys[shared]
            self._groups = groups
        return groups

    def members(self, group: int) -> list[int]:
        """The positions of a group of two or more items, in catalog order ([] for an item alone)."""
        begin, end = np.searchsorted(self._keys, [group, group + 1])
        return self._order[begin:end].tolist()

    def collapsed(self, rank: Callable[[RankRequest], list[Ranked]], request: RankRequest, growth: int) -> list[Ranked]:
        """The best row of each of the best `request.k` groups, each listing the rest of its group that the scope
        allows (catalog order). Ranks `k * COLLAPSE_OVERFETCH` deep (at least 50), `growth` times deeper while
        fewer than `k` groups came back."""
        k, scope = int(request.k), request.scope
        if self.source is not None:
            allowed = len(self.source)  # at most; a shorter ranking than asked ends the search as well
        else:
            allowed = len(self.groups()) if scope.mask is None else int(scope.mask.sum())
        depth = min(allowed, max(k * COLLAPSE_OVERFETCH, 50))
        while True:
            ranked = rank(request.deeper(depth))
            order = np.array([r.position for r in ranked], dtype=np.int64)
            kept, _, short = collapse(order, self.keys_of(order), k)
            if not short or depth >= allowed or len(ranked) < depth:
                break
            depth = min(allowed, depth * growth)
        by_position = {r.position: r for r in ranked}
        keys = self.keys_of(np.array(kept, dtype=np.int64))
        members = self.allowed_members([keys[p] for p in kept], request.scope)
        out = []
        for position in kept:
            row = by_position[position]
            row.duplicates = [m for m in members.get(keys[position], ()) if m != position]
            out.append(row)
        return out

    def keys_of(self, positions: np.ndarray):
        """The group of each item at `positions`, indexable by position."""
        if self.source is None:
            return self.groups()
        return dict(zip(positions.tolist(), self.source.group_keys(positions.tolist())))

    def allowed_members(self, keys, scope) -> dict:
        """Group -> its members the scope allows (catalog order), for the groups `keys` of two or more items."""
        if self.source is not None:
            return self.source.members(keys, scope.filters, scope.exclude_ids)
        mask = scope.mask
        return {key: [m for m in self.members(int(key)) if mask is None or mask[m]] for key in set(keys)}


__all__ = ["COLLAPSE_OVERFETCH", "DUPLICATE_THRESHOLD", "DuplicateGroups", "collapse", "duplicate_groups"]
