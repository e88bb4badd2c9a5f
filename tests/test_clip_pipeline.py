"""CLIP + LoRA end to end on a tiny random CLIP: train a few steps, save the adapter, reload, index, search."""

import json

import pytest
import torch
from transformers import AutoModel, CLIPImageProcessorPil, CLIPModel

import train
from modeling import FashionClipModel
from modeling.retrieval.engine.search import FashionSearchEngine

from .test_modeling_fashion_clip import tiny_clip_config, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A random tiny CLIP saved like a Hub checkpoint: weights, tokenizer and a 30 px image processor."""
    folder = tmp_path_factory.mktemp("tiny-clip-base")
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config()).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(folder)
    return folder


def test_clip_lora_trains_saves_adapter_reloads_and_searches(catalog_dir, tiny_clip_dir, small_gallery, tmp_path):
    out = tmp_path / "clip-lora"
    summary = train.main(["--model", "clip-lora", "--base-model", str(tiny_clip_dir), "--catalog", str(catalog_dir),
                          "--output", str(out), "--max-train-items", "64", "--max-val-items", "40", "--epochs", "1",
                          "--batch-size", "16", "--lora-rank", "4", "--combiner-hidden-size", "24",
                          "--num-threads", "2"])
    record = summary["history"][0]
    assert set(record["terms"]) == {"contrastive", "composed"} and "r@10" in record["val"]
    # The folder holds the adapter (and combiner), not the base weights; the config names the base.
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["base_model_name_or_path"] == str(tiny_clip_dir)
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, FashionClipModel) and model.combiner is not None
    base = CLIPModel.from_pretrained(tiny_clip_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the adapters moved away from zero
    ids = tiny_tokenizer()(["red dress"], return_tensors="pt")["input_ids"]
    assert not torch.allclose(model.get_text_features(ids), base.get_text_features(ids).pooler_output)

    engine = FashionSearchEngine.load(out, tmp_path / "index", catalog=small_gallery, text_encoder=None)
    assert len(engine.search_text("red dress", k=5)) == 5
    item_id = engine.index.items["id"].iloc[0]
    composed = engine.search_composed(text="make it blue", item_id=item_id, k=5)
    assert len(composed) == 5 and item_id not in [r.id for r in composed]
    assert engine.search_image(engine.index.items["image_path"].iloc[0], k=1)[0].id == item_id
