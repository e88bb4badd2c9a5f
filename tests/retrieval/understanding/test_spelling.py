"""Spelling that respects English: real words and catalog words are never rewritten, misspelt product words are,
and a correction never yields a full-confidence intent."""

import pytest

from modeling.evaluation.spelling import english_top_words, rewritten
from modeling.retrieval.understanding.parser import catalog_words
from modeling.retrieval.understanding.spelling import EnglishVocabulary, Speller


def test_frequent_english_words_are_not_rewritten(parser):
    top = english_top_words()
    assert len(top) > 19000
    assert rewritten(parser, top[:4000]) == []
    assert len(rewritten(parser, top)) <= 0.002 * len(top)


def test_catalog_title_words_are_never_rewritten(parser, catalog_items):
    assert rewritten(parser, sorted(catalog_words(catalog_items["title"]))) == []


@pytest.mark.parametrize("query, unwanted", [
    ("most comfortable flip flops", ("articleType", "Perfume and Body Mist")),
    ("watch for a nurse", ("articleType", "Handbags")),
    ("something to wear while hiking", ("baseColour", "White")),
    ("tall boots", ("season", "Fall")),
    ("a salon appointment outfit", ("baseColour", "Salmon")),
    ("dress that lacks sparkle", ("baseColour", "Black")),
])
def test_real_words_are_not_corrected_into_catalog_words(parser, query, unwanted):
    parsed = parser.parse(query)
    assert parsed.search_text == query
    attribute, value = unwanted
    assert value not in (parsed.get(attribute).values if parsed.get(attribute) else ())
    assert all(i.source != "fuzzy" for i in parsed.intents)


@pytest.mark.parametrize("query, value", [("blue jeens", "Jeans"), ("lether wallett", "Wallets"),
                                          ("sunglases for the beach", "Sunglasses"), ("kurtha", "Kurtas"),
                                          ("snikers for women", "Casual Shoes")])
def test_corrections_find_the_product_at_reduced_confidence(parser, query, value):
    parsed = parser.parse(query)
    found = parsed.get("articleType")
    assert found is not None and value in found.values and found.source == "fuzzy"
    assert all(i.confidence < 1.0 for i in parsed.intents if i.source == "fuzzy")
    assert parsed.search_text != query


def test_speller_ranks_by_distance_then_letters_then_frequency():
    speller = Speller(["shirt", "skirt", "short", "sandal"], known_words={"shrt"})
    assert speller.correct("shiirt") == "shirt"  # one edit from shirt only
    assert speller.correct("shrt") is None  # a catalog word
    assert speller.correct("most") is None and speller.correct("skirts") is None  # English words
    assert speller.correct("zzzzz") is None
    assert speller.correct("sxirt") == "shirt"  # shirt and skirt tie on distance and letters; shirt is more common
    assert EnglishVocabulary("wordfreq").zipf("shirt") > EnglishVocabulary("wordfreq").zipf("skirt")


def test_speller_goes_two_edits_for_six_letters_keeping_most_of_the_typed_letters():
    speller = Speller(["sneaker", "shaker"])
    # two edits each, the same first and last letters, shaker the more frequent: sneaker keeps s-n-k-e-r in order
    assert speller.correct("sniker", "snikers") == "sneaker"
    assert EnglishVocabulary("wordfreq").zipf("shaker") > EnglishVocabulary("wordfreq").zipf("sneaker")
    assert speller.correct("snikr") is None  # five letters: one edit only


def test_the_singular_of_a_plural_word_is_not_corrected():
    # "scarve" is what "scarves" folds to (a keyword index's token): two edits from "scarlet", yet a real word's form
    speller = Speller(["scarlet", "scarf"], known_words={"scarves"})
    assert speller.correct("scarve") is None
    assert Speller(["scarlet", "scarf"]).correct("scarve") is None  # "scarves" is English too
    assert speller.correct("scarlte") == "scarlet"  # a misspelling still is corrected


def test_numbers_are_never_corrected_nor_kept_as_catalog_words():
    """A number is never rewritten (not even one edit from a numbered product word), so the catalog's title words,
    which protect words from correction, need not hold its numbers: numbered titles would add a word per item."""
    speller = Speller(["5011", "sneaker"])
    assert speller.correct("5012") is None and speller.correct("2019") is None
    assert speller.correct("snaeker") == "sneaker"
    assert catalog_words(["Nike Air 2019 Shoe", "item 123456", "Levis 511 jeans", "t20 cricket bat"]) == {
        "nike", "air", "shoe", "item", "levis", "jeans", "t20", "cricket", "bat"}


def test_vocabularies():
    pytest.importorskip("symspellpy")
    symspell = EnglishVocabulary("symspell")
    assert symspell.zipf("comfortable") > 3 and symspell.zipf("sneekers") == 0
    with pytest.raises(ValueError, match="wordfreq"):
        EnglishVocabulary("webster")


def test_the_spelling_report_meets_the_targets_on_dev(catalog_dir, tmp_path):
    from pathlib import Path

    from modeling.evaluation.spelling import main

    root = Path(__file__).resolve().parents[3]
    results = main(["--catalog", str(catalog_dir), "--vocabularies", "wordfreq", "--min-zipf", "3",
                    "--dev-files", str(root / "queries/shopper_dev.jsonl"), str(root / "queries/everyday_dev.jsonl"),
                    "--output", str(tmp_path / "spelling.json")])
    served = results["wordfreq@3"]
    assert served["top_share"] <= 0.002 and served["catalog_rewritten"] == []
    assert served["misspelling_accuracy"] >= 0.9 and (tmp_path / "spelling.json").exists()
