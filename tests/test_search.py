"""The search engine on a small real gallery with a tiny model: fusion arithmetic, filters, errors, index reuse."""

import io

import numpy as np
import pytest

from modeling import DualEncoderModel
from modeling.data import ImageError
from modeling.index import IndexMismatchError
from modeling.search import FashionSearchEngine, QueryError, item_description
from modeling.text_encoder import SentenceEncoder

from .conftest import tiny_model_kwargs




def test_text_search_fuses_visual_and_item_text_scores(small_engine):
    engine = small_engine
    query, weight = "black casual shoes for men", 0.4
    results = engine.search_text(query, k=10, text_weight=weight)
    assert len(results) == 10 and [r.rank for r in results] == list(range(1, 11))
    # Brute force over the whole gallery.
    visual = engine.index.vectors.reconstruct_batch(np.arange(len(engine.index))) @ engine.encode_texts([query])[0]
    text = engine.index.text_embeddings @ engine.sentence_encoder.encode([query])[0]
    fused = (1 - weight) * visual + weight * text
    expected = np.argsort(-fused, kind="stable")[:10]
    assert [r.id for r in results] == engine.index.items["id"].iloc[expected].tolist()
    for r, i in zip(results, expected):
        assert r.score == pytest.approx(fused[i], abs=1e-5)
        assert r.visual_score == pytest.approx(visual[i], abs=1e-5)
        assert r.text_score == pytest.approx(text[i], abs=1e-5)
    visual_only = engine.search_text(query, k=10, text_weight=0.0)
    assert all(r.text_score is None and r.score == r.visual_score for r in visual_only)


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
