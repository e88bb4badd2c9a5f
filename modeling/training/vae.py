"""The VAE task: the unsupervised model, trained on the images alone."""

from __future__ import annotations

from pathlib import Path

import torch

from modeling.models import DualEncoderImageProcessor, FashionVaeConfig, FashionVaeModel
from modeling.models.vae_utils import reconstruction_grid
from modeling.training.augment import augment, contrastive_view, preload_images, to_pixel_values
from modeling.training.base import Task, add_shared_argument, int_list
from modeling.training.common import retrieval_validation, validation_labels


class VaeTask(Task):
    """Convolutional VAE, trained on the images alone (no labels): reconstruction + beta * KL (+ the label-free
    NT-Xent between two augmented views when --vae-contrastive-weight > 0). Saving also writes a reconstruction
    grid."""

    name = "vae"
    epochs, batch_size, lr, weight_decay = 30, 64, 1e-3, 0.0
    val_keys = ("p@10", "top1", "p@10_colour")

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("vae")
        add_shared_argument(g, "--image-size")
        g.add_argument("--latent-size", type=int, default=64)
        g.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (0 = plain autoencoder)")
        g.add_argument("--vae-channels", default=None, help="encoder channels, e.g. 32,64,128,256 (default: config's)")
        g.add_argument("--vae-input", choices=["rgb", "luminance"], default="rgb",
                       help="encode and reconstruct the colour image or its luminance only")
        g.add_argument("--vae-contrastive-weight", type=float, default=0.0,
                       help="weight of the label-free NT-Xent term between the latent means of two augmented views "
                            "of each image (0 = the plain VAE objective)")
        g.add_argument("--vae-temperature", type=float, default=0.1, help="temperature of that NT-Xent term")
        g.add_argument("--vae-views", choices=["strong", "mild"], default="strong",
                       help="second view of that term: SimCLR-style crops and recolouring, or the mild training "
                            "augmentation (flips, small shifts, light jitter)")

    def __init__(self, settings, train_ds, val_ds=None):
        super().__init__(settings)
        s = settings
        self.processor = DualEncoderImageProcessor(image_size=int_list(s.image_size))
        kwargs = {"image_size": int_list(s.image_size), "latent_size": s.latent_size, "beta": s.beta,
                  "input_mode": s.vae_input, "contrastive_weight": s.vae_contrastive_weight,
                  "contrastive_temperature": s.vae_temperature,
                  "image_mean": list(self.processor.image_mean), "image_std": list(self.processor.image_std)}
        if s.vae_channels:
            kwargs["hidden_channels"] = int_list(s.vae_channels)
        self.model = FashionVaeModel(FashionVaeConfig(**kwargs))
        self.images = preload_images(train_ds, self.processor, "loading training images")
        self.num_examples = len(train_ds)
        self.second_view = contrastive_view if s.vae_views == "strong" else augment
        if val_ds is not None:
            self.val = {"images": preload_images(val_ds, self.processor, "loading validation images"),
                        "labels": validation_labels(val_ds)}

    def step(self, model, positions: torch.Tensor, device):
        images = self.images[positions]
        if self.model.config.contrastive_weight > 0:
            out = model(pixel_values=augment(images, self.processor).to(device),
                        augmented_pixel_values=self.second_view(images, self.processor).to(device),
                        return_loss=True)
            return out.loss, {"reconstruction": out.reconstruction_loss, "kl": out.kl_loss,
                              "contrastive": out.contrastive_loss}
        flip = torch.rand(len(images)) < 0.5
        images[flip] = images[flip].flip(2)  # (B, H, W, 3): mirror the width
        out = model(pixel_values=to_pixel_values(images, self.processor).to(device), return_loss=True)
        return out.loss, {"reconstruction": out.reconstruction_loss, "kl": out.kl_loss}

    @torch.inference_mode()
    def validate(self, model, batch_size: int = 256) -> dict:
        images = self.val["images"]
        embeds = torch.cat([model.get_image_features(to_pixel_values(images[i:i + batch_size], self.processor))
                            for i in range(0, len(images), batch_size)]).numpy()
        return retrieval_validation(embeds, self.val["labels"])

    def save(self, model, output: Path) -> None:
        model.save_pretrained(output, safe_serialization=True)
        self.processor.save_pretrained(output)
        sample = (self.val or {"images": self.images})["images"][:8]
        model.eval()
        reconstruction_grid(model, to_pixel_values(sample, self.processor), output / "reconstructions.png")


__all__ = ["VaeTask"]
