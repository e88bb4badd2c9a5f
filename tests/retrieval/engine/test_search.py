"""The search engine on a small real gallery with a tiny model: fusion arithmetic, filters, errors, index reuse."""

import io
import math
from collections import Counter

import numpy as np
import pytest

from modeling import DualEncoderModel
from modeling.data.images import ImageError
from modeling.retrieval.backends.faiss.index import IndexMismatchError
from modeling.retrieval.backends.faiss import ranking as ranker_module
from modeling.retrieval.common.lexical import BM25Index, tokenize
from modeling.data.text import item_description
from modeling.retrieval.engine.search import FashionSearchEngine, QueryError
from modeling.encoders.sentence import SentenceEncoder

from tests.conftest import switch_off_extras, tiny_model_kwargs
from modeling.retrieval.engine import batch


def brute_force_bm25(documents, query, k1=1.2, b=0.75):
    """Okapi BM25 written out term by term (the reference for `BM25Index`)."""
    docs = [tokenize(d) for d in documents]
    average = sum(len(d) for d in docs) / len(docs)
    out = np.zeros(len(docs))
    for word in set(tokenize(query)):
        df = sum(word in d for d in docs)
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(word)
            out[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / average))
    return out


@pytest.mark.parametrize("lexical_weight", [0.0, 0.4, 2.0])
def test_text_search_fuses_visual_item_text_and_keyword_scores(plain_engine, lexical_weight):
    engine = plain_engine
    query, weight = "black casual shoes for men", 0.4
    results = engine.search_text(query, k=10, text_weight=weight, lexical_weight=lexical_weight)
    assert len(results) == 10 and [r.rank for r in results] == list(range(1, 11))
    # Brute force over the whole gallery.
    visual = engine.index.vectors.reconstruct_batch(np.arange(len(engine.index))) @ engine.encode_texts([query])[0]
    text = engine.index.text_embeddings @ engine.sentence_encoder.encode([query])[0]
    keywords = brute_force_bm25([item_description(r) for r in engine.index.items.to_dict("records")], query)
    keywords /= keywords.max()
    fused = (1 - weight) * visual + weight * (text + lexical_weight * keywords)
    expected = np.argsort(-fused, kind="stable")[:10]
    assert [r.id for r in results] == engine.index.items["id"].iloc[expected].tolist()
    for r, i in zip(results, expected):
        assert r.score == pytest.approx(fused[i], abs=1e-5)
        assert r.visual_score == pytest.approx(visual[i], abs=1e-5)
        assert r.text_score == pytest.approx(text[i], abs=1e-5)
        if lexical_weight > 0:
            assert r.lexical_score == pytest.approx(keywords[i], abs=1e-5)
        else:
            assert r.lexical_score is None
    visual_only = engine.search_text(query, k=10, text_weight=0.0)
    assert all(r.text_score is None and r.lexical_score is None and r.score == r.visual_score for r in visual_only)
    with pytest.raises(QueryError, match="keyword weight"):
        engine.search_text(query, lexical_weight=-1)


def test_keyword_match_lifts_items_that_name_the_query_words(plain_engine):
    engine = plain_engine
    items = engine.index.items
    # Brands named in a few titles: where the dense scores alone miss some of their items, the keyword match
    # brings all of them to the top.
    words = [set(tokenize(item_description(r))) for r in items.to_dict("records")]
    first_word = items["title"].str.split().str[0].str.lower()  # the catalog spells "Colorbar" and "ColorBar"
    lifted = 0
    for brand, count in first_word.value_counts().items():
        named = set(items.loc[first_word == brand, "id"])
        holders = {i for i, w in zip(items["id"], words) if brand in w}
        if not 2 <= count <= 8 or len(brand) < 4 or tokenize(brand) != [brand] or holders != named:
            continue
        without = {r.id for r in engine.search_text(brand, k=len(named), lexical_weight=0.0)}
        if without == named:
            continue
        assert {r.id for r in engine.search_text(brand, k=len(named))} == named, brand
        lifted += 1
    assert lifted >= 3, "expected brands whose items the dense scores alone do not all find"


def test_large_catalog_candidates_include_keyword_matches(small_engine, monkeypatch):
    """Above EXACT_FUSION_LIMIT only the top candidates of the visual index and of the item-text score are fused:
    that score must include the keyword match, or items found by their words alone never become candidates. Queries:
    words held by a single item (names, style words of a title) that the dense scores alone rank far down."""
    engine = small_engine
    descriptions = [tokenize(item_description(r)) for r in engine.index.items.to_dict("records")]
    holders = Counter(word for words in descriptions for word in set(words))
    queries = []
    for position, words in enumerate(descriptions):
        for word in words:
            if holders[word] == 1 and len(word) >= 4 and len(queries) < 5:
                dense = [r.id for r in engine.search_text(word, k=len(descriptions), lexical_weight=0.0)]
                if dense.index(engine.ids[position]) >= 40:
                    queries.append((word, engine.ids[position]))
    assert len(queries) >= 3, "expected item words that the dense scores alone rank low"
    exact = {q: engine.search_text(q, k=1) for q, _ in queries}
    assert all(exact[q][0].id == holder for q, holder in queries)  # the keyword match finds them
    monkeypatch.setattr(ranker_module, "EXACT_FUSION_LIMIT", 10)
    monkeypatch.setattr(ranker_module, "FUSION_CANDIDATE_DEPTH", 20)  # pools of 20 of the 300 items
    for query, _ in queries:
        approximate = engine.search_text(query, k=1)
        assert [r.id for r in approximate] == [r.id for r in exact[query]], query
        assert approximate[0].score == pytest.approx(exact[query][0].score, abs=1e-5)


def test_tokenize_folds_the_spellings_shoppers_and_catalogs_use():
    assert tokenize("Men's T-Shirts") == tokenize("men tshirt") == ["men", "tshirt"]
    assert tokenize("t shirts") == tokenize("Tee-shirt") == ["tshirt"]
    assert tokenize("Women’s Dresses, watches & Accessories") == ["women", "dress", "watch", "accessory"]
    assert tokenize("Casual Shoes") == ["casual", "shoe"] and tokenize("Flip Flops") == ["flipflop"]
    assert tokenize("Sunglasses bus dress") == ["sunglass", "bus", "dress"]  # -ss / -us kept, -sses folded


def test_bm25_matches_the_formula_and_normalises_per_query():
    documents = ["Nike Men Black T-shirt. black tshirts for men, summer", "Puma Women Red Casual Shoes",
                 "Red dress", "Men Navy Blue Shirt", "ADIDAS men's sports shoes shoes"]
    bm25 = BM25Index(documents)
    for query in ("men's black t-shirts", "red shoes", "shoes shoes", "navy", "nothing matches"):
        assert bm25.scores(query) == pytest.approx(brute_force_bm25(documents, query), abs=1e-5)
    scores = bm25.normalised_scores("red shoes")
    assert scores.max() == pytest.approx(1.0) and scores.min() >= 0
    assert not bm25.normalised_scores("xyz").any()
    assert not BM25Index([]).scores("red").size
    with pytest.raises(ValueError):
        BM25Index(documents, b=2.0)


def test_filters_apply_inside_the_search(small_engine):
    engine = small_engine
    women = (engine.index.items["gender"] == "Women").sum()
    assert women >= 10
    for results in (engine.search_text("shirt", k=10, filters={"gender": "Women"}),
                    engine.search_image(engine.index.items["image_path"].iloc[0], k=10, filters={"gender": "women"})):
        assert len(results) == 10
        assert all(r.attributes["gender"] == "Women" for r in results)
    assert engine.search_text("shirt", k=5, filters={"articleType": "No Such Type"}) == []
    with pytest.raises(QueryError):
        engine.search_text("shirt", filters={"fabric": "silk"})


def test_image_search_excludes_ids_and_finds_the_item_itself(small_engine):
    engine = small_engine
    items = engine.index.items
    path, item_id = items["image_path"].iloc[3], items["id"].iloc[3]
    top = engine.search_image(path, k=3)
    assert top[0].id == item_id and top[0].visual_score == pytest.approx(1.0, abs=1e-4)
    assert item_id not in [r.id for r in engine.search_image(path, k=20, exclude_ids=[item_id])]
    assert item_id not in [r.id for r in engine.search_item(item_id, k=20)]


def test_bad_queries_get_clear_errors(small_engine):
    engine = small_engine
    for bad in ("", "   "):
        with pytest.raises(QueryError, match="Type what you are looking for"):
            engine.search_text(bad)
    with pytest.raises(QueryError, match="characters"):
        engine.search_text("dress " * 200)
    with pytest.raises(ImageError):
        engine.search_image(io.BytesIO(b"not an image").getvalue())
    with pytest.raises(QueryError):
        engine.search_text("dress", k=0)


def test_index_is_reused_and_refused_for_another_model(tiny_model_dir, small_gallery, tmp_path, tiny_text_model):
    model_dir, gallery = tiny_model_dir, small_gallery
    index_dir = tmp_path / "index"
    FashionSearchEngine.load(model_dir, index_dir, catalog=gallery, text_encoder=None)
    assert (index_dir / "manifest.json").exists()
    again = FashionSearchEngine.load(model_dir, index_dir, catalog=None, text_encoder=None)  # no rebuild needed
    assert len(again.index) == len(gallery)

    other_dir = tmp_path / "other"
    other = DualEncoderModel.from_text_pretrained(str(tiny_text_model), **tiny_model_kwargs())
    other.save_pretrained(other_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (other_dir / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(IndexMismatchError, match="Rebuild|rebuild"):
        FashionSearchEngine.load(other_dir, index_dir, catalog=None, text_encoder=None)


def test_item_description_reads_title_caption_and_season():
    row = {"title": "Nike Men Black Shoes", "attr_caption": "black sports shoes for men, sports", "season": "Summer"}
    assert item_description(row) == "Nike Men Black Shoes. black sports shoes for men, sports, summer"
    assert item_description({"title": "", "articleType": "Watches", "gender": "Men", "baseColour": "Black"}) \
        == "black watches for men"


def test_sentence_encoder_is_the_real_minilm():
    encoder = SentenceEncoder()
    a, b, c = encoder.encode(["red summer dress", "a red dress for summer", "men's black leather wallet"])
    assert a @ b > a @ c + 0.2


# -- composed search -----------------------------------------------------------------------------------------------
def test_composed_query_text_names_what_stays_of_the_reference():
    from modeling.retrieval.common.types import composed_query_text

    reference = {"articleType": "Tshirts", "gender": "Men", "baseColour": "Red"}
    assert composed_query_text("Make it  BLUE", reference) == "make it blue, tshirts for men"
    assert composed_query_text("make it blue", {"articleType": "Tshirts"}) == "make it blue, tshirts"
    assert composed_query_text("make it blue") == "make it blue"


def _all_scores(engine, query):
    return engine.index.vectors.reconstruct_batch(np.arange(len(engine.index))) @ query


def test_composed_search_extremes_are_image_only_and_text_only(plain_engine):
    from modeling.retrieval.common.types import composed_query_text

    engine = plain_engine
    items = engine.index.items
    item_id = items["id"].iloc[3]
    # Text weight 0: the reference image alone, i.e. "more like this" (reference excluded).
    image_only = engine.search_composed(text="make it blue", item_id=item_id, k=10, method="sum", text_weight=0.0,
                                        item_text_weight=0.0)
    assert [r.id for r in image_only] == [r.id for r in engine.search_item(item_id, k=10, expansion=0)]
    # Text weight 1: the model's text embedding of the modification + the reference's type and gender.
    text_only = engine.search_composed(text="make it blue", item_id=item_id, k=10, method="sum", text_weight=1.0,
                                       item_text_weight=0.0)
    query = engine.encode_texts([composed_query_text("make it blue", items.iloc[3].to_dict())])[0]
    scores = _all_scores(engine, query)
    scores[3] = -np.inf
    # The top 10 by the reference scores; compared by score, since the engine's cached query embedding may come
    # from another torch thread count (train.main sets it), which moves near-ties by an ulp.
    positions = [engine.position(r.id) for r in text_only]
    np.testing.assert_allclose(scores[positions], np.sort(scores)[::-1][:10], atol=1e-5)
    assert len(set(positions)) == 10 and item_id not in [r.id for r in text_only]


def test_composed_search_weighted_sum_and_item_text_fusion(plain_engine):
    from modeling.retrieval.common.types import composed_query_text

    engine = plain_engine
    items = engine.index.items
    item_id, weight, fusion = items["id"].iloc[7], 0.6, 0.5
    results = engine.search_composed(text="in black", item_id=item_id, k=10, method="sum", text_weight=weight,
                                     item_text_weight=fusion)
    text = composed_query_text("in black", items.iloc[7].to_dict())
    image = engine.index.vectors.reconstruct(7)
    composed = (1 - weight) * image + weight * engine.encode_texts([text])[0]
    composed /= np.linalg.norm(composed)
    fused = (1 - fusion) * _all_scores(engine, composed) + fusion * (
        engine.index.text_embeddings @ engine.sentence_encoder.encode([text])[0])
    fused[7] = -np.inf
    expected = np.argsort(-fused, kind="stable")[:10]
    assert [r.id for r in results] == items["id"].iloc[expected].tolist()
    assert results[0].score == pytest.approx(fused[expected[0]], abs=1e-5)


def test_composed_search_from_an_upload_and_its_errors(small_engine):
    engine = small_engine
    path = engine.index.items["image_path"].iloc[0]
    item_id = engine.index.items["id"].iloc[0]
    results = engine.search_composed(path, "make it red", k=5, exclude_ids=[item_id])
    assert len(results) == 5 and item_id not in [r.id for r in results]
    with pytest.raises(QueryError, match="reference"):
        engine.search_composed(None, "make it red")
    with pytest.raises(QueryError):
        engine.search_composed(path, "   ")
    with pytest.raises(QueryError, match="combiner|Combiner"):
        engine.search_composed(path, "make it red", method="combiner")
    with pytest.raises(QueryError, match="between 0 and 1"):
        engine.search_composed(path, "make it red", text_weight=1.5)


def test_predicted_attributes_name_an_uploaded_reference(tiny_text_model):
    import torch

    from modeling.retrieval.engine.encoding import QueryEncoder

    model = DualEncoderModel.from_text_pretrained(
        str(tiny_text_model), **tiny_model_kwargs(), attribute_labels={"articleType": ["Shirts", "Tshirts"],
                                                                         "gender": ["Men", "Women"]})
    with torch.no_grad():  # make the heads point at known directions
        model.attribute_heads["articleType"].weight.copy_(torch.eye(2, 16))
        model.attribute_heads["gender"].weight.copy_(torch.eye(2, 16)[[1, 0]])
    engine = QueryEncoder(model.eval(), None, None)  # what the engine's `predict_attributes` is
    embedding = np.zeros(16, np.float32)
    embedding[1] = 1.0
    assert engine.predict_attributes(embedding) == {"articleType": "Tshirts", "gender": "Men"}
    assert engine.predict_attributes(embedding, min_confidence=1.01) == {}


# -- hybrid re-ranking -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hybrid_engine(tiny_model_dir, tiny_vae_dir, small_gallery, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("hybrid") / "index"
    return FashionSearchEngine.load(tiny_model_dir, index_dir, catalog=small_gallery, text_encoder=None,
                                    rerank_model=tiny_vae_dir)


def test_hybrid_reranking_follows_its_weight(hybrid_engine, monkeypatch):
    engine = switch_off_extras(hybrid_engine, monkeypatch)
    item_id, depth = engine.index.items["id"].iloc[5], 30
    plain = engine.search_item(item_id, k=depth)
    assert [r.id for r in engine.search_item(item_id, k=10, rerank_weight=0.0)] == [r.id for r in plain[:10]]
    candidates = engine.positions(r.id for r in plain)
    rerank = engine.reranker.index.vectors.reconstruct_batch(candidates) @ \
        engine.reranker.index.vectors.reconstruct(5)
    for weight in (0.3, 1.0):
        results = engine.search_item(item_id, k=10, rerank_weight=weight, rerank_depth=depth)
        fused = (1 - weight) * np.array([r.score for r in plain]) + weight * rerank
        # Ties (duplicate photos in the catalog) go to the lower catalog position, as everywhere in the engine.
        expected = candidates[np.lexsort((candidates, -fused))[:10]]
        assert engine.positions(r.id for r in results).tolist() == expected.tolist()
        assert all(r.rerank_score is not None for r in results)
        assert set(r.id for r in results) <= set(r.id for r in plain)  # re-ranking never adds candidates
    moved = engine.search_item(item_id, k=10, rerank_weight=1.0, rerank_depth=depth)
    assert [r.id for r in moved] != [r.id for r in plain[:10]]
    # The same through an uploaded photo of the item.
    path = engine.index.items["image_path"].iloc[5]
    upload = engine.search_image(path, k=10, rerank_weight=1.0, rerank_depth=depth, exclude_ids=[item_id])
    assert [r.id for r in upload] == [r.id for r in moved]


def test_hybrid_needs_a_reranker_and_a_valid_weight(small_engine, hybrid_engine):
    item_id = small_engine.index.items["id"].iloc[0]
    with pytest.raises(QueryError, match="re-ranking model"):
        small_engine.search_item(item_id, rerank_weight=0.5)
    with pytest.raises(QueryError, match="between 0 and 1"):
        hybrid_engine.search_item(item_id, rerank_weight=2.0)


def test_image_only_model_refuses_text_queries(tiny_vae_dir, small_gallery, tmp_path):
    vae_engine = FashionSearchEngine.load(tiny_vae_dir, tmp_path / "vae-index", catalog=small_gallery)
    assert not vae_engine.supports_text and vae_engine.index.text_embeddings is None  # no fused item text
    with pytest.raises(QueryError, match="image only"):
        vae_engine.search_text("red dress")
    results = vae_engine.search_item(vae_engine.index.items["id"].iloc[0], k=5)
    assert len(results) == 5 and all(r.vsc is not None for r in results)  # VSC for visual-only models too


@pytest.mark.parametrize("k", [1, 5, 40, 100])
def test_top_k_order_matches_a_full_lexsort_with_ties(k):
    from modeling.retrieval.engine.search import top_k_order

    rng = np.random.default_rng(k)
    scores = rng.integers(0, 6, size=60).astype(np.float32) / 5  # many ties
    positions = rng.permutation(1000)[:60]
    expected = np.lexsort((positions, -scores))[:k]
    np.testing.assert_array_equal(top_k_order(scores, positions, k), expected)


def test_image_queries_are_expanded_with_their_nearest_items(plain_engine):
    engine = plain_engine
    vectors = engine.item_vectors()
    position = 7
    item_id = engine.ids[position]
    own = vectors[position]
    # Brute force: the two nearest other items join the query, weighted by their cosine.
    cosines = vectors @ own
    cosines[position] = -np.inf
    nearest = np.argsort(-cosines, kind="stable")[:2]
    query = own + (np.clip(cosines[nearest], 0, None)[:, None] * vectors[nearest]).sum(0)
    query /= np.linalg.norm(query)
    scores = vectors @ query
    scores[position] = -np.inf
    expected = np.argsort(-scores, kind="stable")[:10]
    results = engine.search_item(item_id, k=10)
    got = engine.positions(r.id for r in results)
    # The brute-force ranking up to near-ties (FAISS and numpy round differently).
    np.testing.assert_allclose([r.score for r in results], scores[expected], atol=1e-5)
    np.testing.assert_allclose([r.score for r in results], scores[got], atol=1e-5)
    # The cosine shown is the item's own, not the expanded query's.
    np.testing.assert_allclose([r.visual_score for r in results], (vectors @ own)[got], atol=1e-5)
    plain = engine.search_item(item_id, k=10, expansion=0)
    plain_scores = vectors @ own
    plain_scores[position] = -np.inf
    np.testing.assert_allclose([r.score for r in plain], np.sort(plain_scores)[::-1][:10], atol=1e-5)
    assert not np.allclose([r.score for r in plain], [r.score for r in results])
    # An uploaded photo of the item, itself excluded, ranks like the item; filters bound the neighbours too.
    path = engine.index.items["image_path"].iloc[position]
    upload = engine.search_image(path, k=10, exclude_ids=[item_id])
    np.testing.assert_allclose([r.score for r in upload], [r.score for r in results], atol=1e-5)
    gender = engine.index.items["gender"].iloc[position]
    filtered = engine.search_item(item_id, k=5, filters={"gender": gender})
    assert all(r.attributes["gender"] == gender for r in filtered)
    with pytest.raises(QueryError, match="expansion"):
        engine.search_item(item_id, expansion=-1)


def test_expand_queries_is_the_weighted_neighbour_mean():
    from modeling.retrieval.engine.search import expand_queries

    q = np.array([[1.0, 0.0]], dtype=np.float32)
    neighbours = np.array([[[0.0, 1.0], [-1.0, 0.0]]], dtype=np.float32)
    out = expand_queries(q, neighbours, np.array([[0.5, -0.2]], dtype=np.float32))
    np.testing.assert_allclose(out, [[1.0, 0.5]] / np.linalg.norm([1.0, 0.5]), rtol=1e-6)  # negative cosine ignored


def test_evaluation_ranks_more_like_this_exactly_as_the_engine(plain_engine):
    engine = plain_engine
    top = batch.item_rankings(engine, depth=10)  # what evaluation's "engine, expanded" columns rank by
    vectors = engine.item_vectors()
    for position in (0, 11, 42, 299):
        results = engine.search_item(engine.ids[position], k=10)
        query = batch.item_queries(engine, [position])[0]
        # Same ranking up to near-ties (FAISS and numpy round differently): identical scores in the same order.
        np.testing.assert_allclose(vectors[top[position]] @ query, [r.score for r in results], atol=1e-5)
        assert len(set(top[position]) & set(engine.positions(r.id for r in results))) >= 8
