"""FashionVaeModel on tiny random configs: shapes, β-VAE loss, determinism, save/load round trips, Auto classes,
training smoke test and the reconstruction grid."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from modeling import DualEncoderImageProcessor, FashionVaeConfig, FashionVaeModel, reconstruction_grid
from modeling.models.losses import nt_xent_loss


class FashionVaeModelTester:
    batch_size = 4

    def __init__(self, **overrides):
        kwargs = {"image_size": [20, 16], "hidden_channels": [8, 16], "latent_size": 4}
        self.config = FashionVaeConfig(**{**kwargs, **overrides})

    def inputs(self, seed=0):
        """Normalised pixel values of images in [0, 1], like the processor's output."""
        g = torch.Generator().manual_seed(seed)
        images = torch.rand(self.batch_size, 3, *self.config.image_size, generator=g)
        mean = torch.tensor(self.config.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.config.image_std).view(1, 3, 1, 1)
        return (images - mean) / std, images


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "image_size,hidden_channels,norm",
    [([20, 16], [8, 16], "batch"), ([21, 15], [8, 16, 16], "group"), ([80, 64], [8, 8, 8, 8], "batch")],
)
def test_shapes_match_any_image_size(image_size, hidden_channels, norm):
    tester = FashionVaeModelTester(image_size=image_size, hidden_channels=hidden_channels, norm=norm)
    model = FashionVaeModel(tester.config).eval()
    pixel_values, _ = tester.inputs()
    out = model(pixel_values)
    assert out.loss is None and out.reconstruction_loss is None and out.kl_loss is None
    assert out.reconstructions.shape == (4, 3, *image_size)
    assert out.latent_mean.shape == out.latent_logvar.shape == (4, 4)
    mean, logvar = model.encode(pixel_values)
    torch.testing.assert_close(mean, out.latent_mean)
    torch.testing.assert_close(logvar, out.latent_logvar)
    decoded = model.decode(torch.randn(2, 4))
    assert decoded.shape == (2, 3, *image_size)
    assert decoded.min() >= 0 and decoded.max() <= 1
    features = model.get_image_features(pixel_values)
    torch.testing.assert_close(features, mean)  # the latent mean, not L2-normalised
    assert not torch.allclose(features.norm(dim=-1), torch.ones(4))


@pytest.mark.parametrize("kind", ["bce", "mse"])
def test_loss_is_reconstruction_plus_beta_kl(kind):
    tester = FashionVaeModelTester(beta=0.5, reconstruction_loss=kind)
    model = FashionVaeModel(tester.config).eval()  # eval: the decoder sees the mean, so the loss is reproducible
    pixel_values, images = tester.inputs()
    out = model(pixel_values, return_loss=True)
    recon = out.reconstructions
    if kind == "bce":
        per_pixel = F.binary_cross_entropy(recon, images, reduction="none")
    else:
        per_pixel = (recon - images) ** 2
    expected_recon = per_pixel.sum(dim=(1, 2, 3)).mean()
    mu, logvar = out.latent_mean, out.latent_logvar
    expected_kl = (0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)).mean()
    torch.testing.assert_close(out.reconstruction_loss, expected_recon, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out.kl_loss, expected_kl)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.5 * out.kl_loss)
    assert out.kl_loss > 0


def test_contrastive_term_is_weighted_nt_xent_of_the_two_views_latent_means():
    tester = FashionVaeModelTester(beta=0.5, contrastive_weight=3.0, contrastive_temperature=0.5)
    model = FashionVaeModel(tester.config).eval()
    pixel_values, _ = tester.inputs(seed=0)
    other, _ = tester.inputs(seed=1)
    plain = model(pixel_values, return_loss=True)
    assert plain.contrastive_loss is None  # no second view: the plain VAE objective
    out = model(pixel_values, return_loss=True, augmented_pixel_values=other)
    expected = nt_xent_loss(model.encode(pixel_values)[0], model.encode(other)[0], temperature=0.5)
    torch.testing.assert_close(out.contrastive_loss, expected)
    torch.testing.assert_close(out.loss, plain.loss + 3.0 * expected)
    # Weight 0 ignores a second view entirely.
    off = FashionVaeModel(FashionVaeModelTester(beta=0.5).config).eval()
    off.load_state_dict(model.state_dict())
    torch.testing.assert_close(off(pixel_values, return_loss=True, augmented_pixel_values=other).loss, plain.loss)


def test_nt_xent_matches_a_brute_force_reference():
    torch.manual_seed(3)
    a, b, t = torch.randn(5, 7), torch.randn(5, 7), 0.3
    z = F.normalize(torch.cat([a, b]), dim=-1)
    total = 0.0
    for i in range(10):
        positive = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        denominator = sum(torch.exp(z[i] @ z[j] / t) for j in others)
        total += -torch.log(torch.exp(z[i] @ z[positive] / t) / denominator)
    torch.testing.assert_close(nt_xent_loss(a, b, t), total / 10)
    # Identical, well-separated views are easy; swapping partners makes it hard.
    separated = torch.eye(5, 7) * 10
    assert nt_xent_loss(separated, separated, 0.1) < 1e-3
    assert nt_xent_loss(separated, separated.roll(1, dims=0), 0.1) > 5


def test_training_samples_and_eval_uses_the_mean():
    tester = FashionVaeModelTester(beta=1.0)
    model = FashionVaeModel(tester.config)
    pixel_values, _ = tester.inputs()
    model.eval()
    a, b = model(pixel_values), model(pixel_values)
    torch.testing.assert_close(a.reconstructions, b.reconstructions)
    torch.testing.assert_close(a.reconstructions, model.decode(a.latent_mean))
    torch.testing.assert_close(model.get_image_features(pixel_values), model.get_image_features(pixel_values))
    model.train()
    c, d = model(pixel_values), model(pixel_values)
    assert not torch.allclose(c.reconstructions, d.reconstructions)  # reparameterised samples differ


def test_beta_zero_is_a_deterministic_autoencoder():
    tester = FashionVaeModelTester(beta=0.0)
    model = FashionVaeModel(tester.config).train()
    pixel_values, _ = tester.inputs()
    a, b = model(pixel_values, return_loss=True), model(pixel_values, return_loss=True)
    torch.testing.assert_close(a.reconstructions, b.reconstructions)  # no sampling noise in training
    torch.testing.assert_close(a.loss, a.reconstruction_loss)  # the KL is reported but not added
    assert a.kl_loss > 0
    a.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoder.fc_logvar.parameters())
    with torch.no_grad():
        train_latent = model(pixel_values).latent_mean
        model.eval()
        torch.testing.assert_close(model(pixel_values).latent_mean, model.get_image_features(pixel_values))
    assert train_latent.shape == (4, 4)


def test_save_pretrained_round_trip_and_auto_classes(tmp_path):
    tester = FashionVaeModelTester(beta=0.25, reconstruction_loss="mse")
    model = FashionVaeModel(tester.config)
    pixel_values, _ = tester.inputs()
    model.train()(pixel_values)  # move the BatchNorm running statistics away from their init
    model.eval().save_pretrained(tmp_path)
    DualEncoderImageProcessor(image_size=tester.config.image_size).save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pkl", ".pt")) for f in files)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "fashion_vae" and saved["beta"] == 0.25

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, FashionVaeConfig) and config.image_size == [20, 16]
    for reloaded in (FashionVaeModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(reloaded, FashionVaeModel)
        reloaded.eval()
        torch.testing.assert_close(reloaded.get_image_features(pixel_values), model.get_image_features(pixel_values))
        torch.testing.assert_close(reloaded(pixel_values).reconstructions, model(pixel_values).reconstructions)
        torch.testing.assert_close(reloaded.image_mean, model.image_mean)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, DualEncoderImageProcessor) and processor.image_size == [20, 16]


@pytest.mark.parametrize("kind", ["bce", "mse"])
def test_a_few_optimizer_steps_reduce_the_loss(kind):
    tester = FashionVaeModelTester(reconstruction_loss=kind, beta=0.1)
    model = FashionVaeModel(tester.config).train()
    # Smooth images (upsampled 5x4 colour noise) rather than pixel noise: something an autoencoder can learn.
    images = F.interpolate(torch.rand(4, 3, 5, 4), size=tester.config.image_size, mode="bilinear")
    mean = torch.tensor(tester.config.image_mean).view(1, 3, 1, 1)
    pixel_values = (images - mean) / torch.tensor(tester.config.image_std).view(1, 3, 1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(pixel_values, return_loss=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # BCE against soft targets cannot go below the targets' entropy: compare the excess over that floor.
    floor = F.binary_cross_entropy(images, images, reduction="sum").item() / 4 if kind == "bce" else 0.0
    assert sum(losses[-5:]) / 5 - floor < 0.7 * (losses[0] - floor), (floor, losses)


def test_reconstruction_grid_writes_a_png(tmp_path):
    tester = FashionVaeModelTester()
    model = FashionVaeModel(tester.config).train()
    pixel_values, _ = tester.inputs()
    path = tmp_path / "grid" / "reconstructions.png"
    image = reconstruction_grid(model, pixel_values, path, n=3, scale=2, padding=2)
    assert model.training  # mode restored
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == image.size == ((3 * (16 + 2) + 2) * 2, (2 * (20 + 2) + 2) * 2)
    # Raw images go through the processor; n larger than the batch is capped.
    processor = DualEncoderImageProcessor(image_size=[20, 16])
    raw = [Image.new("RGB", (60, 80), (200, 30, 30)), Image.new("L", (50, 50), 90)]
    reconstruction_grid(model, raw, tmp_path / "raw.png", processor=processor, scale=1)
    with Image.open(tmp_path / "raw.png") as png:
        assert png.size == (2 * 18 + 2, 2 * 22 + 2)
        assert png.getpixel((2, 2)) == (200, 30, 30)  # the first original, de-normalised


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        FashionVaeConfig(reconstruction_loss="l1")
    with pytest.raises(ValueError):
        FashionVaeConfig(beta=-1.0)
    with pytest.raises(ValueError):
        FashionVaeConfig(image_size=[80])
    with pytest.raises(ValueError):
        FashionVaeConfig(contrastive_temperature=0.0)
    with pytest.raises(ValueError):
        FashionVaeConfig(contrastive_weight=-1.0)
    config = FashionVaeConfig()
    assert config.image_size == [80, 64] and config.latent_size == 64 and config.beta == 1.0


def test_luminance_mode_reconstructs_grey_and_ignores_hue():
    tester = FashionVaeModelTester(input_mode="luminance")
    model = FashionVaeModel(tester.config).eval()
    pixel_values, images = tester.inputs()
    out = model(pixel_values, return_loss=True)
    assert out.reconstructions.shape == (tester.batch_size, 1, *tester.config.image_size)
    # The same luminance in colour and in grey gives the same latent.
    luminance = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    mean = torch.tensor(tester.config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(tester.config.image_std).view(1, 3, 1, 1)
    grey = (luminance.expand(-1, 3, -1, -1) - mean) / std
    torch.testing.assert_close(model.get_image_features(grey), model.get_image_features(pixel_values),
                               atol=1e-4, rtol=1e-4)
    expected = F.binary_cross_entropy_with_logits(model.decoder(out.latent_mean), luminance, reduction="none")
    torch.testing.assert_close(out.reconstruction_loss, expected.flatten(1).sum(1).mean(),
                               atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="input_mode"):
        FashionVaeConfig(input_mode="hsv")
