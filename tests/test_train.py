"""train.py end to end: smoke run on tiny configs, resume, and a short real-data integration run."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel

import evaluate
import train
from modeling import DualEncoderModel
from modeling.baselines import colour_histogram_features
from modeling.data import load_catalog
from modeling.metrics import image_to_image_metrics
from modeling.search import encode_images


def _tiny_args(catalog, text_model, output, *extra):
    return ["--catalog", str(catalog), "--output", str(output), "--text-model", str(text_model),
            "--max-train-items", "48", "--max-val-items", "40", "--batch-size", "16",
            "--projection-dim", "16", "--image-size", "20,16", "--cnn-stem-channels", "8",
            "--cnn-channels", "8,16", "--cnn-blocks", "1,1", "--num-threads", "2", *extra]


def test_smoke_run_writes_a_self_contained_model(catalog_dir, tiny_text_model, tmp_path):
    out = tmp_path / "run"
    summary = train.main(_tiny_args(catalog_dir, tiny_text_model, out, "--epochs", "1"))
    assert len(summary["history"]) == 1 and "val" in summary["history"][0]
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "tokenizer.json",
                 "training_curve.png", "training_log.json"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert "site-packages" not in json.dumps(config)  # nothing points outside the folder
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, DualEncoderModel)
    assert set(model.config.attribute_labels) >= {"articleType", "gender"}


def test_resume_continues_from_last_checkpoint(catalog_dir, tiny_text_model, tmp_path):
    out = tmp_path / "run"
    train.main(_tiny_args(catalog_dir, tiny_text_model, out, "--epochs", "1"))
    first = json.loads((out / "training_log.json").read_text())["history"]
    summary = train.main(_tiny_args(catalog_dir, tiny_text_model, out, "--epochs", "2", "--resume"))
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert summary["history"][0] == first[0]  # epoch 1 was not re-run
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_1", "epoch_2"]


def test_exclude_drops_items(catalog_dir, tiny_text_model, tmp_path):
    summary = train.main(_tiny_args(catalog_dir, tiny_text_model, tmp_path / "run", "--epochs", "1",
                                    "--val-split", "", "--exclude", "masterCategory=Apparel"))
    assert summary["train_items"] == 48
    with pytest.raises(SystemExit):
        train.main(_tiny_args(catalog_dir, tiny_text_model, tmp_path / "bad", "--exclude", "nofield=1"))


@pytest.mark.slow
def test_short_real_training_beats_untrained_and_colour_histogram(catalog_dir, tmp_path):
    """About a minute of training on real catalog items must already beat both references on held-out items."""
    out = tmp_path / "real"
    train.main(["--catalog", str(catalog_dir), "--output", str(out), "--max-train-items", "3000",
                "--max-val-items", "100", "--epochs", "8", "--batch-size", "64", "--cnn-channels", "32,64,128,256",
                "--cnn-blocks", "1,1,1,1", "--lr", "3e-3", "--keep-checkpoints", "1", "--num-threads", "2"])
    gallery = load_catalog(catalog_dir, split="test", max_items=500)
    images = gallery["image"]
    labels = {"articleType": np.asarray(gallery["articleType"]), "baseColour": np.asarray(gallery["baseColour"])}
    trained, tokenizer, processor = evaluate.FashionSearchEngine.load_model(out)
    torch.manual_seed(0)
    untrained = DualEncoderModel(trained.config).eval()
    p_trained = image_to_image_metrics(encode_images(trained, processor, images), labels)["p@10"]
    p_untrained = image_to_image_metrics(encode_images(untrained, processor, images), labels)["p@10"]
    p_histogram = image_to_image_metrics(colour_histogram_features(images), labels)["p@10"]
    assert p_trained > p_untrained + 0.05, (p_trained, p_untrained)
    assert p_trained > p_histogram + 0.05, (p_trained, p_histogram)
