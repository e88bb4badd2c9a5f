"""Shopper-style text queries with attribute relevance: file format, relevance rule and a generator.

Format, one JSON object per line (values matched exactly as in the catalog):

    {"query": "black casual shoes for men", "match": {"gender": ["Men"], "articleType": ["Casual Shoes"], ...}}

An item is relevant when, for every key in `match`, its attribute value is one of the listed values, and (an
optional `"exclude"` object of the same shape, for negated queries) none of its attributes has an excluded value.

`generate_queries` writes such a file from the attribute combinations present in one split of a catalog, phrased
the way people type into a shop's search box ("watches for men", "men formal black shoes", "red summer dresses").
It is code, not a hand-picked list, so the file can be regenerated for any catalog or split.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from modeling.utils.io import atomic_write_text

GENDER_WORDS = {"Men": "men", "Women": "women", "Boys": "boys", "Girls": "girls"}
# Catalog spellings that nobody types.
TYPE_WORDS = {"Tshirts": "t-shirts", "Innerwear Vests": "vests", "Lounge Pants": "lounge pants",
              "Track Pants": "track pants", "Perfume and Body Mist": "perfume", "Lip Gloss": "lip gloss",
              "Necklace and Chains": "necklaces", "Free Gifts": "free gifts"}

# (attributes combined, templates). {g}=gender word, {c}=colour, {t}=article type, {u}=usage, {s}=season.
PATTERNS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("gender", "articleType"), ("{t} for {g}", "{g} {t}", "{g}'s {t}")),
    (("articleType", "baseColour"), ("{c} {t}",)),
    (("gender", "articleType", "baseColour"), ("{c} {t} for {g}", "{g} {c} {t}", "{g}'s {c} {t}")),
    (("articleType", "usage"), ("{u} {t}",)),
    (("gender", "articleType", "usage", "baseColour"), ("{g} {u} {c} {t}", "{c} {u} {t} for {g}")),
    (("articleType", "season", "baseColour"), ("{c} {s} {t}",)),
]


def type_word(article_type: str) -> str:
    return TYPE_WORDS.get(article_type, article_type.lower())


def phrase(template: str, values: Mapping[str, str]) -> str | None:
    """Fill a template from attribute values; None when a value cannot be phrased (e.g. Unisex, empty)."""
    words = {}
    if "gender" in values:
        if values["gender"] not in GENDER_WORDS:
            return None
        words["g"] = GENDER_WORDS[values["gender"]]
    for key, slot in (("articleType", "t"), ("baseColour", "c"), ("usage", "u"), ("season", "s")):
        if key in values:
            if not values[key] or values[key] in ("NA", "Multi"):
                return None
            words[slot] = type_word(values[key]) if key == "articleType" else values[key].lower()
    return " ".join(template.format(**words).split())


def generate_queries(items: pd.DataFrame, *, min_relevant: int = 3, per_pattern: int = 60,
                     seed: int = 0) -> list[dict]:
    """Queries from attribute combinations with at least `min_relevant` items, at most `per_pattern` each."""
    rng = random.Random(seed)
    queries, seen = [], set()
    for attributes, templates in PATTERNS:
        if not set(attributes) <= set(items.columns):
            continue
        counts = Counter(tuple(row) for row in items[list(attributes)].astype(str).itertuples(index=False))
        combos = sorted(c for c, n in counts.items() if n >= min_relevant and all(c))
        rng.shuffle(combos)
        made = 0
        for combo in combos:
            values = dict(zip(attributes, combo))
            text = phrase(rng.choice(templates), values)
            if text is None or text in seen:
                continue
            seen.add(text)
            queries.append({"query": text, "match": {k: [v] for k, v in values.items()}})
            made += 1
            if made >= per_pattern:
                break
    return queries


def write_queries(queries: Sequence[Mapping], path: str | Path) -> None:
    """Write a query file (one JSON object per line) atomically."""
    atomic_write_text(path, "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries))


def load_queries(path: str | Path) -> list[dict]:
    """Read a query file; a malformed line is an error naming the line."""
    queries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record.get("query"), str) or not isinstance(record.get("match"), dict):
                raise ValueError("needs a 'query' string and a 'match' object")
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
        for key in ("match", "exclude"):
            if key in record:
                record[key] = {k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in record[key].items()}
        queries.append(record)
    return queries


def relevance_mask(items: pd.DataFrame, match: Mapping[str, Sequence[str]],
                   exclude: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
    """Items whose attributes satisfy every key of `match` (exact values) and none of the values of `exclude`
    (a negated query: "running shoes not black" matches Sports Shoes and excludes baseColour Black)."""
    mask = np.ones(len(items), dtype=bool)
    for rule, negate in ((match, False), (exclude or {}, True)):
        for key, values in rule.items():
            if key not in items.columns:
                raise KeyError(f"query matches on {key!r}, which the catalog does not have")
            hit = items[key].astype(str).isin(list(values)).to_numpy()
            mask &= ~hit if negate else hit
    return mask


def main(argv=None) -> None:
    import argparse

    from modeling.data.catalog import load_catalog

    p = argparse.ArgumentParser(description="Generate a shopper-style query file from a catalog split.")
    p.add_argument("--catalog", default="../shared/data")
    p.add_argument("--split", default="val")
    p.add_argument("--output", required=True)
    p.add_argument("--min-relevant", type=int, default=3)
    p.add_argument("--per-pattern", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    dataset = load_catalog(args.catalog, split=args.split, check_images=False)
    items = dataset.remove_columns("image").to_pandas().fillna("").astype(str)
    queries = generate_queries(items, min_relevant=args.min_relevant, per_pattern=args.per_pattern, seed=args.seed)
    write_queries(queries, args.output)
    print(f"wrote {len(queries)} queries to {args.output}")


if __name__ == "__main__":
    main()
