"""Image augmentation of the preloaded catalog: training views of uint8 `(B, H, W, 3)` batches.

Every function draws from torch's global RNG, which the loop seeds per epoch, so a resumed run repeats them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling.models.image_processing_dual_encoder import DualEncoderImageProcessor


def preload_images(dataset, processor: DualEncoderImageProcessor, desc: str) -> torch.Tensor:
    """All images letterboxed once into a (N, H, W, 3) uint8 tensor: the catalog is small, decoding is not free."""
    images = dataset.select_columns(["image"])
    arrays = [processor.resize_and_pad(row["image"]) for row in tqdm(images, desc=desc, unit="img")]
    return torch.from_numpy(np.stack(arrays))


def augment(images: torch.Tensor, processor: DualEncoderImageProcessor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W) with flips, small shifts/zooms and light
    brightness/contrast jitter. Hue is left alone: colour is what shoppers search by."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    b = x.shape[0]
    flip = torch.rand(b) < 0.5
    x[flip] = x[flip].flip(-1)
    scale = torch.empty(b).uniform_(0.9, 1.1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = torch.empty(b, 2).uniform_(-0.08, 0.08)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Pad with white (the catalog's background): sample 1 - x padded with zeros.
    x = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness = torch.empty(b, 1, 1, 1).uniform_(-0.08, 0.08)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.9, 1.1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp(0, 1)
    m = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    s = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (x - m) / s


def contrastive_view(images: torch.Tensor, processor: DualEncoderImageProcessor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> a strongly augmented normalised view (B, 3, H, W) for the VAE's label-free NT-Xent
    term (SimCLR's recipe scaled to 80x64 product photos): random resized crops keeping 40-100% of the area,
    flips, brightness/contrast/saturation jitter, a random channel order (a hue change that keeps the white
    background white) and random greyscale. What survives all of them is shape: the type of product."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    b = x.shape[0]
    flip = torch.rand(b) < 0.5
    x[flip] = x[flip].flip(-1)
    area = torch.empty(b).uniform_(0.4, 1.0)
    aspect = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3)).exp()
    sx, sy = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    theta[:, 0, 2] = (torch.rand(b) * 2 - 1) * (1 - sx)
    theta[:, 1, 2] = (torch.rand(b) * 2 - 1) * (1 - sy)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    jitter = (torch.rand(b) < 0.8).view(b, 1, 1, 1)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # Rec. 601 grey
    grey = (x * luma).sum(1, keepdim=True)
    saturation = torch.empty(b, 1, 1, 1).uniform_(0.4, 1.6)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4)
    brightness = torch.empty(b, 1, 1, 1).uniform_(-0.2, 0.2)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    jittered = (((grey + (x - grey) * saturation) - mean) * contrast + mean + brightness).clamp(0, 1)
    x = torch.where(jitter, jittered, x)
    permute = torch.rand(b) < 0.5
    if permute.any():
        orders = torch.stack([torch.randperm(3) for _ in range(int(permute.sum()))])
        x[permute] = torch.gather(x[permute], 1, orders.view(-1, 3, 1, 1).expand_as(x[permute]))
    to_grey = (torch.rand(b) < 0.2).view(b, 1, 1, 1)
    x = torch.where(to_grey, (x * luma).sum(1, keepdim=True), x)
    m = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    s = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (x - m) / s


def to_pixel_values(images: torch.Tensor, processor: DualEncoderImageProcessor) -> torch.Tensor:
    return torch.from_numpy(processor.normalize_uint8(images.numpy()))


__all__ = ["augment", "contrastive_view", "preload_images", "to_pixel_values"]
