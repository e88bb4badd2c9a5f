"""Analyses of rankings beyond precision: per-attribute consistency and out-of-domain query sets.

Per-attribute consistency (the seeds' "controlled variation" analysis): for a query item (an image query, or the
reference of a composed query) and its top-K results, the share of results that keep each attribute of the query
item (articleType, baseColour, gender, usage, season). For a composed query that changes one attribute, the share
of results whose changed attribute has the value the text asked for is reported as "changed attribute matches
text" (its "kept" share is then expected to be low, which is right).

Out-of-domain queries (the seeds' "kurta" case): `ood_query_sets` writes, from a gallery, two query sets of the same
forms — the held-out items' own titles and attribute phrases ("kurtas for women", "blue kurtas", ...) — one for the
held-out value of a field (e.g. articleType = Kurtas, excluded from training with `train.py --exclude`) and one
for every other value, so a model's drop on the held-out set can be read against the same forms in domain.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pandas as pd

from modeling.data.text import normalise_title
from modeling.data.queries import generate_queries

CONSISTENCY_ATTRIBUTES = ("articleType", "baseColour", "gender", "usage", "season")
CHANGED = "changed attribute matches text"


def attribute_consistency(query_items: pd.DataFrame, result_positions: np.ndarray, items: pd.DataFrame,
                          k: int = 10, attributes: Sequence[str] = CONSISTENCY_ATTRIBUTES,
                          changed: Sequence[tuple[str, str]] | None = None) -> dict[str, float]:
    """Share of the top-k results keeping each attribute of their query item.

    Args:
        query_items: one row per query (the query item, or a composed query's reference), with the attributes.
        result_positions: (Q, >=k) gallery positions of each query's ranked results; -1 pads missing results
            (they count as not keeping anything).
        items: the gallery rows the positions point into.
        changed: for composed queries, per query `(attribute, target value)`; adds `CHANGED`, the share of results
            whose `attribute` equals the target value.
    """
    positions = np.asarray(result_positions)
    if positions.ndim != 2 or positions.shape[0] != len(query_items) or positions.shape[1] < k:
        raise ValueError(f"result_positions must be ({len(query_items)}, >={k}), got {positions.shape}")
    top = positions[:, :k]
    valid = top >= 0
    safe = np.where(valid, top, 0)
    out = {}
    for attribute in attributes:
        if attribute not in items.columns or attribute not in query_items.columns:
            continue
        gallery = items[attribute].astype(str).to_numpy()
        query = query_items[attribute].astype(str).to_numpy()
        out[attribute] = float(((gallery[safe] == query[:, None]) & valid).sum() / top.size)
    if changed is not None:
        if len(changed) != len(query_items):
            raise ValueError(f"changed has {len(changed)} entries for {len(query_items)} queries")
        hits = 0
        for row, (attribute, value) in enumerate(changed):
            gallery = items[attribute].astype(str).to_numpy()
            hits += int(((gallery[safe[row]] == str(value)) & valid[row]).sum())
        out[CHANGED] = hits / top.size
    return out


def ood_query_sets(items: pd.DataFrame, field: str, value: str, *, max_titles: int = 200,
                   per_pattern: int = 60, seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """{"held_out": {...}, "in_domain": {...}}, each with "titles" and "attributes" query lists.

    Titles: one query per distinct normalised title of the held-out items (relevant: items with that title), and
    three times as many titles of other items, drawn at random. Attributes: the shopper-phrase generator of
    `modeling.data.queries` run on the gallery; queries matching `field = value` go to the held-out set, others of the
    same forms (three per held-out query of the form, at random) to the in-domain set. Queries are
    `{"query", "match"}`.
    """
    if field not in items.columns:
        raise ValueError(f"the gallery has no column {field!r}")
    held = items[field].astype(str) == str(value)
    if not held.any():
        raise ValueError(f"no gallery item has {field} = {value!r}; choose a gallery that contains them")
    rng = random.Random(seed)

    def titles(mask) -> list[dict]:
        distinct = sorted({normalise_title(t) for t in items.loc[mask, "title"] if str(t).strip()})
        return [{"query": t, "match": {"title": [t]}} for t in distinct]

    held_titles = titles(held)[:max_titles]
    other_titles = titles(~held)
    rng.shuffle(other_titles)
    queries = generate_queries(items, per_pattern=10_000, seed=seed)
    held_attr = [q for q in queries if q["match"].get(field) == [str(value)]]
    forms: dict[tuple, list[dict]] = {}
    for q in queries:
        if q["match"].get(field) != [str(value)]:
            forms.setdefault(tuple(sorted(q["match"])), []).append(q)
    in_attr = []
    for form, qs in sorted(forms.items()):
        wanted = sum(tuple(sorted(q["match"])) == form for q in held_attr)
        if wanted:  # only forms the held-out set has, three times as many (at most per_pattern)
            rng.shuffle(qs)
            in_attr += qs[:min(wanted * 3, per_pattern)]
    return {"held_out": {"titles": held_titles, "attributes": held_attr},
            "in_domain": {"titles": other_titles[:max(len(held_titles), 1) * 3], "attributes": in_attr}}


def match_mask(items: pd.DataFrame, match: dict) -> np.ndarray:
    """Relevance of an OOD query: attribute equality, or normalised title equality for `{"title": [...]}`."""
    mask = np.ones(len(items), dtype=bool)
    for key, values in match.items():
        column = items[key].astype(str)
        if key == "title":
            column = column.map(normalise_title)
        mask &= column.isin([str(v) for v in values]).to_numpy()
    return mask


__all__ = ["CHANGED", "CONSISTENCY_ATTRIBUTES", "attribute_consistency", "match_mask", "ood_query_sets"]
