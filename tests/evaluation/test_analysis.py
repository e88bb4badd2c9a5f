"""Per-attribute consistency against a brute-force count; out-of-domain query sets; evaluate's image->image rows."""

import numpy as np
import pandas as pd
import pytest

import evaluate
from modeling.evaluation.analysis import CHANGED, attribute_consistency, match_mask, ood_query_sets
from modeling.evaluation.tasks import image_to_image_metrics

from .test_ranking_metrics import ref_means, ref_query, ref_ranking

TYPES = ["Shirts", "Kurtas", "Jeans", "Tshirts"]
COLOURS = ["Black", "Blue", "Red"]


def _items(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": [str(i) for i in range(n)],
        "title": [f"brand {TYPES[i % 4].lower()} {i % 7}" for i in range(n)],
        "articleType": [TYPES[i % 4] for i in range(n)],
        "baseColour": rng.choice(COLOURS, n),
        "gender": rng.choice(["Men", "Women"], n),
        "usage": rng.choice(["Casual", "Formal"], n),
        "season": rng.choice(["Summer", "Fall"], n),
    })


def test_attribute_consistency_matches_brute_force():
    items = _items()
    rng = np.random.default_rng(1)
    queries = items.iloc[:12].reset_index(drop=True)
    positions = rng.integers(0, len(items), size=(12, 6))
    positions[3, 4:] = -1  # fewer results than k: missing slots keep nothing
    changed = [("baseColour", COLOURS[q % 3]) for q in range(12)]
    got = attribute_consistency(queries, positions, items, k=5, changed=changed)
    for attribute in ("articleType", "baseColour", "gender", "usage", "season"):
        kept = sum(p >= 0 and items[attribute][p] == queries[attribute][q]
                   for q in range(12) for p in positions[q, :5])
        assert got[attribute] == pytest.approx(kept / 60)
    matches = sum(p >= 0 and items["baseColour"][p] == changed[q][1] for q in range(12) for p in positions[q, :5])
    assert got[CHANGED] == pytest.approx(matches / 60)
    with pytest.raises(ValueError):
        attribute_consistency(queries, positions[:, :3], items, k=5)


def test_ood_query_sets_split_held_out_and_in_domain_forms():
    items = _items(80)
    sets = ood_query_sets(items, "articleType", "Kurtas")
    held, other = sets["held_out"], sets["in_domain"]
    assert held["titles"] and all("kurtas" in q["query"] for q in held["titles"])
    assert all("kurtas" not in q["query"] for q in other["titles"])
    assert held["attributes"] and all(q["match"]["articleType"] == ["Kurtas"] for q in held["attributes"])
    assert all(q["match"].get("articleType") != ["Kurtas"] for q in other["attributes"])
    # The same forms on both sides: every in-domain form is one the held-out set has.
    held_forms = {tuple(sorted(q["match"])) for q in held["attributes"]}
    assert other["attributes"] and {tuple(sorted(q["match"])) for q in other["attributes"]} <= held_forms
    for q in held["titles"] + held["attributes"]:
        mask = match_mask(items, q["match"])
        assert mask.any() and (items["articleType"][mask] == "Kurtas").all()
    with pytest.raises(ValueError, match="no gallery item"):
        ood_query_sets(items, "articleType", "Sarees")


def test_image_to_image_row_agrees_with_the_reference_metrics():
    items = _items(60)
    rng = np.random.default_rng(2)
    embeds = rng.standard_normal((60, 8)).astype(np.float32)
    row = evaluate.image_to_image(embeds, items, None, k=10)
    labels = {"articleType": items["articleType"].to_numpy(), "baseColour": items["baseColour"].to_numpy()}
    reference = image_to_image_metrics(embeds, labels, k=10)
    assert row["p@10"] == pytest.approx(reference["p@10"])
    assert row["top1"] == pytest.approx(reference["top1"])
    assert row["p@10_colour"] == pytest.approx(reference["p@10_colour"])
    unit = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    relevance = labels["articleType"][:, None] == labels["articleType"][None]
    # Brute force: every item ranks the others (itself excluded) by cosine, ties by lower position.
    per_query = [ref_query([float(relevance[q][j]) for j in ref_ranking(row, {q})], [1.0] * (relevance[q].sum() - 1),
                           (10,)) for q, row in enumerate((unit @ unit.T).tolist())]
    full = ref_means(per_query, (10,))
    assert row["map@10"] == pytest.approx(full["map@10"])
    assert row["r@10"] == pytest.approx(full["recall@10"])
    assert row["consistency"]["articleType"] == pytest.approx(reference["p@10"])
