"""Near-duplicate groups of an item table: `DuplicateGroups.members` against a brute-force grouping."""

import numpy as np
import pandas as pd

from modeling.retrieval.engine.dedup import DUPLICATE_THRESHOLD, DuplicateGroups


def test_members_are_the_groups_of_two_or_more_in_catalog_order():
    rng = np.random.default_rng(3)
    n = 300
    titles = [f"Title {i}" for i in rng.integers(0, 60, n)]
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    for i in range(1, n, 3):  # every third item a near copy of the one before, with its title
        vectors[i], titles[i] = vectors[i - 1] + 0.01 * rng.normal(size=16), titles[i - 1]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    duplicates = DuplicateGroups(pd.DataFrame({"title": titles}), lambda: vectors)
    groups = duplicates.groups()
    # brute force: the transitive closure of (same title and cosine >= threshold)
    label = list(range(n))
    changed = True
    while changed:
        changed = False
        for a in range(n):
            for b in range(a + 1, n):
                if titles[a] == titles[b] and vectors[a] @ vectors[b] >= DUPLICATE_THRESHOLD and label[a] != label[b]:
                    low = min(label[a], label[b])
                    label = [low if x in (label[a], label[b]) else x for x in label]
                    changed = True
    assert len(set(label)) < n - 20  # the near copies of one title did group
    for position in range(n):
        want = [p for p in range(n) if label[p] == label[position]]
        got = duplicates.members(int(groups[position]))
        assert got == (want if len(want) > 1 else [])
