"""Reference rankers for the evaluation table: a region colour histogram and random.

The colour histogram is the seeds' OpenCV baseline done with PIL + numpy: the image is split into 2x2 regions,
each region gets an HSV histogram (8 hue x 4 saturation x 4 value bins), and the square roots of the normalised
counts are concatenated (Hellinger mapping), so cosine similarity of the features compares distributions.
Near-white pixels are the photo background and are left out of the counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

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


__all__ = ["colour_histogram", "colour_histogram_features", "random_features"]
