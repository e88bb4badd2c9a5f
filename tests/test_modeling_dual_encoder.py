"""DualEncoderModel on tiny random configs: shapes, loss, LoRA, save/load round trips, Auto classes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from modeling import DualEncoderConfig, DualEncoderImageProcessor, DualEncoderModel
from modeling.models.modeling_dual_encoder import dual_encoder_loss, supervised_contrastive_loss

from .conftest import tiny_bert_config_dict, tiny_model_kwargs


class DualEncoderModelTester:
    batch_size, seq_length = 3, 7

    def __init__(self, **overrides):
        self.config = DualEncoderConfig(text_config=tiny_bert_config_dict(), **{**tiny_model_kwargs(), **overrides})

    def inputs(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(5, 99, (self.batch_size, self.seq_length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, -2:] = 0
        pixels = torch.randn(self.batch_size, 3, *self.config.image_size, generator=g)
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def test_forward_shapes_and_loss_only_when_asked():
    tester = DualEncoderModelTester()
    model = DualEncoderModel(tester.config).eval()
    inputs = tester.inputs()
    out = model(**inputs)
    assert out.loss is None
    assert out.logits_per_image.shape == (3, 3) and out.logits_per_text.shape == (3, 3)
    assert out.image_embeds.shape == (3, 16) and out.text_embeds.shape == (3, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    out = model(**inputs, return_loss=True)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_features_are_unnormalised_projections():
    tester = DualEncoderModelTester()
    model = DualEncoderModel(tester.config).eval()
    inputs = tester.inputs()
    image = model.get_image_features(inputs["pixel_values"])
    text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    assert image.shape == text.shape == (3, 16)
    assert not torch.allclose(image.norm(dim=-1), torch.ones(3))
    out = model(**inputs)
    torch.testing.assert_close(out.image_embeds, torch.nn.functional.normalize(image, dim=-1))
    pooled = model.encode_text_backbone(inputs["input_ids"], inputs["attention_mask"])
    torch.testing.assert_close(model.get_text_features(text_pooled_output=pooled), text)


def test_mean_pooling_ignores_padding():
    model = DualEncoderModel(DualEncoderModelTester().config).eval()
    hidden = torch.randn(2, 4, 32)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = model.pool_text(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :2].mean(0))
    cls_model = DualEncoderModel(DualEncoderModelTester(text_pooling="cls").config)
    torch.testing.assert_close(cls_model.pool_text(hidden, mask), hidden[:, 0])


def test_loss_matches_reference_and_positive_mask():
    logits = torch.randn(4, 4)
    expected = (torch.nn.functional.cross_entropy(logits, torch.arange(4))
                + torch.nn.functional.cross_entropy(logits.t(), torch.arange(4))) / 2
    torch.testing.assert_close(dual_encoder_loss(logits), expected)
    # Texts 0 and 1 are identical: each spreads its target over both images (and vice versa).
    mask = torch.eye(4, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    logits = torch.randn(4, 4)
    targets = mask.float() / mask.float().sum(-1, keepdim=True)
    manual = sum(-(targets[i] * torch.log_softmax(logits[i], -1)).sum() for i in range(4)) / 4
    manual_t = sum(-(targets[i] * torch.log_softmax(logits.t()[i], -1)).sum() for i in range(4)) / 4
    torch.testing.assert_close(dual_encoder_loss(logits, mask), (manual + manual_t) / 2)


def _supcon_reference(embeds, labels, memory, memory_labels, scale=10.0):
    """Row by row: -mean over positives of log(exp(s·z_i·z_p) / sum over all other candidates)."""
    candidates, candidate_labels = torch.cat([embeds, memory]), torch.cat([labels, memory_labels])
    losses = []
    for i in range(len(embeds)):
        others = [j for j in range(len(candidates)) if j != i]
        positives = [j for j in others if candidate_labels[j] == labels[i]]
        if not positives:
            continue
        denominator = torch.logsumexp(torch.stack([scale * embeds[i] @ candidates[j] for j in others]), 0)
        losses.append(-torch.stack([scale * embeds[i] @ candidates[p] - denominator for p in positives]).mean())
    return torch.stack(losses).mean()


def test_supcon_with_cross_batch_memory_matches_reference():
    g = torch.Generator().manual_seed(0)
    embeds = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    memory = torch.nn.functional.normalize(torch.randn(7, 8, generator=g), dim=-1)
    labels, memory_labels = torch.tensor([0, 0, 1, 2, 3]), torch.tensor([1, 2, 2, 4, 0, 5, 1])
    mask = labels[:, None] == labels[None, :]
    memory_mask = labels[:, None] == memory_labels[None, :]
    # Without memory only items 0 and 1 have a positive; with it, 2 and 3 gain theirs (item 4 still has none).
    torch.testing.assert_close(supervised_contrastive_loss(embeds, mask),
                               _supcon_reference(embeds, labels, memory[:0], memory_labels[:0]))
    with_memory = supervised_contrastive_loss(embeds, mask, memory_embeds=memory, memory_positive_mask=memory_mask)
    torch.testing.assert_close(with_memory, _supcon_reference(embeds, labels, memory, memory_labels))
    assert not torch.allclose(with_memory, supervised_contrastive_loss(embeds, mask))
    with pytest.raises(ValueError, match="memory_positive_mask"):
        supervised_contrastive_loss(embeds, mask, memory_embeds=memory)


def test_forward_passes_the_memory_to_the_supcon_loss():
    tester = DualEncoderModelTester(image_supcon_weight=1.0)
    model = DualEncoderModel(tester.config).eval()
    inputs = {**tester.inputs(), "image_positive_mask": torch.eye(3, dtype=torch.bool), "return_loss": True}
    assert model(**inputs).supcon_loss == 0  # no image has a positive in its batch
    memory = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    memory_mask = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    out = model(**inputs, image_memory_embeds=memory, image_memory_positive_mask=memory_mask)
    labels, memory_labels = torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2, 3])
    torch.testing.assert_close(out.supcon_loss, _supcon_reference(out.image_embeds, labels, memory, memory_labels))
    torch.testing.assert_close(out.loss, out.contrastive_loss + out.supcon_loss)


def test_attribute_heads_add_loss_and_ignore_unknown():
    tester = DualEncoderModelTester(attribute_labels={"articleType": ["Shirts", "Watches"], "gender": ["Men", "Women"]})
    model = DualEncoderModel(tester.config)
    inputs = tester.inputs()
    targets = torch.tensor([[0, 1], [1, -100], [-100, -100]])
    out = model(**inputs, attribute_targets=targets, return_loss=True)
    assert set(out.attribute_logits) == {"articleType", "gender"}
    assert out.attribute_logits["articleType"].shape == (3, 2)
    torch.testing.assert_close(out.loss, out.contrastive_loss + 0.5 * out.attribute_loss)


def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def _train_step(model, inputs):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(**inputs, return_loss=True).loss.backward()
    opt.step()


def test_frozen_text_tower_does_not_change():
    tester = DualEncoderModelTester(freeze_text_model=True)
    model = DualEncoderModel(tester.config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_step(model, tester.inputs())
    changed = _changed(model, before)
    assert not any(n.startswith("text_model.") for n in changed)
    assert any(n.startswith("text_projection.") for n in changed)
    assert any(n.startswith("vision_model.") for n in changed)


def test_lora_trains_only_adapters_in_text_tower(tmp_path):
    tester = DualEncoderModelTester(text_lora_rank=4, text_lora_target_modules=["query", "value"])
    model = DualEncoderModel(tester.config)
    trainable_text = {n for n, p in model.text_model.named_parameters() if p.requires_grad}
    assert trainable_text and all("lora_" in n for n in trainable_text)
    assert all(".query." in n or ".value." in n for n in trainable_text)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):  # LoRA B starts at zero, so A only moves from the second step
        _train_step(model, tester.inputs())
    text_changed = {n for n in _changed(model, before) if n.startswith("text_model.")}
    assert text_changed and all("lora_" in n for n in text_changed)
    assert any(n.startswith("text_projection.") for n in _changed(model, before))

    model.eval().save_pretrained(tmp_path)
    reloaded = DualEncoderModel.from_pretrained(tmp_path).eval()
    inputs = tester.inputs(seed=1)
    torch.testing.assert_close(reloaded(**inputs).logits_per_image, model(**inputs).logits_per_image)


def test_save_pretrained_round_trip_and_auto_classes(tmp_path):
    tester = DualEncoderModelTester(attribute_labels={"gender": ["Men", "Women"]})
    model = DualEncoderModel(tester.config)
    model.train()(**tester.inputs(seed=3))  # move the BatchNorm running statistics away from their init
    model.eval().save_pretrained(tmp_path)
    DualEncoderImageProcessor(image_size=tester.config.image_size).save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pkl", ".pt")) for f in files)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "fashion_dual_encoder"
    assert any(k.startswith("text_model.") for k in load_file(tmp_path / "model.safetensors"))

    assert isinstance(AutoConfig.from_pretrained(tmp_path), DualEncoderConfig)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, DualEncoderModel)
    inputs = tester.inputs()
    a, b = model(**inputs), reloaded(**inputs)
    torch.testing.assert_close(a.image_embeds, b.image_embeds)
    torch.testing.assert_close(a.text_embeds, b.text_embeds)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, DualEncoderImageProcessor) and processor.image_size == [20, 16]


def test_from_text_pretrained_copies_the_text_tower(tiny_text_model):
    model = DualEncoderModel.from_text_pretrained(str(tiny_text_model), **tiny_model_kwargs())
    reference = AutoModel.from_pretrained(tiny_text_model)
    for name, tensor in reference.state_dict().items():
        if not name.startswith("pooler."):
            torch.testing.assert_close(model.text_model.state_dict()[name], tensor)
    assert model.config.text_model_name_or_path == str(tiny_text_model)


def test_image_processor_letterboxes_any_mode():
    processor = DualEncoderImageProcessor(image_size=[80, 64])
    square = Image.new("L", (100, 100), 0)  # black square, greyscale
    arr = processor.resize_and_pad(square)
    assert arr.shape == (80, 64, 3) and arr.dtype == np.uint8
    assert (arr[0] == 255).all() and (arr[40, 32] == 0).all()  # white borders top, image in the middle
    rgba = Image.new("RGBA", (60, 80), (255, 0, 0, 0))  # fully transparent -> white
    assert (processor.resize_and_pad(rgba) == 255).all()
    batch = processor([square, rgba])["pixel_values"]
    assert batch.shape == (2, 3, 80, 64) and batch.dtype == torch.float32


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        DualEncoderConfig(text_config=tiny_bert_config_dict(), text_pooling="max")
    with pytest.raises(ValueError):
        DualEncoderConfig(text_config=tiny_bert_config_dict(), cnn_channels=[8], cnn_blocks_per_stage=[1, 1])


def test_channels_last_activations_change_nothing_but_speed():
    tester = DualEncoderModelTester(cnn_stem_channels=16, cnn_channels=[16, 32])
    model = DualEncoderModel(tester.config)
    assert model.vision_model.channels_last and not DualEncoderModel(DualEncoderModelTester().config).vision_model.channels_last
    inputs = tester.inputs()
    model.train()
    model(**inputs, return_loss=True).loss.backward()  # the channels-last backward runs
    model.eval()
    with torch.no_grad():
        fast = model.get_image_features(inputs["pixel_values"])
        model.vision_model.channels_last = False
        plain = model.get_image_features(inputs["pixel_values"])
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
