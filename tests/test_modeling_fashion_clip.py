"""CLIP + LoRA model: shapes, losses, LoRA placement and trainability, adapter-only save/load, composition, merging.

A tiny random CLIP (hidden 32, 2 layers, 4 heads, image 30, patch 2, the transformers CLIPModelTester sizes) and a
character-level CLIP tokenizer are built in code; the only download is the `hub` test.
"""

import string

import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPModel, CLIPTokenizer

from modeling import FashionClipConfig, FashionClipModel
from modeling.models.composition import weighted_sum
from modeling.models.modeling_fashion_clip import fashion_clip_loss

PROJECTION_DIM = 16
TEXTS = ["red summer dress", "blue shirt for men", "black watch", "white sports shoes"]


def tiny_clip_config() -> CLIPConfig:
    tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}
    return CLIPConfig(
        # bos/eos/pad match the tokenizer below; eos != 2, so CLIP pools the first EOS position.
        text_config={**tower, "vocab_size": 99, "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={**tower, "image_size": 30, "patch_size": 2},
        projection_dim=PROJECTION_DIM,
    )


def tiny_tokenizer() -> CLIPTokenizer:
    """CLIP's byte-level BPE with a character vocabulary (no merges): ids < 99, `<|endoftext|>` = 1 ends and pads."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + "-,.":
        vocab[char] = len(vocab)
        vocab[f"{char}</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


MODEL_KWARGS = {"lora_rank": 4, "lora_alpha": 8, "combiner_hidden_size": 24}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A random tiny CLIPModel saved like a Hub checkpoint (plus its tokenizer)."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config()).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inputs():
    tokens = tiny_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
            "pixel_values": torch.randn(len(TEXTS), 3, 30, 30, generator=generator)}


def make_model(**kwargs) -> FashionClipModel:
    torch.manual_seed(0)
    return FashionClipModel(FashionClipConfig(clip_config=tiny_clip_config(), **{**MODEL_KWARGS, **kwargs})).eval()


def randomise_adapters(model: FashionClipModel) -> FashionClipModel:
    """LoRA B starts at zero (adapted == base); give it values so the adapters change the outputs."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model


def embeddings(model, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        image = model.get_image_features(inputs["pixel_values"])
        composed = model.get_composed_features(image_embeds=image, text_embeds=text)
    return {"text": text, "image": image, "composed": composed}


def test_config_defaults_and_validation():
    config = FashionClipConfig()
    assert config.model_type == "fashion_clip"
    assert isinstance(config.clip_config, CLIPConfig)
    assert config.base_model_name_or_path == "openai/clip-vit-base-patch32"
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    assert config.composition_method == "combiner"
    assert FashionClipConfig(combiner_hidden_size=0).composition_method == "sum"
    with pytest.raises(ValueError, match="combiner_hidden_size"):
        FashionClipConfig(combiner_hidden_size=0, composition_method="combiner")
    with pytest.raises(ValueError, match="composition_method"):
        FashionClipConfig(composition_method="concat")
    reloaded = FashionClipConfig(**tiny_config_dict())
    assert reloaded.clip_config.projection_dim == PROJECTION_DIM
    assert reloaded.clip_config.text_config.eos_token_id == 1


def tiny_config_dict() -> dict:
    return FashionClipConfig(clip_config=tiny_clip_config(), **MODEL_KWARGS).to_dict()


def test_feature_shapes_and_clip_projection(inputs):
    model = make_model()
    text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    image = model.get_image_features(inputs["pixel_values"])
    composed = model.get_composed_features(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
    assert text.shape == image.shape == composed.shape == (len(TEXTS), PROJECTION_DIM)
    # get_text_features/get_image_features are the projected pooled outputs of the towers (transformers 5 returns an
    # output object whose pooler_output holds the projection).
    clip = model.clip
    with torch.no_grad():
        pooled_text = clip.text_model(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        pooled_image = clip.vision_model(pixel_values=inputs["pixel_values"]).pooler_output
        torch.testing.assert_close(text, clip.text_projection(pooled_text))
        torch.testing.assert_close(image, clip.visual_projection(pooled_image))
        # Pooling takes the EOS token: padding after it changes nothing.
        single = tiny_tokenizer()(TEXTS[:1], return_tensors="pt")
        torch.testing.assert_close(model.get_text_features(single["input_ids"], single["attention_mask"]), text[:1])


def test_loss_only_with_return_loss_and_composed_loss_with_triplets(inputs):
    model = make_model()
    out = model(**inputs)
    assert out.loss is None and out.composed_embeds is None
    assert out.logits_per_text.shape == (len(TEXTS), len(TEXTS))
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.t())
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(len(TEXTS)))

    out = model(**inputs, return_loss=True)
    assert out.loss.shape == () and out.composed_loss is None
    torch.testing.assert_close(out.loss, fashion_clip_loss(out.logits_per_text))
    # Multi-positive: texts 0 and 1 both describe images 0 and 1.
    mask = torch.eye(len(TEXTS))
    mask[0, 1] = mask[1, 0] = 1
    assert not torch.allclose(model(**inputs, positive_mask=mask, return_loss=True).loss, out.loss)

    triplets = {"reference_pixel_values": inputs["pixel_values"], "modification_input_ids": inputs["input_ids"],
                "modification_attention_mask": inputs["attention_mask"],
                "target_pixel_values": inputs["pixel_values"].flip(0)}
    out = model(**inputs, **triplets, return_loss=True)
    assert out.composed_embeds.shape == out.target_embeds.shape == (len(TEXTS), PROJECTION_DIM)
    assert out.logits_per_composed.shape == (len(TEXTS), len(TEXTS))
    assert out.composed_loss is not None and out.contrastive_loss is not None
    torch.testing.assert_close(out.loss, out.contrastive_loss + model.config.composed_loss_weight * out.composed_loss)
    composed_only = model(**triplets, return_loss=True)
    assert composed_only.contrastive_loss is None
    torch.testing.assert_close(composed_only.loss, out.composed_loss)
    with pytest.raises(ValueError, match="return_loss"):
        model(input_ids=inputs["input_ids"], return_loss=True)


def test_lora_targets_both_towers_and_only_adapters_train():
    model = make_model()
    adapted = {name for name, module in model.clip.named_modules() if isinstance(module, LoraLayer)}
    expected = {f"{tower}.encoder.layers.{layer}.self_attn.{proj}"
                for tower in ("text_model", "vision_model") for layer in range(2) for proj in ("q_proj", "v_proj")}
    assert adapted == expected
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("combiner.") or n == "clip.logit_scale" for n in trainable)
    assert any(n.startswith("clip.text_model") for n in trainable)
    assert any(n.startswith("clip.vision_model") for n in trainable)
    assert "clip.logit_scale" in trainable
    assert "clip.logit_scale" not in {n for n, p in make_model(train_logit_scale=False).named_parameters()
                                      if p.requires_grad}
    # A string is a regex used as is: here the text tower only.
    text_only = make_model(lora_target_modules=r"text_model\..*\.(q_proj|v_proj)")
    assert {n for n, m in text_only.clip.named_modules() if isinstance(m, LoraLayer)} == {
        name for name in expected if name.startswith("text_model")}
    no_lora = make_model(lora_rank=0)
    assert _parameter_counts(no_lora)["lora"] == 0


def test_optimizer_step_changes_only_trainable_parameters(inputs):
    model = make_model().train()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    triplets = {"reference_pixel_values": inputs["pixel_values"], "modification_input_ids": inputs["input_ids"],
                "target_pixel_values": inputs["pixel_values"].flip(0)}
    model(**inputs, **triplets, return_loss=True).loss.backward()
    optimizer.step()
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed <= trainable
    assert any("lora_B" in n for n in changed) and any(n.startswith("combiner.") for n in changed)
    assert "clip.logit_scale" in changed


def _parameter_counts(model) -> dict[str, int]:
    """`total` (base CLIP + LoRA + combiner), `trainable`, `lora` and `combiner` parameters of a FashionClipModel."""
    named = list(model.named_parameters())
    return {
        "total": sum(p.numel() for _, p in named),
        "trainable": sum(p.numel() for _, p in named if p.requires_grad),
        "lora": sum(p.numel() for name, p in named if "lora_" in name),
        "combiner": sum(p.numel() for name, p in named if name.startswith("combiner.")),
    }


def test_parameter_counts():
    summary = _parameter_counts(make_model())
    # LoRA rank 4 on q/v (32x32) of 2 layers in each of the 2 towers: 8 layers x (4*32 + 32*4).
    assert summary["lora"] == 8 * (4 * 32 + 32 * 4) == 2048
    assert summary["trainable"] == summary["lora"] + summary["combiner"] + 1  # + logit_scale
    assert summary["total"] == sum(p.numel() for p in CLIPModel(tiny_clip_config()).parameters()) + \
        summary["lora"] + summary["combiner"]


def test_save_is_adapter_only_and_reload_is_identical(base_dir, inputs, tmp_path):
    model = FashionClipModel.from_clip_pretrained(str(base_dir), **MODEL_KWARGS)
    assert model.config.base_model_name_or_path == str(base_dir) and model.training
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, p in make_model().named_parameters() if p.requires_grad}
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())
    reference = CLIPModel.from_pretrained(base_dir).eval()
    with torch.no_grad():  # pretrained weights in place, LoRA B = 0: the new model computes exactly the base CLIP
        base_text = reference.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        torch.testing.assert_close(embeddings(model.eval(), inputs)["text"], base_text)
        torch.testing.assert_close(embeddings(model, inputs)["image"],
                                   reference.get_image_features(inputs["pixel_values"]).pooler_output)
    scaled = FashionClipModel.from_clip_pretrained(str(base_dir), logit_scale_init_value=2.0, **MODEL_KWARGS)
    assert scaled.logit_scale.item() == pytest.approx(2.0)

    model = randomise_adapters(model).eval()
    model.save_pretrained(tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_model.safetensors", "config.json"]

    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert all("lora_" in k or k.startswith("combiner.") or k == "clip.logit_scale" for k in saved)
    saved_size = sum(t.numel() * t.element_size() for t in saved.values())
    full_size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert saved_size < 0.25 * full_size
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size < 0.25 * full_size

    expected = embeddings(model, inputs)
    assert not torch.allclose(base_text, expected["text"])  # the adapters matter: a reload must not be the bare base
    folder = tmp_path / "adapter"
    for loaded in (FashionClipModel.from_pretrained(folder), AutoModel.from_pretrained(folder)):
        assert type(loaded) is FashionClipModel and not loaded.training
        for key, value in embeddings(loaded, inputs).items():
            torch.testing.assert_close(value, expected[key], msg=key)
        torch.testing.assert_close(loaded.logit_scale, model.logit_scale)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "adapter"), FashionClipConfig)
    overridden = AutoModel.from_pretrained(tmp_path / "adapter", composition_method="sum")
    assert overridden.config.composition_method == "sum"
    with pytest.raises(ValueError, match="safetensors"):
        model.save_pretrained(tmp_path / "pickle", safe_serialization=False)


def test_composition_sum_and_combiner(inputs):
    model = make_model()
    features = embeddings(model, inputs)
    image, text = features["image"], features["text"]
    norm = torch.nn.functional.normalize
    with torch.no_grad():
        torch.testing.assert_close(model.get_composed_features(image_embeds=image, text_embeds=text, method="sum",
                                                               text_weight=0.0), norm(image, dim=-1))
        torch.testing.assert_close(model.get_composed_features(image_embeds=image, text_embeds=text, method="sum",
                                                               text_weight=1.0), norm(text, dim=-1))
        summed = model.get_composed_features(image_embeds=image, text_embeds=text, method="sum")
        torch.testing.assert_close(summed, weighted_sum(image, text, 0.5))
        combined = model.get_composed_features(image_embeds=image, text_embeds=text, method="combiner")
        assert combined.shape == (len(TEXTS), PROJECTION_DIM)
        assert not torch.allclose(combined, summed)
        torch.testing.assert_close(combined, features["composed"])  # config default: the combiner
        # Pixels/ids give the same as precomputed embeddings.
        torch.testing.assert_close(
            model.get_composed_features(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]),
            combined)
    without = make_model(combiner_hidden_size=0)
    assert without.combiner is None and without.config.composition_method == "sum"
    with pytest.raises(ValueError, match="no trained combiner"):
        without.get_composed_features(image_embeds=image, text_embeds=text, method="combiner")


def test_merge_and_unload_matches_adapted_model(inputs, tmp_path):
    model = randomise_adapters(make_model())
    expected = embeddings(model, inputs)
    merged = model.merge_and_unload()
    assert type(merged) is CLIPModel
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert not any("lora_" in k or "base_layer" in k for k in merged.state_dict())
    assert any(isinstance(m, LoraLayer) for m in model.modules())  # the adapted model is left as it was
    merged.save_pretrained(tmp_path / "merged")
    reloaded = CLIPModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        for clip in (merged.eval(), reloaded):
            torch.testing.assert_close(
                clip.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output, expected["text"])
            torch.testing.assert_close(clip.get_image_features(inputs["pixel_values"]).pooler_output, expected["image"])


@pytest.mark.hub
def test_from_clip_pretrained_counts_on_the_hub():
    model = FashionClipModel.from_clip_pretrained("openai/clip-vit-base-patch32")
    summary = _parameter_counts(model)
    # Rank 8 on q/v: 12 text layers (512 wide) + 12 vision layers (768 wide), 2 projections each.
    assert summary["lora"] == 12 * 2 * 8 * (512 + 512) + 12 * 2 * 8 * (768 + 768) == 491_520
    assert summary["trainable"] == summary["lora"] + summary["combiner"] + 1
    assert summary["total"] == 151_277_313 + summary["lora"] + summary["combiner"]
    assert summary["trainable"] / summary["total"] < 0.02
