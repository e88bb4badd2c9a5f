"""Query understanding (intents, negations, misspellings), the intent-boosted fused score, near-duplicate collapsing
and "more like this" consistency, each against hand-written cases or a brute-force reference."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from modeling.data.text import normalise_title
from modeling.retrieval.engine.dedup import collapse, duplicate_groups
from modeling.retrieval.understanding.heads import IntentHeads
from modeling.retrieval.understanding.parser import QueryIntent, load_lexicon
from modeling.retrieval.engine.signals import ConsistencyScorer

from tests.conftest import switch_off_extras
from modeling.retrieval.engine import batch


def understood(parser, query):
    parsed = parser.parse(query)
    return ({i.attribute: set(i.values) for i in parsed.intents}, {i.attribute: set(i.values) for i in parsed.negations},
            parsed)


@pytest.mark.parametrize("query, expected", [
    ("sneakers for women", {"articleType": {"Casual Shoes", "Sports Shoes"}, "gender": {"Women"}}),
    ("ladies handbag", {"articleType": {"Handbags"}, "gender": {"Women"}}),
    ("tees for gents", {"articleType": {"Tshirts"}, "gender": {"Men"}}),
    ("watch for him", {"articleType": {"Watches"}, "gender": {"Men"}}),
    ("navy blue shirt", {"articleType": {"Shirts"}, "baseColour": {"Navy Blue"}}),  # not Blue: longest phrase
    ("navy shirt", {"articleType": {"Shirts"}, "baseColour": {"Navy Blue"}}),
    ("men's t-shirts", {"articleType": {"Tshirts"}, "gender": {"Men"}}),  # possessive, hyphen, plural
    ("womens kurtas", {"articleType": {"Kurtas"}, "gender": {"Women"}}),
    ("grey track pants for boys", {"articleType": {"Track Pants"}, "gender": {"Boys"}, "baseColour": {"Grey"}}),
])
def test_synonyms_gender_words_and_catalog_values(parser, query, expected):
    intents, negations, _ = understood(parser, query)
    assert negations == {}
    for attribute, values in expected.items():
        assert values <= intents[attribute], (query, attribute, intents)
    assert "Women" not in intents.get("gender", set()) or "Men" not in intents.get("gender", set())


@pytest.mark.parametrize("query, kept, ruled_out, text", [
    ("running shoes that are not black", {"articleType": {"Sports Shoes"}}, {"baseColour": {"Black"}},
     "running shoes that are"),
    ("heels no white or grey", {"articleType": {"Heels"}}, {"baseColour": {"White", "Grey"}}, "heels"),
    ("shirts for men except blue", {"articleType": {"Shirts"}, "gender": {"Men"}}, {"baseColour": {"Blue"}},
     "shirts for men"),
    ("dress without prints", {"articleType": {"Dresses"}}, {}, "dress"),  # the word goes, it names no attribute
    ("sandals without heels", {"articleType": {"Sandals"}}, {"articleType": {"Heels"}}, "sandals"),
    ("no logo tshirt", {"articleType": {"Tshirts"}}, {}, "tshirt"),  # the logo goes, the t-shirt stays
    ("sandals not flats", {"articleType": {"Sandals"}}, {"articleType": {"Flats"}}, "sandals"),
    ("black sneakers not leather", {"articleType": {"Casual Shoes"}}, {}, "black sneakers"),  # a hint is not ruled out
    ("shoes that are not black for men", {"gender": {"Men"}}, {"baseColour": {"Black"}}, "shoes that are for men"),
])
def test_negations_are_penalties_and_leave_the_encoded_text(parser, query, kept, ruled_out, text):
    intents, negations, parsed = understood(parser, query)
    for attribute, values in kept.items():
        assert values <= intents[attribute], (query, intents)
    assert {a: v & ruled_out.get(a, set()) for a, v in negations.items()} == ruled_out
    assert parsed.search_text == text
    assert all(value not in intents.get(a, set()) for a, values in ruled_out.items() for value in values)


@pytest.mark.parametrize("query, attribute, value, corrected", [
    ("sneekers", "articleType", "Casual Shoes", "sneaker"),
    ("tshrit for men", "articleType", "Tshirts", "tshirt for men"),
    ("sunglases", "articleType", "Sunglasses", "sunglass"),
    ("sweatshrit for men", "articleType", "Sweatshirts", "sweatshirt for men"),
    ("jeens", "articleType", "Jeans", "jean"),
])
def test_misspellings_are_corrected_fuzzily(parser, query, attribute, value, corrected):
    intents, _, parsed = understood(parser, query)
    assert value in intents[attribute]
    assert next(i for i in parsed.intents if i.attribute == attribute).source == "fuzzy"
    assert parsed.search_text == corrected


def test_two_words_written_for_one_reach_the_encoders_as_the_one_word(parser):
    intents, _, parsed = understood(parser, "a brief case for work")
    assert "Laptop Bag" in intents["articleType"] and "Briefs" not in intents["articleType"]
    assert parsed.search_text == "a briefcase for work" and parsed.corrected == ()  # real words, no misspelling
    intents, _, parsed = understood(parser, "brief case snikers")  # a join and a correction side by side
    assert parsed.search_text == "briefcase sneaker"
    assert parsed.corrected == (("snikers", "sneaker"),)
    assert understood(parser, "hand bag")[2].search_text == "hand bag"  # a phrase of the lexicon as it stands


def test_known_words_and_unknown_words_are_left_alone(parser):
    intents, _, parsed = understood(parser, "puma shoes")  # a brand of the catalog's titles, not "pumps"
    assert "Heels" not in intents["articleType"] or "Casual Shoes" in intents["articleType"]
    assert "puma" in parsed.free_words and parsed.search_text == "puma shoes"
    intents, negations, parsed = understood(parser, "zxqv blorf")
    assert intents == {} and negations == {} and not parsed
    assert parsed.free_words == ("zxqv", "blorf")


def test_chips_and_removing_an_intent(parser):
    parsed = parser.parse("black sneakers for women not leather")
    assert set(parsed.chips()) >= {"Black", "Women"}
    without = parsed.without("gender")
    assert without.get("gender") is None and without.get("baseColour") is not None
    assert without.removed == ("gender",)
    assert parsed.to_dict()["intents"] and isinstance(parsed.to_dict()["chips"], list)


def test_lexicon_values_are_catalog_values(catalog_items):
    """Every value the lexicon maps to exists in the catalog (a typo there would silently boost nothing)."""
    lexicon = load_lexicon()
    for attribute, phrases in lexicon["attributes"].items():
        known = set(catalog_items[attribute])
        for phrase, values in phrases.items():
            assert set(values) <= known, (attribute, phrase, set(values) - known)
    assert len(lexicon["attributes"]["articleType"]) >= 200


def test_learned_heads_fill_open_attributes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)).astype(np.float32)
    labels = rng.integers(0, 3, 300)
    x = centres[labels] + 0.1 * rng.normal(size=(300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    items = pd.DataFrame({"articleType": np.array(["Heels", "Watches", "Shirts"])[labels], "gender": "Women"})
    heads = IntentHeads.fit(x, items, attributes=["articleType"])
    predicted = heads.predict(x[0])
    assert [(i.attribute, i.values[0], i.source) for i in predicted] == [("articleType", items.articleType[0],
                                                                          "learned")]
    assert heads.predict(x[0], exclude={"articleType"}) == []


def test_heads_save_and_load(tmp_path):
    heads = IntentHeads({"gender": (np.eye(2, 4, dtype=np.float32), np.zeros(2, np.float32), ["Men", "Women"])},
                        num_items=7)
    heads.save(tmp_path / "heads.npz")
    loaded = IntentHeads.load(tmp_path / "heads.npz")
    assert loaded.num_items == 7
    v = np.array([0.0, 5.0, 0.0, 0.0], np.float32)
    assert loaded.probabilities(v) == heads.probabilities(v)


@pytest.mark.parametrize("query, implied", [("black casual shoes for men not white", False),
                                            ("black shoes for men for the office, not white", True)])
def test_fused_score_with_intents_matches_brute_force(small_engine, monkeypatch, query, implied):
    engine = small_engine
    monkeypatch.setattr(engine, "settings", replace(engine.settings, collapse_duplicates=False))
    parsed = engine.understand(query)
    plain = batch.fused_scores(engine, parsed.search_text, intent=False)["score"]
    scores = batch.fused_scores(engine, query)
    items = engine.index.items.to_dict("records")
    boost = np.zeros(len(items), np.float32)
    for position, item in enumerate(items):
        for intent in parsed.intents:
            weight = engine.intents.weights[intent.attribute] * intent.confidence
            if item[intent.attribute] in intent.values:
                boost[position] += weight
            elif intent.attribute == "gender" and item["gender"] == "Unisex":
                boost[position] += 0.5 * weight
        for intent in parsed.negations:
            if item[intent.attribute] in intent.values:
                boost[position] -= engine.intents.negation_weight * intent.confidence
        for intent in parsed.implied:  # the office picks the Formal Shoes among the shoes: their type boost again
            if item[intent.attribute] in intent.values:
                boost[position] += engine.intents.weights[intent.attribute] * intent.confidence
    assert bool(parsed.implied) == implied
    assert {i.attribute for i in parsed.intents} >= {"baseColour", "articleType", "gender"}
    assert [i.attribute for i in parsed.negations] == ["baseColour"]
    np.testing.assert_allclose(scores["score"], plain + boost, atol=1e-5)
    expected = np.lexsort((np.arange(len(items)), -(plain + boost)))[:10]
    assert [r.id for r in engine.search_text(query, k=10)] == [engine.ids[p] for p in expected]
    # A shopper's own understanding (a chip removed) is used as given.
    no_gender = parsed.without("gender")
    reduced = batch.fused_scores(engine, query, intent=no_gender)["score"]
    assert not np.allclose(reduced, scores["score"])
    assert [r.id for r in engine.search_text(query, k=5, intent=no_gender)] == \
        [engine.ids[p] for p in np.lexsort((np.arange(len(items)), -reduced))[:5]]


def _brute_force_groups(titles, vectors, threshold):
    n = len(titles)
    adjacent = [[j for j in range(n) if j != i and titles[i] and titles[i] == titles[j]
                 and float(vectors[i] @ vectors[j]) >= threshold] for i in range(n)]
    group = [-1] * n
    for start in range(n):
        if group[start] >= 0:
            continue
        stack, group[start] = [start], start
        while stack:
            for j in adjacent[stack.pop()]:
                if group[j] < 0:
                    group[j] = start
                    stack.append(j)
    return np.array(group)


def test_duplicate_groups_match_brute_force(catalog_items):
    rng = np.random.default_rng(1)
    titles = catalog_items["title"].head(400).map(normalise_title).tolist()
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    for i in range(1, 400):  # plant near-identical photos under repeated titles
        if titles[i] in titles[:i] and rng.random() < 0.7:
            vectors[i] = vectors[titles.index(titles[i])] + 0.01 * rng.normal(size=8)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = duplicate_groups(titles, vectors, 0.95)
    expected = _brute_force_groups(titles, vectors, 0.95)
    assert (groups == expected).all()
    assert (groups != np.arange(400)).sum() >= 5  # some items were collapsed


def test_collapse_keeps_the_best_of_each_group():
    groups = np.array([0, 1, 0, 3, 1, 5])
    kept, duplicates, short = collapse(np.array([2, 0, 4, 1, 5, 3]), groups, 3)
    assert kept == [2, 4, 5] and duplicates == {2: [0], 4: [1]} and not short
    assert collapse(np.array([0, 2]), groups, 2)[2]  # ran out


def test_collapsed_search_is_the_plain_ranking_walked_by_group(small_engine, monkeypatch):
    engine = switch_off_extras(small_engine, monkeypatch)
    groups = engine.duplicates.groups()
    assert len(set(groups.tolist())) < len(groups), "the 300 val items hold same-title near-duplicates"
    for query in ("watches for men", "blue jeans", "black shoes"):
        full = engine.search_text(query, k=len(engine.ids), collapse=False)
        expected, seen = [], set()
        for r in full:
            group = groups[engine.position(r.id)]
            if group not in seen:
                seen.add(group)
                expected.append(r.id)
        got = engine.search_text(query, k=10, collapse=True)
        assert [r.id for r in got] == expected[:10]
        members = {g: {engine.ids[p] for p in np.flatnonzero(groups == g)} for g in set(groups.tolist())}
        for r in got:
            assert set(r.duplicates) == members[groups[engine.position(r.id)]] - {r.id}


def test_item_consistency_boosts_the_reference_values(small_engine, monkeypatch):
    engine = switch_off_extras(small_engine, monkeypatch)
    position = 7
    reference = engine.index.items.iloc[position]
    plain = engine.search_item(engine.ids[position], k=len(engine.ids) - 1)
    weights = {"baseColour": 0.2, "articleType": 0.1}
    boosted = engine.search_item(engine.ids[position], k=10, consistency=weights)
    items = engine.index.items.set_index("id")
    score = {r.id: r.score + sum(w for a, w in weights.items() if items.loc[r.id, a] == reference[a]) for r in plain}
    order = sorted(score, key=lambda i: (-score[i], engine.position(i)))[:10]
    assert [r.id for r in boosted] == order
    np.testing.assert_allclose([r.score for r in boosted], [score[i] for i in order], atol=1e-5)


def test_photo_consistency_matches_brute_force():
    """Colour: half the colour head, half the neighbours' catalog colours (softmax of cosine / temperature), read at
    each item's catalog colour; type: the type heads' dot product."""
    from modeling.retrieval.engine.signals import NEIGHBOUR_TEMPERATURE

    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(50, 6)).astype(np.float32)
    projection = {"baseColour": rng.normal(size=(6, 4)), "articleType": rng.normal(size=(6, 3))}
    colours = ["Red", "Blue", "Black", "White"]

    def predict_attributes(x):
        import torch

        return {a: torch.softmax(x @ torch.tensor(w, dtype=torch.float32), -1) for a, w in projection.items()}

    model = SimpleNamespace(config=SimpleNamespace(attribute_labels={"baseColour": colours,
                                                                     "articleType": list("xyz")}),
                            predict_attributes=predict_attributes)
    items = pd.DataFrame({"baseColour": rng.choice(colours + ["Teal"], 50)})  # Teal: not a head label
    weights = {"baseColour": 0.5, "articleType": 0.3}
    scorer = ConsistencyScorer(model, lambda: vectors, items, weights)
    photo = rng.normal(size=6).astype(np.float32)
    neighbours, similarities = np.array([4, 9, 17]), np.array([0.9, 0.8, 0.85])

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    vote = np.zeros(4)
    for n, w in zip(neighbours, softmax(similarities / NEIGHBOUR_TEMPERATURE)):
        if items.baseColour[n] in colours:
            vote[colours.index(items.baseColour[n])] += w
    distribution = 0.5 * softmax(photo @ projection["baseColour"]) + 0.5 * vote
    colour = np.array([distribution[colours.index(c)] if c in colours else 0.0 for c in items.baseColour])
    kind = softmax(vectors @ projection["articleType"]) @ softmax(photo @ projection["articleType"])
    expected = 0.5 * colour + 0.3 * kind
    positions = np.array([3, 0, 49, 4])
    got = scorer.scores(photo, positions, neighbours=neighbours, similarities=similarities)
    np.testing.assert_allclose(got, expected[positions], atol=1e-5)
    assert scorer.scores(photo, positions, {"baseColour": 0.0, "articleType": 0.0}) is None


def test_query_intent_is_falsy_without_intents():
    assert not QueryIntent("x", "x")


def test_a_broader_word_keeps_the_reference_type(parser):
    """Composed search: "same shoe in grey" of Casual Shoes keeps Casual Shoes (the words only name it broadly);
    "same but sandals" changes it."""
    broad = parser.parse("same shoe in grey").narrowed_to({"articleType": "Casual Shoes", "gender": "Men"})
    assert broad.get("articleType").values == ("Casual Shoes",) and "Grey" in broad.get("baseColour").values
    changed = parser.parse("same but sandals").narrowed_to({"articleType": "Casual Shoes"})
    assert "Casual Shoes" not in changed.get("articleType").values


def test_a_negation_covering_the_wish_describes_a_feature(parser):
    """"tshirt without collar": the t-shirts stay wanted, other collared types are kept away; "sandals not flats":
    flats leave the wish."""
    intents, negations, _ = understood(parser, "tshirt without collar")
    assert intents["articleType"] == {"Tshirts"} and "Tshirts" not in negations.get("articleType", set())
    intents, negations, _ = understood(parser, "sandals not flats")
    assert "Flats" not in intents["articleType"] and negations["articleType"] == {"Flats"}
