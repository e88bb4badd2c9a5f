"""What the rest of a query implies of its product's type, from the catalog's own statistics.

"shoes to go with a suit" names five kinds of shoe; the suit's usage, Formal, is what 95% of this catalog's
Formal Shoes are filed under and few of its Casual Shoes or Heels: the Formal Shoes are meant. "bag for a weekend
getaway" names eleven kinds of bag; the getaway narrows them to the travel bags. "diwali outfit for men" names no
type at all; Diwali's usage, Ethnic, is mostly that of a few types (kurtas, sarees, kurta sets...). The parser
(`parser.py`) turns what `implied_types` returns into `QueryIntent.implied`: one more type boost on those types,
switched off with the type or the usage chip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# A type is implied by a usage wish when at least this share of the type's catalog items has that usage ("shoes
# for the office": 95% of Formal Shoes are Formal, few Casual Shoes or Heels are).
IMPLIED_USAGE_SHARE = 0.5
# Where the query names no type at all, its usage implies the types mostly of that usage only while they are a
# minority of the catalog (Formal, Sports, Ethnic...; not Casual, which is most of it).
IMPLIED_MAX_COVERAGE = 0.25


def usage_shares(items) -> dict[str, dict[str, float]]:
    """article type -> {usage: share of the type's items} of a catalog DataFrame ({} without those columns)."""
    if "articleType" not in items or "usage" not in items:
        return {}
    shares: dict[str, dict[str, float]] = {}
    counts = items.groupby([items["articleType"].astype(str), items["usage"].astype(str)]).size()
    totals = counts.groupby(level=0).sum()
    for (kind, usage), n in counts.items():
        shares.setdefault(kind, {})[usage] = float(n / totals[kind])
    return shares


def implied_types(intents: Mapping, narrowers: Sequence, type_usage: Mapping[str, Mapping[str, float]],
                  type_share: Mapping[str, float], negations: Mapping | None = None
                  ) -> tuple[tuple[str, ...], float, str] | None:
    """(types, confidence, phrase) the rest of a query picks, or None.

    `intents`: attribute -> the query's wish (an object with `values`, `confidence`, `phrase`); `narrowers`: type
    hints that name no product of their own ("trip": the travel bags); `type_usage`: `usage_shares` of the
    catalog; `type_share`: each type's share of the catalog's items (a parser without value counts has none, and
    implies nothing); `negations`: attribute -> what the query rules out (a ruled-out type is never implied:
    "ethnic wear not kurtas"). With a broadly named product, the types among its own that the narrowers and the
    usage pick, each narrowing what the ones before left (never to none, never all of them, never a new type), at
    the confidence of the least sure; with no type named, the usage's types while they cover at most
    `IMPLIED_MAX_COVERAGE`.
    """
    kind, usage = intents.get("articleType"), intents.get("usage")
    ruled_out = (negations or {}).get("articleType")
    ruled_out = set(ruled_out.values) if ruled_out is not None else set()
    likely = () if usage is None else tuple(
        t for t, shares in type_usage.items() if t in type_share and t not in ruled_out
        and sum(shares.get(u, 0.0) for u in usage.values) >= IMPLIED_USAGE_SHARE)
    if kind is None:
        if not likely or sum(type_share[t] for t in likely) > IMPLIED_MAX_COVERAGE:
            return None
        return likely, usage.confidence, usage.phrase
    if len(kind.values) < 2:
        return None
    pickers = [(n.values, n.confidence, n.phrase) for n in narrowers if n.attribute == "articleType"]
    if likely:
        pickers.append((likely, usage.confidence, usage.phrase))
    picked, used = tuple(kind.values), []
    for values, confidence, phrase in pickers:  # each narrows what the ones before left ("warm" + "for my neck")
        narrowed = tuple(t for t in picked if t in values)
        if narrowed and len(narrowed) < len(picked):
            picked = narrowed
            used.append((confidence, phrase))
    if not used:
        return None
    phrases = [p for _, p in used] if kind.source == "weak" else [kind.phrase, *(p for _, p in used)]
    return picked, min(kind.confidence, *(c for c, _ in used)), " + ".join(dict.fromkeys(phrases))


__all__ = ["IMPLIED_MAX_COVERAGE", "IMPLIED_USAGE_SHARE", "implied_types", "usage_shares"]
