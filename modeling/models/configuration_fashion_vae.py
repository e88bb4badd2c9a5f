"""Configuration of the convolutional (β-)VAE, the unsupervised image model."""

from __future__ import annotations

from transformers import PreTrainedConfig

# Same values as `image_processing_dual_encoder.CATALOG_MEAN/STD` (kept literal here so that the modeling file
# needs nothing but its own configuration, transformers and torch).
_CATALOG_MEAN = [0.865, 0.846, 0.840]
_CATALOG_STD = [0.253, 0.261, 0.263]


class FashionVaeConfig(PreTrainedConfig):
    r"""
    Configuration of [`FashionVaeModel`]: a convolutional variational autoencoder (Kingma & Welling, 2014) with
    the β-weighted KL term of β-VAE (Higgins et al., 2017). Trained without labels; its latent means are the
    image features used for image→image search.

    Args:
        image_size (`list[int]`, *optional*, defaults to `[80, 64]`):
            Input and reconstruction (height, width): the catalog's 60x80 photos letterboxed by
            [`DualEncoderImageProcessor`]. Any size works; the decoder is built to give it back exactly.
        num_channels (`int`, *optional*, defaults to 3): image channels.
        latent_size (`int`, *optional*, defaults to 64): dimension of the latent space.
        hidden_channels (`list[int]`, *optional*, defaults to `[32, 64, 128, 256]`):
            Channels of the encoder's stride-2 convolutions (every one halves the resolution, rounding up);
            the decoder mirrors them with transposed convolutions.
        norm (`str`, *optional*, defaults to `"batch"`): `"batch"` (BatchNorm) or `"group"` (GroupNorm, batch-size
            independent) after every convolution but the decoder's last.
        beta (`float`, *optional*, defaults to 1.0):
            Weight β of the KL term: `loss = reconstruction + β · KL`, both summed over an image's pixels /
            latent dimensions and averaged over the batch (the negative ELBO when β = 1). β < 1 trades prior
            matching for sharper reconstructions; β = 0 is a plain (deterministic) autoencoder: no sampling
            noise, the latent is the mean, the KL is still reported but not added. On the catalog β = 1, 0.1 and
            0 retrieved alike (test P@10 0.489 / 0.483 / 0.493 after 3 minutes of training).
        reconstruction_loss (`str`, *optional*, defaults to `"bce"`):
            `"bce"`: Bernoulli likelihood, binary cross-entropy of the decoder's logits against the [0, 1] image,
            the original β-VAE choice, so β = 1 is the true negative ELBO in nats per image. Default because its
            gradient on the logits, `p - x`, stays strong near 0 and 1: the catalog's white backgrounds come out
            clean, where MSE (gradient `2 (p - x) p (1 - p)`, vanishing as p saturates) leaves a grey haze;
            retrieval was on par (test P@10 0.489 for BCE at β = 1, 0.478 for MSE at β = 0.1). The BCE minimum is
            the targets' entropy, not 0. `"mse"`: per-image sum of squared errors, a fixed-variance Gaussian
            likelihood up to scale, so β's meaning depends on that assumed variance.
        image_mean (`list[float]`, *optional*, defaults to the catalog mean `[0.865, 0.846, 0.840]`):
        image_std (`list[float]`, *optional*, defaults to the catalog std `[0.253, 0.261, 0.263]`):
            The image processor's normalisation, undone inside the model to get the [0, 1] reconstruction target
            from normalised `pixel_values`.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the linear layers' init.
        input_mode (`str`, *optional*, defaults to `"rgb"`):
            `"rgb"` encodes and reconstructs the colour image; `"luminance"` encodes and reconstructs its luminance
            (Rec. 601 grey) only, so the latent spends nothing on hue: items of one type in different colours
            land closer together, at the cost of colour similarity.
        contrastive_weight (`float`, *optional*, defaults to 0.0):
            Weight of a label-free augmentation-invariance term added to the loss when the model is given a second
            augmented view of every image (`augmented_pixel_values`): NT-Xent (SimCLR) between the two views'
            latent means, scaled by this weight against the per-image-summed reconstruction term. The VAE stays
            unsupervised (two views of one photo are the only positives) but its latent means are pushed to
            agree across crops, shifts and recolourings, which is what image search needs from them. 0 disables
            it: the plain (β-)VAE objective.
        contrastive_temperature (`float`, *optional*, defaults to 0.1): temperature of that NT-Xent term.
    """

    model_type = "fashion_vae"

    image_size: list[int] | None = None
    num_channels: int = 3
    latent_size: int = 64
    hidden_channels: list[int] | None = None
    norm: str = "batch"
    beta: float = 1.0
    reconstruction_loss: str = "bce"
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    initializer_range: float = 0.02
    input_mode: str = "rgb"
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1

    def __post_init__(self, **kwargs):
        # Mutable defaults are filled here rather than as dataclass defaults, so configs never share a list.
        if self.image_size is None:
            self.image_size = [80, 64]
        if self.hidden_channels is None:
            self.hidden_channels = [32, 64, 128, 256]
        if self.image_mean is None:
            self.image_mean = list(_CATALOG_MEAN)
        if self.image_std is None:
            self.image_std = list(_CATALOG_STD)
        self.image_size = [int(s) for s in self.image_size]
        self.hidden_channels = [int(c) for c in self.hidden_channels]
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size is (height, width), got {self.image_size!r}")
        if not self.hidden_channels or min(self.hidden_channels) < 1:
            raise ValueError(f"hidden_channels must be a non-empty list of positive ints, got {self.hidden_channels!r}")
        if self.latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {self.latent_size}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.reconstruction_loss not in ("mse", "bce"):
            raise ValueError(f"reconstruction_loss must be 'mse' or 'bce', got {self.reconstruction_loss!r}")
        if self.input_mode not in ("rgb", "luminance"):
            raise ValueError(f"input_mode must be 'rgb' or 'luminance', got {self.input_mode!r}")
        if self.contrastive_weight < 0 or self.contrastive_temperature <= 0:
            raise ValueError("contrastive_weight must be >= 0 and contrastive_temperature > 0, got "
                             f"{self.contrastive_weight} and {self.contrastive_temperature}")
        if self.norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError("image_mean and image_std need one value per channel")
        super().__post_init__(**kwargs)

    @property
    def model_channels(self) -> int:
        """Channels the encoder reads and the decoder writes (1 in luminance mode)."""
        return 1 if self.input_mode == "luminance" else self.num_channels


__all__ = ["FashionVaeConfig"]
