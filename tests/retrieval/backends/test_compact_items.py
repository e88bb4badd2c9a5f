"""The compact per-item state of an engine served from a vector store (`modeling.retrieval.common.items`) against
the item-table structures it replaces: the id tuple and id -> position dict, `filter_mask` over a DataFrame,
`AttributeTable` of a DataFrame, and the near-duplicate members."""

import numpy as np
import pandas as pd
import pytest

from modeling.retrieval.common.items import CompactIds, ItemCodes
from modeling.retrieval.common.ranking import AttributeTable, ScoreTerm, filter_mask
from modeling.retrieval.engine.dedup import DuplicateGroups


def frame(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": [str(i) for i in rng.permutation(10 * n)[:n]],
                         "gender": rng.choice(["Men", "Women", "Unisex", " men ", ""], n),
                         "baseColour": rng.choice(["Navy Blue", "Red", "red", "Black"], n),
                         "articleType": rng.choice([f"type{i}" for i in range(300)], n)})


def codes_of(items: pd.DataFrame, attributes) -> ItemCodes:
    """What `StoreCatalog.read` makes of the payloads: codes in any numbering, renumbered in catalog order."""
    codes, values = {}, {}
    for a in attributes:
        uniques, inverse = np.unique(items[a].to_numpy(str), return_inverse=True)
        codes[a], values[a] = inverse, list(uniques)
    return ItemCodes.in_catalog_order(codes, values)


def test_compact_ids_are_the_id_tuple_and_its_position_map():
    items = frame()
    ids = CompactIds.from_strings(items["id"])
    expected = tuple(items["id"])
    assert ids == expected and len(ids) == len(expected) and ids[7] == expected[7] and ids[2:5] == expected[2:5]
    assert list(ids) == list(expected)
    for position, item_id in enumerate(expected):
        assert ids.positions[item_id] == position and ids.position(item_id) == position
    for missing in ("-1", "99999999999", "", "1 ", "abc", "\ud800"):  # a lone surrogate, as JSON may carry
        assert ids.position(missing) is None and missing not in ids.positions
        with pytest.raises(KeyError):
            ids.positions[missing]
    assert ids.positions.get("nope", -5) == -5
    found = ids.lookup(np.array([b"nope", expected[3].encode()]))
    assert found.tolist() == [-1, 3]
    assert ids.nbytes < 16 * len(expected)


def test_codes_filter_like_the_item_table():
    items = frame()
    attributes = ("gender", "baseColour", "articleType")
    codes = codes_of(items, attributes)
    assert codes.values["gender"] == list(dict.fromkeys(items["gender"]))  # first appearance first
    assert codes.codes["articleType"].dtype == np.int16 and codes.codes["gender"].dtype == np.int8
    for a in attributes:
        assert [codes.value(a, p) for p in range(len(items))] == items[a].tolist()
    for filters in ({"gender": "men"}, {"gender": ["MEN", "women"]}, {"baseColour": " red "},
                    {"gender": "Unisex", "baseColour": ["navy blue", "Black"]}, {"gender": ""}, {"gender": None},
                    {"articleType": "type3"}, {"articleType": "no such type"}, None):
        want = filter_mask(items[list(attributes)], filters, {})
        got = codes.mask(filters)
        assert (got is None) == (want is None), filters
        if want is not None:
            np.testing.assert_array_equal(got, want, err_msg=str(filters))
    with pytest.raises(ValueError, match="unknown filter keys"):
        codes.mask({"title": "x"})


def test_codes_score_terms_like_the_item_table():
    items = frame()
    codes = codes_of(items, ("gender", "baseColour", "articleType"))
    terms = (ScoreTerm("gender", ("Men", "Unisex"), 0.2), ScoreTerm("gender", ("Women",), -0.1),
             ScoreTerm("baseColour", ("Red",), 0.05), ScoreTerm("articleType", ("type7", "nope"), 0.3),
             ScoreTerm("usage", ("Casual",), 1.0))
    positions = np.array([0, 5, 99, 3])
    for at in (None, positions):
        np.testing.assert_array_equal(codes.table(["gender", "baseColour", "articleType"]).evaluate(terms, at),
                                      AttributeTable(items, ["gender", "baseColour", "articleType"]).evaluate(terms, at))
    labels = ["Black", "Red", "Green"]
    lookup = {v: i for i, v in enumerate(labels)}
    np.testing.assert_array_equal(codes.labels("baseColour", labels), [lookup.get(v, -1) for v in items.baseColour])


def test_duplicate_members_from_int32_groups():
    rng = np.random.default_rng(2)
    groups = np.arange(300)
    for _ in range(120):
        a, b = sorted(rng.integers(0, 300, 2))
        groups[b] = groups[a]
    for dtype in (np.int32, np.int64):
        duplicates = DuplicateGroups(None, lambda: None, groups.astype(dtype))
        assert duplicates.groups().dtype == dtype
        for position in range(300):
            members = np.flatnonzero(groups == groups[position]).tolist()
            assert duplicates.members(int(groups[position])) == (members if len(members) > 1 else [])
