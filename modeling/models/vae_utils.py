"""Helpers around [`FashionVaeModel`] that need more than torch (PIL, numpy): the reconstruction grid."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, 3) uint8."""
    images = images.detach().float().clamp(0, 1).cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)


@torch.no_grad()
def reconstruction_grid(
    model,
    pixel_values: torch.Tensor | Sequence,
    path: str | os.PathLike,
    processor=None,
    n: int = 8,
    scale: int = 2,
    padding: int = 2,
) -> Image.Image:
    """
    Writes a PNG with the first `n` originals in the top row and the model's reconstructions below them.

    Args:
        model ([`FashionVaeModel`]): put in eval mode for the call (reconstructions from the latent mean), then
            restored to its previous mode.
        pixel_values (`torch.Tensor` of shape `(batch, channels, height, width)` or a list of images):
            Normalised pixel values, or PIL images / arrays that `processor` turns into them.
        path (`str` or `os.PathLike`): where the PNG goes (folders are created).
        processor (*optional*): the image processor; needed for raw images. Its `image_mean`/`image_std` undo the
            normalisation of the originals (the model's config values otherwise).
        n (`int`, *optional*, defaults to 8): number of images (fewer if the batch is smaller).
        scale (`int`, *optional*, defaults to 2): nearest-neighbour upscaling of every thumbnail.
        padding (`int`, *optional*, defaults to 2): grey gap between thumbnails, before scaling.

    Returns:
        The grid as a PIL image of size `(cols * (W + padding) + padding) * scale` by
        `(2 * (H + padding) + padding) * scale`, where `cols = min(n, batch)`.
    """
    if not isinstance(pixel_values, torch.Tensor):
        if processor is None:
            raise ValueError("raw images need a processor")
        pixel_values = processor(list(pixel_values)[:n], return_tensors="pt")["pixel_values"]
    pixel_values = pixel_values[:n]
    if len(pixel_values) == 0:
        raise ValueError("no images given")
    source = processor if processor is not None else model.config
    mean = torch.tensor(source.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(source.image_std, dtype=torch.float32).view(1, -1, 1, 1)

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        reconstructions = model(pixel_values.to(device)).reconstructions
    finally:
        model.train(was_training)
    originals = pixel_values.float().cpu() * std + mean

    rows = [_to_uint8(originals), _to_uint8(reconstructions)]
    cols, (height, width) = len(pixel_values), rows[0].shape[1:3]
    grid = np.full((2 * (height + padding) + padding, cols * (width + padding) + padding, 3), 128, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = padding + r * (height + padding), padding + c * (width + padding)
            grid[top:top + height, left:left + width] = image
    image = Image.fromarray(grid)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path, format="PNG")
    return image


__all__ = ["reconstruction_grid"]
