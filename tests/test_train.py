"""train.py end to end: smoke run on tiny configs, resume, and a short real-data integration run."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModel

import train
from modeling import DualEncoderImageProcessor, DualEncoderModel
from modeling.evaluation.baselines import colour_histogram_features
from modeling.data.catalog import load_catalog
from modeling.evaluation.tasks import image_to_image_metrics
from modeling.encoders.loading import encode_images, load_model
from modeling.training.augment import contrastive_view, to_pixel_values
from modeling.training.composed import ComposedData
from modeling.training.ema import WeightEMA
from modeling.training.loop import load_splits
from modeling.training.sampler import GroupedShuffleSampler
from modeling.training.tasks import task_class


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


def test_grouped_sampler_yields_every_item_once_in_label_runs():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, -1, -2])  # negative codes: items without a label
    torch.manual_seed(0)
    order = list(GroupedShuffleSampler(labels, group_size=100))
    assert sorted(order) == list(range(len(labels)))
    # Runs longer than any label: each label's items come out together.
    seen = [int(labels[i]) for i in order]
    assert [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]] == sorted(set(seen), key=seen.index)
    # Runs of 2: label 0 (5 items) comes out as runs of 2, 2 and 1, each run contiguous.
    torch.manual_seed(1)
    order = list(GroupedShuffleSampler(labels, group_size=2))
    assert sorted(order) == list(range(len(labels)))
    pairs = sum(labels[a] == labels[b] for a, b in zip(order, order[1:]))
    assert pairs >= 3  # at least the two full runs of label 0 and the one of label 1
    torch.manual_seed(1)
    assert list(GroupedShuffleSampler(labels, group_size=2)) == order  # seeded: a resume repeats it


def test_weight_ema_averages_restores_and_checkpoints():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.5)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 2/11) -> the shadow moves 9/11 of the way
    expected = start + 9 / 11
    torch.testing.assert_close(ema.shadow["0.weight"], expected)
    with ema.applied(model):
        torch.testing.assert_close(model[0].weight, expected)
    torch.testing.assert_close(model[0].weight, start + 1.0)  # restored
    other = WeightEMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.steps == 1 and torch.equal(other.shadow["0.weight"], ema.shadow["0.weight"])
    assert "1.running_mean" in ema.shadow  # BatchNorm statistics are averaged too


def test_ema_and_grouped_batches_run_and_resume(catalog_dir, tiny_text_model, tmp_path):
    out = tmp_path / "run"
    extra = ["--ema-decay", "0.9", "--group-size", "4"]
    train.main(_tiny_args(catalog_dir, tiny_text_model, out, "--epochs", "1", *extra))
    summary = train.main(_tiny_args(catalog_dir, tiny_text_model, out, "--epochs", "2", "--resume", *extra))
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert {"val", "val_raw"} <= set(summary["history"][-1])


def test_supcon_memory_fills_after_warmup_newest_first_and_stays_bounded(catalog_dir, tiny_text_model, tmp_path):
    args = train.parse_args(_tiny_args(catalog_dir, tiny_text_model, tmp_path / "run", "--supcon-memory", "20",
                                       "--supcon-memory-warmup", "2", "--val-split", ""))
    train_ds, _, _ = load_splits(args)
    task = task_class(args).from_args(args, train_ds, None)  # as training_function builds it
    torch.manual_seed(0)
    batches = [torch.arange(i * 8, i * 8 + 8) for i in range(4)]
    for positions in batches[:2]:  # the 2 warm-up steps keep nothing
        task.step(task.model, positions, "cpu")
    assert len(task.memory[0]) == 0
    for positions in batches[2:]:
        task.step(task.model, positions, "cpu")
    embeds, labels = task.memory
    assert embeds.shape == (16, 16) and len(labels) == 16
    torch.testing.assert_close(labels[:8], task.group_labels[batches[3]])  # newest first
    torch.testing.assert_close(labels[8:], task.group_labels[batches[2]])
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(16))
    task.step(task.model, batches[0], "cpu")
    assert len(task.memory[0]) == 20  # bounded: the oldest fell off
    torch.testing.assert_close(task.memory[1][:8], task.group_labels[batches[0]])
    # The memory's positives and negatives enter the loss: same batch and weights, another value.
    task.memory = (task.memory[0][:0], task.memory[1][:0])
    task.steps = 0
    torch.manual_seed(1)
    _, plain = task.step(task.model, batches[1], "cpu")
    task.memory = (embeds, labels)
    torch.manual_seed(1)
    _, with_memory = task.step(task.model, batches[1], "cpu")
    assert not torch.isclose(plain["supcon"], with_memory["supcon"])


def test_vae_training_writes_model_grid_and_curve(catalog_dir, tmp_path):
    out = tmp_path / "vae"
    summary = train.main(["--model", "vae", "--catalog", str(catalog_dir), "--output", str(out),
                          "--max-train-items", "48", "--max-val-items", "40", "--batch-size", "16", "--epochs", "1",
                          "--image-size", "20,16", "--vae-channels", "8,16", "--latent-size", "8", "--beta", "0.5",
                          "--num-threads", "2"])
    assert set(summary["history"][0]["terms"]) == {"reconstruction", "kl"}
    assert "p@10" in summary["history"][0]["val"]
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "reconstructions.png",
                 "training_curve.png"):
        assert (out / name).exists(), name
    model = AutoModel.from_pretrained(out)
    assert model.config.beta == 0.5 and model.config.latent_size == 8


def test_vae_contrastive_training_logs_the_term_and_saves_its_config(catalog_dir, tmp_path):
    out = tmp_path / "vae-nce"
    summary = train.main(["--model", "vae", "--catalog", str(catalog_dir), "--output", str(out),
                          "--max-train-items", "48", "--max-val-items", "40", "--batch-size", "16", "--epochs", "1",
                          "--image-size", "20,16", "--vae-channels", "8,16", "--latent-size", "8",
                          "--vae-contrastive-weight", "50", "--vae-temperature", "0.2", "--num-threads", "2"])
    terms = summary["history"][0]["terms"]
    assert set(terms) == {"reconstruction", "kl", "contrastive"}
    # 16 images, two views each: the NT-Xent of an untrained encoder sits near log(31).
    assert 0.5 < terms["contrastive"] < 2 * math.log(31)
    config = AutoModel.from_pretrained(out).config
    assert config.contrastive_weight == 50 and config.contrastive_temperature == 0.2


def test_contrastive_view_is_a_normalised_augmented_copy():
    processor = DualEncoderImageProcessor(image_size=[80, 64])
    images = torch.full((6, 80, 64, 3), 255, dtype=torch.uint8)
    images[:, 20:60, 16:48] = torch.tensor([200, 30, 30], dtype=torch.uint8)  # a red block on white
    torch.manual_seed(0)
    first = contrastive_view(images, processor)
    torch.manual_seed(0)
    assert torch.equal(first, contrastive_view(images, processor))  # reproducible under the run's seed
    second = contrastive_view(images, processor)
    assert first.shape == (6, 3, 80, 64) and torch.isfinite(first).all()
    assert not torch.allclose(first, second)
    plain = to_pixel_values(images, processor)
    assert not torch.allclose(first, plain)
    # Un-normalised, every view stays an image in [0, 1].
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    pixels = first * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_composed_stage_trains_only_the_combiner(catalog_dir, tiny_text_model, tmp_path):
    base = tmp_path / "base"
    train.main(_tiny_args(catalog_dir, tiny_text_model, base, "--epochs", "1", "--max-train-items", "300",
                          "--val-split", ""))
    out = tmp_path / "composed"
    summary = train.main(["--stage", "composed", "--init-from", str(base), "--catalog", str(catalog_dir),
                          "--output", str(out), "--max-train-items", "300", "--max-val-items", "200", "--epochs", "2",
                          "--batch-size", "32", "--combiner-hidden-size", "16", "--num-threads", "2"])
    assert {"r@10", "exact_r@10", "sum_r@10"} <= set(summary["history"][-1]["val"])
    before, after = AutoModel.from_pretrained(base), AutoModel.from_pretrained(out)
    assert before.combiner is None and after.config.combiner_hidden_size == 16
    for name, tensor in before.state_dict().items():
        torch.testing.assert_close(after.state_dict()[name], tensor, msg=name)  # nothing else moved
    image, text = torch.randn(3, 16), torch.randn(3, 16)
    composed = after.get_composed_features(image_embeds=image, text_embeds=text)  # the combiner by default
    assert composed.shape == (3, 16)
    assert not torch.allclose(composed, after.get_composed_features(image_embeds=image, text_embeds=text,
                                                                     method="sum"))


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
    trained, tokenizer, processor = load_model(out)
    torch.manual_seed(0)
    untrained = DualEncoderModel(trained.config).eval()
    p_trained = image_to_image_metrics(encode_images(trained, processor, images), labels)["p@10"]
    p_untrained = image_to_image_metrics(encode_images(untrained, processor, images), labels)["p@10"]
    p_histogram = image_to_image_metrics(colour_histogram_features(images), labels)["p@10"]
    assert p_trained > p_untrained + 0.05, (p_trained, p_untrained)
    assert p_trained > p_histogram + 0.05, (p_trained, p_histogram)


def test_composed_training_relevance_matches_the_evaluation_definition(tiny_model_dir, small_gallery):
    from transformers import AutoImageProcessor, AutoTokenizer

    from modeling.data.composed import composed_relevance_matrix

    model = AutoModel.from_pretrained(tiny_model_dir).eval()
    data = ComposedData(model, AutoTokenizer.from_pretrained(tiny_model_dir),
                        AutoImageProcessor.from_pretrained(tiny_model_dir), small_gallery,
                        ("baseColour", "usage"), seed=0, desc="val")
    expected, _ = composed_relevance_matrix(small_gallery, data.triplets)
    np.testing.assert_array_equal(data.relevance(torch.arange(len(data))).numpy(), expected)
    assert data.gallery.shape == (len(small_gallery), 16)


@pytest.mark.slow
def test_push_to_hub_dry_run_evaluates_and_writes_the_folder(catalog_dir, tmp_path):
    out, folder = tmp_path / "vae", tmp_path / "upload"
    summary = train.main(["--model", "vae", "--catalog", str(catalog_dir), "--output", str(out),
                          "--max-train-items", "48", "--val-split", "", "--batch-size", "16", "--epochs", "1",
                          "--image-size", "20,16", "--vae-channels", "8,16", "--latent-size", "8",
                          "--num-threads", "2", "--push-to-hub", "me/tiny-vae", "--push-dry-run", str(folder)])
    results = json.loads((out / "eval-hub" / "results.json").read_text())
    assert results["gallery"]["split"] == "test" and results["gallery"]["items"] > 1000
    card = (folder / "README.md").read_text()
    assert "me/tiny-vae" in card and f"{results['rows'][0]['i2i']['p@10']:.3f}" in card
    assert summary["hub"]["remote_code"] <= 1e-6 and (folder / "modeling_fashion_vae.py").exists()
