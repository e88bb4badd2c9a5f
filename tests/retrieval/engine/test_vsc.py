"""VSC: item and query descriptions, the modification rule, per-result scores in the engine, the on-disk cache."""

import numpy as np
import pandas as pd
import pytest

from modeling.retrieval.engine.vsc import ModificationParser, VSCScorer, item_vsc_text, observation_note, summarise

ITEMS = pd.DataFrame([
    {"id": "1", "title": "Turtle Men Navy Blue Shirt", "gender": "Men", "articleType": "Shirts",
     "baseColour": "Navy Blue", "usage": "Casual", "season": "Fall"},
    {"id": "2", "title": "Nike Men Black Sports Shoes", "gender": "Men", "articleType": "Sports Shoes",
     "baseColour": "Black", "usage": "Sports", "season": "Summer"},
    {"id": "3", "title": "", "gender": "Women", "articleType": "Dresses", "baseColour": "Red", "usage": "Party",
     "season": "Summer"},
    {"id": "4", "title": "Levis Women Blue Jeans", "gender": "Women", "articleType": "Jeans",
     "baseColour": "Blue", "usage": "Casual", "season": "Winter"},
])


def test_item_descriptions_title_or_caption():
    row = ITEMS.iloc[0].to_dict()
    assert item_vsc_text(row) == "Turtle Men Navy Blue Shirt"
    assert item_vsc_text(row, "caption") == "navy blue shirts for men, casual"
    assert item_vsc_text(ITEMS.iloc[2].to_dict()) == "red dresses for women, party"  # untitled: the caption
    with pytest.raises(ValueError, match="source"):
        item_vsc_text(row, "fabric")


@pytest.mark.parametrize("modification, expected", [
    ("make it black", "Turtle Men Black Shirt"),
    ("I want it in blue please", "Turtle Men Blue Shirt"),
    ("make it navy blue", None),  # its own colour: "navy blue" is matched whole, not as "blue"
    ("make it sleeveless", None),  # names no catalog value
    ("make it sporty", "navy blue shirts for men, sports"),  # usage is not in the title: the caption
    ("a summer version", "navy blue shirts for men, casual, summer"),  # in neither: appended to the caption
])
def test_modification_applied_where_derivable(modification, expected):
    parser = ModificationParser(ITEMS)
    assert parser.apply(ITEMS.iloc[0].to_dict(), modification) == expected


def test_composed_description_falls_back_to_the_modification(small_engine):
    scorer = small_engine.vsc
    items = small_engine.index.items
    position = int(np.flatnonzero(items["baseColour"] != "Black")[0])
    row = items.iloc[position]
    derived = scorer.composed_description("same but in  black", position)
    assert "black" in derived.lower() and derived != "same but in black"
    assert row["articleType"].lower() in (derived.lower() + row["title"].lower())
    assert scorer.composed_description("make it sleeveless", position) == "make it sleeveless"
    assert scorer.composed_description("make it black", None) == "make it black"  # an upload: no description


def test_engine_fills_vsc_per_result(small_engine):
    engine = small_engine
    encoder = engine.vsc.encoder
    titles = encoder.encode(engine.vsc.descriptions)
    query = "black casual shoes for men"
    results = engine.search_text(query, k=5)
    expected = titles @ encoder.encode([query])[0]
    for r in results:
        assert r.vsc == pytest.approx(expected[engine.position(r.id)], abs=1e-5)
        assert -1.0 <= r.vsc <= 1.0

    item_id = engine.index.items["id"].iloc[7]
    expected = titles @ titles[7]
    for r in engine.search_item(item_id, k=5):
        assert r.vsc == pytest.approx(expected[engine.position(r.id)], abs=1e-5)

    upload = engine.search_image(engine.index.items["image_path"].iloc[7], k=5)
    assert all(r.vsc is None for r in upload)  # no description: absent, never invented
    assert summarise(upload)["vsc@k"] is None and summarise(upload)["mean_cosine"] is not None

    composed = engine.search_composed(item_id=item_id, text="make it sleeveless", k=5)
    expected = titles @ encoder.encode(["make it sleeveless"])[0]
    for r in composed:
        assert r.vsc == pytest.approx(expected[engine.position(r.id)], abs=1e-5)
    summary = summarise(composed)
    assert summary["vsc@k"] == pytest.approx(np.mean([r.vsc for r in composed]))
    assert summary["mean_cosine"] == pytest.approx(np.mean([r.visual_score for r in composed]))


def test_vsc_cache_is_reused_and_rebuilt_when_stale(small_engine, tmp_path):
    encoder, items = small_engine.vsc.encoder, small_engine.index.items
    scorer = VSCScorer.load_or_build(tmp_path, encoder, items)
    assert (tmp_path / "vsc_title.npy").exists() and not list(tmp_path.glob(".*tmp*"))
    again = VSCScorer.load_or_build(tmp_path, encoder, items)
    np.testing.assert_array_equal(again.embeddings, scorer.embeddings)
    # Other items (or another order): the cache is stale and rebuilt for them.
    other = items.iloc[::-1].reset_index(drop=True)
    rebuilt = VSCScorer.load_or_build(tmp_path, encoder, other)
    np.testing.assert_allclose(rebuilt.embeddings, scorer.embeddings[::-1], atol=1e-5)
    (tmp_path / "vsc_title.npy").write_bytes(b"garbage")  # corrupt: rebuilt, not a crash
    assert VSCScorer.load_or_build(tmp_path, encoder, other).embeddings.shape == scorer.embeddings.shape


def test_observation_notes():
    assert observation_note(0.9, 0.9, 0.5, 0.5) == "Ideal retrieval in both metrics"
    assert observation_note(0.3, 0.9, 0.5, 0.5).startswith("Semantically right")
    assert observation_note(0.9, 0.1, 0.5, 0.5).startswith("Visually close")
    assert observation_note(0.9, None, 0.5, 0.5).endswith("n/a")
