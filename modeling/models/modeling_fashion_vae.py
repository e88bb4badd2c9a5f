"""Convolutional β-VAE for product photos: the unsupervised image model.

Stride-2 convolutions encode a letterboxed photo into the mean and log-variance of a diagonal Gaussian; transposed
convolutions decode a latent back to the photo. The latent mean is the image feature used for search.

Imports only its own configuration and `losses.py` (plus transformers/torch) so the file can travel to the Hub and
load with `trust_remote_code`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_fashion_vae import FashionVaeConfig
from .losses import nt_xent_loss


@dataclass
class FashionVaeOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        `reconstruction_loss + config.beta * kl_loss`, plus `config.contrastive_weight * contrastive_loss` when a
        second view was given.
    reconstruction_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        Per-image sum over pixels and channels of the BCE or squared error against the [0, 1] image, averaged
        over the batch.
    kl_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        Per-image `KL(q(z|x) || N(0, I))` summed over latent dimensions, averaged over the batch.
    reconstructions (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
        Decoded images in [0, 1] (not normalised), from a sampled latent in training (β > 0), the mean otherwise.
    latent_mean (`torch.FloatTensor` of shape `(batch_size, latent_size)`): mean of q(z|x).
    latent_logvar (`torch.FloatTensor` of shape `(batch_size, latent_size)`): log-variance of q(z|x).
    contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*): NT-Xent between the latent means of
        `pixel_values` and `augmented_pixel_values` (returned with the loss when the second view is given).
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    reconstructions: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent dimensions, averaged over the batch."""
    return -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(dim=-1).mean()


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Per-image sum of BCE (on decoder logits, numerically stable) or squared error, averaged over the batch."""
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        per_pixel = (torch.sigmoid(logits) - target).pow(2)
    return per_pixel.flatten(1).sum(dim=1).mean()


def _norm(config: FashionVaeConfig, channels: int) -> nn.Module:
    if config.norm == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.BatchNorm2d(channels)


def _conv_sizes(size: int, layers: int) -> list[int]:
    """Spatial sizes through `layers` 3x3 stride-2 padding-1 convolutions: every one gives ceil(n / 2)."""
    sizes = [size]
    for _ in range(layers):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


class FashionVaeEncoder(nn.Module):
    """Stride-2 3x3 convolutions + norm + LeakyReLU, flattened into the mean and log-variance heads."""

    def __init__(self, config: FashionVaeConfig):
        super().__init__()
        layers, in_channels = [], config.model_channels
        for channels in config.hidden_channels:
            layers += [nn.Conv2d(in_channels, channels, 3, 2, 1, bias=False), _norm(config, channels),
                       nn.LeakyReLU(0.2, inplace=True)]
            in_channels = channels
        self.convs = nn.Sequential(*layers)
        height = _conv_sizes(config.image_size[0], len(config.hidden_channels))[-1]
        width = _conv_sizes(config.image_size[1], len(config.hidden_channels))[-1]
        flat = in_channels * height * width
        self.fc_mu = nn.Linear(flat, config.latent_size)
        self.fc_logvar = nn.Linear(flat, config.latent_size)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.convs(pixel_values).flatten(1)
        # The clamp keeps exp(logvar) finite early in training, when the heads can output anything.
        return self.fc_mu(hidden), self.fc_logvar(hidden).clamp(-30.0, 20.0)


class FashionVaeDecoder(nn.Module):
    """Mirror of the encoder: 4x4 stride-2 transposed convolutions (kernel divisible by the stride: even
    overlap, milder checkerboard), each followed by a crop back to the encoder's size at that level, which makes the output
    exactly (height, width) for odd sizes too. Returns logits; `sigmoid` gives the image."""

    def __init__(self, config: FashionVaeConfig):
        super().__init__()
        channels = list(config.hidden_channels)
        depth = len(channels)
        self.heights = _conv_sizes(config.image_size[0], depth)[::-1]  # smallest first
        self.widths = _conv_sizes(config.image_size[1], depth)[::-1]
        self.start_shape = (channels[-1], self.heights[0], self.widths[0])
        self.fc = nn.Linear(config.latent_size, channels[-1] * self.heights[0] * self.widths[0])
        self.blocks = nn.ModuleList()
        for index in range(depth):
            in_channels = channels[depth - 1 - index]
            if index < depth - 1:
                out_channels = channels[depth - 2 - index]
                self.blocks.append(nn.Sequential(
                    nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False), _norm(config, out_channels),
                    nn.LeakyReLU(0.2, inplace=True),
                ))
            else:
                self.blocks.append(nn.ConvTranspose2d(in_channels, config.model_channels, 4, 2, 1))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = F.leaky_relu(self.fc(latents), 0.2).view(-1, *self.start_shape)
        for block, height, width in zip(self.blocks, self.heights[1:], self.widths[1:]):
            hidden = block(hidden)[:, :, :height, :width]
        return hidden


class FashionVaePreTrainedModel(PreTrainedModel):
    config_class = FashionVaeConfig
    config: FashionVaeConfig
    base_model_prefix = "fashion_vae"
    input_modalities = ("image",)
    main_input_name = "pixel_values"

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            init.kaiming_normal_(module.weight, a=0.2, mode="fan_out", nonlinearity="leaky_relu")
        elif isinstance(module, FashionVaeModel):
            # Non-persistent buffers are never loaded from a checkpoint: rebuilt from the config here.
            init.copy_(module.image_mean, torch.tensor(self.config.image_mean).view(1, -1, 1, 1))
            init.copy_(module.image_std, torch.tensor(self.config.image_std).view(1, -1, 1, 1))


class FashionVaeModel(FashionVaePreTrainedModel):
    def __init__(self, config: FashionVaeConfig):
        super().__init__(config)
        self.encoder = FashionVaeEncoder(config)
        self.decoder = FashionVaeDecoder(config)
        # Normalisation of the processor, undone to get the [0, 1] reconstruction target.
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, -1, 1, 1), persistent=False)
        self.post_init()

    def to_unit_range(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised `pixel_values` -> images in [0, 1] (the reconstruction target; grey in luminance mode)."""
        images = (pixel_values * self.image_std + self.image_mean).clamp(0.0, 1.0)
        if self.config.input_mode == "luminance" and images.shape[1] == 3:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
            images = (images * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
        return images

    def encoder_inputs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What the encoder reads: `pixel_values` as given, or their luminance standardised like the catalog."""
        if self.config.input_mode == "luminance":
            return (self.to_unit_range(pixel_values) - self.image_mean.mean()) / self.image_std.mean()
        return pixel_values

    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised `pixel_values` `(batch, channels, height, width)` -> (mean, logvar), each
        `(batch, latent_size)`."""
        return self.encoder(self.encoder_inputs(pixel_values))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `(batch, latent_size)` -> images in [0, 1] `(batch, channels, height, width)`."""
        return torch.sigmoid(self.decoder(latents))

    def sample_latents(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Reparameterisation trick in training with β > 0; the mean otherwise (eval, or a plain autoencoder)."""
        if not self.training or self.config.beta == 0:
            return mean
        return mean + torch.randn_like(mean) * (0.5 * logvar).exp()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.FloatTensor:
        """Latent means `(batch, latent_size)`, unnormalised: the image features for cosine search.

        Deterministic (no sampling) in any mode. Measured on the catalog: they retrieve better than the flattened
        or pooled encoder features, and standardising them (gallery mean / per-dimension std) or PCA-whitening
        them before the cosine did not help, at any β tried (0 to 1).
        """
        mean, _ = self.encode(pixel_values)
        return mean

    def forward(self, pixel_values: torch.Tensor, return_loss: bool | None = None,
                augmented_pixel_values: torch.Tensor | None = None, **kwargs) -> FashionVaeOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, channels, height, width)`):
            Images normalised with `config.image_mean` / `config.image_std` (what the image processor returns).
        return_loss (`bool`, *optional*): also compute `loss = reconstruction_loss + config.beta * kl_loss`.
        augmented_pixel_values (`torch.FloatTensor`, *optional*, same shape as `pixel_values`):
            A second augmented view of the same images, in the same order. With `return_loss` and
            `config.contrastive_weight > 0`, adds `contrastive_weight * NT-Xent(mean(view 1), mean(view 2))`.
            Only `pixel_values` is reconstructed.
        """
        mean, logvar = self.encode(pixel_values)
        logits = self.decoder(self.sample_latents(mean, logvar))
        loss = recon = kl = contrastive = None
        if return_loss:
            recon = reconstruction_loss(logits, self.to_unit_range(pixel_values), self.config.reconstruction_loss)
            kl = kl_divergence(mean, logvar)
            loss = recon + self.config.beta * kl if self.config.beta > 0 else recon
            if augmented_pixel_values is not None and self.config.contrastive_weight > 0:
                other_mean, _ = self.encode(augmented_pixel_values)
                contrastive = nt_xent_loss(mean, other_mean, self.config.contrastive_temperature)
                loss = loss + self.config.contrastive_weight * contrastive
        return FashionVaeOutput(
            loss=loss,
            reconstruction_loss=recon,
            kl_loss=kl,
            reconstructions=torch.sigmoid(logits),
            latent_mean=mean,
            latent_logvar=logvar,
            contrastive_loss=contrastive,
        )


__all__ = [
    "FashionVaeModel",
    "FashionVaeOutput",
    "FashionVaePreTrainedModel",
    "kl_divergence",
    "reconstruction_loss",
]
