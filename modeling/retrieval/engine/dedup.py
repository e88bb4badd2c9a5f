"""Distinct results: near-duplicate catalog items collapse into one result with "N more like it".

The catalog lists many products under one title with an almost identical photo ("Q&Q Men Black Watch" five
times); a shopper sees one product five times. Two items are near-duplicates when their normalised titles are equal
and their image embeddings' cosine is at least `DUPLICATE_THRESHOLD`; groups are the transitive closure of that
relation (union-find), so no two items of different groups are ever near-duplicates, and a ranking that keeps the
best item of each group has no two results sharing a title and a near-identical photo.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

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


def collapse(order: np.ndarray, groups: np.ndarray, k: int) -> tuple[list[int], dict[int, list[int]], bool]:
    """Walk `order` (item positions, best first) keeping the first item of each group until `k` are kept.

    Returns:
        (kept positions, {kept position: the positions of its group found later in `order`}, whether `order` ran
        out before `k` groups were found — the caller may then look deeper). Duplicates found after the k-th kept
        item are still attached to their kept item.
    """
    kept: list[int] = []
    first: dict[int, int] = {}
    duplicates: dict[int, list[int]] = {}
    for position in np.asarray(order).tolist():
        group = int(groups[position])
        if group in first:
            duplicates.setdefault(first[group], []).append(position)
        elif len(kept) < k:
            first[group] = position
            kept.append(position)
    return kept, duplicates, len(kept) < k


__all__ = ["COLLAPSE_OVERFETCH", "DUPLICATE_THRESHOLD", "collapse", "duplicate_groups"]
