"""ONNX export of every model's encoders: parity with PyTorch on real catalog images and titles, refusal below the
threshold, and indexing with ONNX Runtime."""

import json

import numpy as np
import pytest

from modeling.hub.onnx_export import OnnxEncoder, OnnxParityError, export_onnx, main
from modeling.retrieval.engine.search import FashionSearchEngine

from .test_clip_pipeline import tiny_clip_dir  # noqa: F401 -- fixtures of the CLIP+LoRA adapter folder
from .test_hub import tiny_clip_adapter  # noqa: F401


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dual-encoder", "vae", "clip-lora"])
def test_export_parity_on_real_catalog_items(kind, tiny_model_dir, tiny_vae_dir, tiny_clip_adapter,  # noqa: F811
                                             catalog_dir, tmp_path):
    source = {"dual-encoder": tiny_model_dir, "vae": tiny_vae_dir, "clip-lora": tiny_clip_adapter}[kind]
    config = main([str(source), str(tmp_path / "onnx"), "--catalog", str(catalog_dir), "--parity-items", "64"])
    towers = ["image"] if kind == "vae" else ["image", "text"]
    assert config["towers"] == towers and config["merged_lora"] == (kind == "clip-lora")
    for tower in towers:
        assert config["parity"][tower]["items"] == 64
        assert config["parity"][tower]["min"] >= 0.999
    assert json.loads((tmp_path / "onnx" / "onnx_config.json").read_text()) == config
    encoder = OnnxEncoder(tmp_path / "onnx")
    assert encoder.has_text == (kind != "vae")


def test_parity_failure_writes_nothing(tiny_model_dir, catalog_dir, tmp_path):
    with pytest.raises(OnnxParityError, match="disagrees"):
        export_onnx(tiny_model_dir, tmp_path / "onnx", catalog=catalog_dir, parity_items=8, min_cosine=1.01)
    assert not (tmp_path / "onnx").exists() and not list(tmp_path.glob(".onnx.tmp-*"))


@pytest.mark.slow
def test_index_built_with_onnx_runtime_matches_pytorch(tiny_model_dir, tiny_vae_dir, small_gallery, small_engine,
                                                       tmp_path):
    export_onnx(tiny_model_dir, tmp_path / "onnx")
    engine = FashionSearchEngine.load(tiny_model_dir, tmp_path / "index", catalog=small_gallery, onnx_dir=tmp_path / "onnx",
                                      sentence_encoder=small_engine.sentence_encoder)
    assert engine.index.manifest["model"]["encoder"] == "onnxruntime"
    n = len(engine.index)
    onnx_vectors = engine.index.vectors.reconstruct_batch(np.arange(n))
    torch_vectors = small_engine.index.vectors.reconstruct_batch(np.arange(n))
    assert np.min(np.sum(onnx_vectors * torch_vectors, axis=1)) >= 0.999
    # Same search results as the PyTorch-built index.
    query = small_engine.index.items["image_path"].iloc[3]
    assert [r.id for r in engine.search_image(query, k=5)] == [r.id for r in small_engine.search_image(query, k=5)]
    # An export of another model is refused.
    export_onnx(tiny_vae_dir, tmp_path / "vae-onnx")
    with pytest.raises(ValueError, match="another model"):
        FashionSearchEngine.load(tiny_model_dir, tmp_path / "index2", catalog=small_gallery,
                                 onnx_dir=tmp_path / "vae-onnx", text_encoder=None)
