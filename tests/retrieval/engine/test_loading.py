"""What `FashionSearchEngine.load` reads and never computes: the query-intent heads are fitted by the index build
and written beside the index; loading reads them. An index built before the build wrote them gets them fitted once,
with a warning, and keeps opening."""

import logging

import pytest


def test_intent_heads_are_fitted_by_the_build_and_only_read_on_load(tiny_model_dir, small_gallery, small_engine,
                                                                   tmp_path, monkeypatch, caplog):
    from modeling.retrieval.engine.search import FashionSearchEngine
    from modeling.retrieval.understanding.heads import INTENT_HEADS_FILE, IntentHeads

    index_dir = tmp_path / "index"
    encoder = small_engine.sentence_encoder
    built = FashionSearchEngine.load(tiny_model_dir, index_dir, catalog=small_gallery, sentence_encoder=encoder)
    assert (index_dir / INTENT_HEADS_FILE).is_file()

    def no_fit(*args, **kwargs):
        raise AssertionError("loading an index fitted the intent heads")

    monkeypatch.setattr(IntentHeads, "fit", no_fit)
    loaded = FashionSearchEngine.load(tiny_model_dir, index_dir, sentence_encoder=encoder)
    query = "blak tshrt for men"
    assert loaded.understand(query) == built.understand(query)
    (index_dir / INTENT_HEADS_FILE).unlink()  # an index built before the build wrote the heads
    with pytest.raises(AssertionError, match="fitted the intent heads"):
        FashionSearchEngine.load(tiny_model_dir, index_dir, sentence_encoder=encoder)
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING):
        old = FashionSearchEngine.load(tiny_model_dir, index_dir, sentence_encoder=encoder)
    assert "intent heads of the index are missing" in caplog.text
    assert (index_dir / INTENT_HEADS_FILE).is_file() and old.understand(query) == built.understand(query)
