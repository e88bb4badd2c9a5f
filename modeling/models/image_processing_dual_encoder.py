"""Image preprocessing of the CNN image tower, in PIL + numpy (no torchvision).

Catalog photos are portrait product shots on a white background (60x80 in the shared catalog). The processor
letterboxes every image into the CNN's (height, width) — aspect ratio kept, padded with white — so that a square
upload or a 224x224 photo lands in the same frame as the catalog's 3:4 photos instead of being squashed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

# Mean/std of 3,000 letterboxed training images of the shared catalog (RGB, 0..1); bright: white backgrounds.
CATALOG_MEAN = [0.865, 0.846, 0.840]
CATALOG_STD = [0.253, 0.261, 0.263]


def _to_rgb(image) -> Image.Image:
    """Any PIL mode or HWC uint8 array -> RGB PIL image (alpha composited on white, like the catalog)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


class DualEncoderImageProcessor(BaseImageProcessor):
    r"""
    Letterbox-resize to `image_size` (height, width), scale to 0..1 and normalise.

    Args:
        image_size (`list[int]`, *optional*, defaults to `[80, 64]`): output (height, width).
        image_mean (`list[float]`, *optional*): per-channel mean (defaults to the catalog's).
        image_std (`list[float]`, *optional*): per-channel std (defaults to the catalog's).
        pad_value (`int`, *optional*, defaults to 255): fill of the letterbox borders (white).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: Sequence[int] = (80, 64),
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        pad_value: int = 255,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = [int(s) for s in image_size]
        self.image_mean = list(image_mean if image_mean is not None else CATALOG_MEAN)
        self.image_std = list(image_std if image_std is not None else CATALOG_STD)
        self.pad_value = int(pad_value)

    def resize_and_pad(self, image) -> np.ndarray:
        """One image -> uint8 array (height, width, 3), aspect ratio kept, white borders."""
        image = _to_rgb(image)
        height, width = self.image_size
        scale = min(width / image.width, height / image.height)
        new_w = max(1, round(image.width * scale))
        new_h = max(1, round(image.height * scale))
        if (new_w, new_h) != image.size:
            image = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        canvas = Image.new("RGB", (width, height), (self.pad_value,) * 3)
        canvas.paste(image, ((width - new_w) // 2, (height - new_h) // 2))
        return np.asarray(canvas, dtype=np.uint8)

    def normalize_uint8(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalised."""
        x = batch.astype(np.float32) / 255.0
        x = (x - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors)

    def preprocess(self, images, return_tensors: str | None = "pt") -> BatchFeature:
        images = [images] if isinstance(images, (Image.Image, np.ndarray)) else list(images)
        if not images:
            raise ValueError("no images given")
        batch = np.stack([self.resize_and_pad(image) for image in images])
        return BatchFeature({"pixel_values": self.normalize_uint8(batch)}, tensor_type=return_tensors)


__all__ = ["DualEncoderImageProcessor", "CATALOG_MEAN", "CATALOG_STD"]
