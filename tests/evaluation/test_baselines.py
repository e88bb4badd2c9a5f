"""Reference baselines: colour histogram, the histogram + learned-feature hybrid, pretrained extractors, throughput.

The pretrained extractors are tested on tiny random checkpoints built here the transformers ModelTester way and
saved like their Hub counterparts (model weights + preprocessor_config.json), so no network is needed.
"""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modeling.evaluation.baselines import (
    PRETRAINED_EXTRACTORS,
    PretrainedImageExtractor,
    colour_histogram,
    colour_histogram_features,
    hybrid_features,
)

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- hybrid --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_hybrid_cosine_is_the_weighted_sum_of_block_cosines(weight):
    rng = np.random.default_rng(0)
    hist = np.abs(rng.standard_normal((6, 128)))  # histogram features are non-negative
    learned = rng.standard_normal((6, 24)) * 5.0  # any scale: each block is normalised
    hybrid = hybrid_features(hist, learned, hist_weight=weight)
    assert hybrid.shape == (6, 152) and hybrid.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(hybrid, axis=1), 1.0, atol=1e-6)
    for i in range(6):
        for j in range(6):
            expected = weight * _cos(hist[i], hist[j]) + (1 - weight) * _cos(learned[i], learned[j])
            assert _cos(hybrid[i], hybrid[j]) == pytest.approx(expected, abs=1e-6)
            assert float(hybrid[i] @ hybrid[j]) == pytest.approx(expected, abs=1e-6)  # unit rows: dot = cosine


def test_hybrid_keeps_zero_rows_zero_and_ranks_by_learned_at_weight_zero():
    hist = np.array([[0.0, 0.0], [1.0, 0.0]])
    learned = np.array([[3.0, 4.0], [0.0, 2.0]])
    hybrid = hybrid_features(hist, learned, hist_weight=0.25)
    assert np.isfinite(hybrid).all()
    np.testing.assert_allclose(hybrid[0], [0.0, 0.0, np.sqrt(0.75) * 0.6, np.sqrt(0.75) * 0.8], atol=1e-7)
    np.testing.assert_allclose(hybrid_features(hist, learned, 0.0)[:, 2:], [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)


@pytest.mark.parametrize("hist, learned, weight, message", [
    (np.zeros((3, 4)), np.zeros((2, 5)), 0.5, "Row counts"),
    (np.zeros(4), np.zeros((1, 5)), 0.5, "2-D"),
    (np.zeros((2, 4)), np.zeros((2, 5, 1)), 0.5, "2-D"),
    (np.zeros((2, 4)), np.zeros((2, 5)), -0.1, r"\[0, 1\]"),
    (np.zeros((2, 4)), np.zeros((2, 5)), 1.5, r"\[0, 1\]"),
    (np.zeros((2, 4)), np.zeros((2, 5)), float("nan"), r"\[0, 1\]"),
])
def test_hybrid_validation(hist, learned, weight, message):
    with pytest.raises(ValueError, match=message):
        hybrid_features(hist, learned, hist_weight=weight)


# -- colour histogram ----------------------------------------------------------------------------------------------
def test_colour_histogram_compares_colours_and_ignores_the_white_background():
    red, red2, blue = (Image.new("RGB", (64, 64), c) for c in ((220, 20, 20), (200, 30, 25), (20, 20, 220)))
    f_red, f_red2, f_blue = colour_histogram_features([red, red2, blue])
    assert f_red.shape == (4 * 8 * 4 * 4,) and f_red.dtype == np.float32
    assert _cos(f_red, f_red2) > 0.99 > _cos(f_red, f_blue)
    assert _cos(f_red, f_blue) < 0.01
    np.testing.assert_allclose(np.linalg.norm(f_red.reshape(4, -1), axis=1), 1.0, atol=1e-6)  # Hellinger blocks

    on_white = Image.new("RGB", (64, 64), (255, 255, 255))
    on_white.paste((220, 20, 20), (8, 8, 56, 56))  # a red product on the white photo background, in every region
    np.testing.assert_allclose(colour_histogram(on_white), f_red, atol=1e-6)
    assert not colour_histogram(Image.new("RGB", (16, 16), "white")).any()  # all background: zero feature
    np.testing.assert_allclose(colour_histogram(red.convert("RGBA")), f_red)  # any mode


# -- pretrained extractors -----------------------------------------------------------------------------------------
def _save_dinov2(folder):
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(folder)  # facebook/dinov2-small is a bare Dinov2Model
    BitImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                         image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, resample=3).save_pretrained(folder)


def _save_resnet(folder):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    ResNetForImageClassification(config).save_pretrained(folder)  # microsoft/resnet-50 is a classifier checkpoint
    (folder / "preprocessor_config.json").write_text(json.dumps({  # the Hub file's legacy format, size 32
        "crop_pct": 0.875, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "ConvNextFeatureExtractor", "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3, "size": 32}))


def _save_vit(folder):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=8, num_labels=3)
    ViTForImageClassification(config).save_pretrained(folder)  # as google/vit-base-patch16-224: no pooler weights
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": 32}))


FAMILIES = {"dinov2": (_save_dinov2, 32, "BitImageProcessorPil", "Dinov2Model"),
            "resnet": (_save_resnet, 16, "ConvNextImageProcessorPil", "ResNetModel"),
            "vit": (_save_vit, 32, "ViTImageProcessorPil", "ViTModel")}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def extractor(request, tmp_path_factory):
    family = request.param
    folder = tmp_path_factory.mktemp(f"tiny-{family}")
    FAMILIES[family][0](folder)
    return family, PretrainedImageExtractor(str(folder))


def _images():
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 24, 4), dtype=np.uint8), "RGBA")
    grey = Image.fromarray(rng.integers(0, 256, (30, 50), dtype=np.uint8), "L")
    rgb = Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8), "RGB")
    return [rgb, rgba, grey, rgb.resize((20, 33)).convert("P")]


def test_extractor_loads_the_pil_processor_and_the_bare_model(extractor):
    family, ex = extractor
    _, dim, processor_name, model_name = FAMILIES[family]
    assert type(ex.image_processor).__name__ == processor_name  # PIL backend: no torchvision needed
    assert type(ex.model).__name__ == model_name and not ex.model.training
    assert ex.dim == dim and ex.name.endswith(f"tiny-{family}0")
    assert PRETRAINED_EXTRACTORS[family].split("/")[0] in ("facebook", "microsoft", "google")


def test_extractor_encodes_unit_norm_deterministic_batch_independent(extractor):
    family, ex = extractor
    images = _images()
    feats = ex.encode(images, batch_size=3)
    assert feats.shape == (len(images), FAMILIES[family][1]) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(ex.encode(images, batch_size=3), feats)
    np.testing.assert_allclose(ex.encode(images, batch_size=1), feats, atol=1e-5)
    assert np.abs(feats[0] - feats[2]).max() > 1e-3  # different images, different features
    empty = ex.encode([])
    assert empty.shape == (0, ex.dim) and empty.dtype == np.float32


def test_extractor_converts_to_rgb_first(extractor):
    _, ex = extractor
    clear = Image.new("RGBA", (40, 40), (10, 200, 30, 0))  # fully transparent: composited on white
    grey = Image.new("L", (40, 40), 90)
    feats = ex.encode([clear, Image.new("RGB", (40, 40), "white"), grey, Image.new("RGB", (40, 40), (90, 90, 90))])
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-6)
    np.testing.assert_allclose(feats[2], feats[3], atol=1e-6)


def test_extractor_pooling_per_family(extractor):
    family, ex = extractor
    image = _images()[0]
    pixel_values = ex.image_processor([image], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        outputs = ex.model(pixel_values=pixel_values)
    if family == "resnet":  # global average pool, (B, C, 1, 1)
        assert outputs.pooler_output.shape == (1, 16, 1, 1)
        expected = outputs.pooler_output.flatten(1)
        torch.testing.assert_close(expected, outputs.last_hidden_state.mean(dim=(2, 3)))
    elif family == "dinov2":  # pooler_output is the layernormed CLS token
        torch.testing.assert_close(outputs.pooler_output, outputs.last_hidden_state[:, 0])
        expected = outputs.pooler_output
    else:  # ViT: no (untrained) pooler loaded, the CLS token of the final-layernormed sequence
        assert ex.model.pooler is None and outputs.pooler_output is None
        expected = outputs.last_hidden_state[:, 0]
    np.testing.assert_allclose(ex.encode([image])[0], F.normalize(expected, dim=-1)[0].numpy(), atol=1e-6)


def test_vit_checkpoint_weights_all_used(tmp_path):
    """The ViT classifier checkpoint fills every ViTModel weight (the pooler is not built, not left random)."""
    from transformers import ViTForImageClassification

    _save_vit(tmp_path)
    ex = PretrainedImageExtractor(tmp_path)
    reference = ViTForImageClassification.from_pretrained(tmp_path).vit.state_dict()
    state = ex.model.state_dict()
    assert set(state) == {k for k in reference if not k.startswith("pooler.")}
    for key, value in state.items():
        torch.testing.assert_close(value, reference[key])


# -- the real checkpoints ------------------------------------------------------------------------------------------
@pytest.mark.hub
@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"), reason="HF_HUB_OFFLINE is set")
@pytest.mark.parametrize("family, dim", [("dinov2", 384), ("resnet", 2048), ("vit", 768)])
def test_real_pretrained_extractors(family, dim):
    ex = PretrainedImageExtractor(PRETRAINED_EXTRACTORS[family])
    assert ex.dim == dim and type(ex.image_processor).__name__.endswith("Pil")
    feats = ex.encode([Image.new("RGBA", (300, 200), (200, 30, 30, 255))])
    assert feats.shape == (1, dim) and np.isfinite(feats).all()
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
