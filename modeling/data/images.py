# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""Opening images safely: every failure (missing, unreadable, corrupt, not an image, too large) is an `ImageError`.

`open_image` decodes a file or buffer as it is; `load_image` takes any usual form of an image and returns it upright
and RGB; `image_problem` tells why an image cannot be used, without raising.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Larger images are refused: a small compressed file can declare enough pixels to exhaust memory when decoded.
MAX_IMAGE_PIXELS = 50_000_000


class ImageError(ValueError):
    """An image cannot be used: it is missing, unreadable, corrupt, not an image or too large."""


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels."
        )


def open_image(source: str | os.PathLike | io.BytesIO, what: str | None = None) -> Image.Image:
    """Opens and fully decodes an image file or buffer, turning every failure into an `ImageError`.

    `what` names the image in error messages; by default `Image file '<path>'` for a path, else "The image data".
    """
    if what is None:
        what = f"Image file '{os.fspath(source)}'" if isinstance(source, (str, os.PathLike)) else "The image data"
    try:
        with Image.open(source) as image:
            # The size comes from the header, so the check runs before any pixel is decoded.
            _check_size(image.width, image.height, what)
            image.load()
            return image
    except ImageError:
        raise
    except FileNotFoundError as error:
        raise ImageError(f"{what} does not exist.") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{what} is not an image file Pillow can read.") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own guard (the warning only arrives here when warnings are turned into errors).
        raise ImageError(f"{what} is too large to decode safely: {error}") from error
    except Exception as error:
        # Truncated or corrupt data surfaces as OSError, SyntaxError, ValueError, struct.error... depending on the
        # codec; for a caller they all mean the same thing. The codec's own words stay in the chained exception
        # (logs): they name library internals, not something a user can act on.
        raise ImageError(f"{what} is corrupt or truncated; it cannot be decoded.") from error


def image_problem(source: str | os.PathLike | io.BytesIO, what: str | None = None) -> str:
    """Why `source` cannot be opened as an image (the `ImageError` message of `open_image`), "" when it can."""
    try:
        open_image(source, what)
    except ImageError as error:
        return str(error)
    return ""


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ImageError(f"An array of shape {array.shape} is not an image (expected HxW, HxWx3 or HxWx4).")
    _check_size(array.shape[1], array.shape[0], "The image array")
    if array.dtype != np.uint8:
        # Float images follow the [0, 1] convention of tensors; anything else is clipped to the 8-bit range.
        if array.dtype == bool or np.issubdtype(array.dtype, np.floating):
            array = np.nan_to_num(array.astype(np.float32)) * 255
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def _high_depth_to_l(image: Image.Image, peak: float | None = None) -> Image.Image:
    # Pillow converts 16/32-bit and float images to 8 bits by clipping, which turns most 16-bit photos white.
    # 16-bit values keep their top byte (v >> 8, exact: an 8-bit image stored as v * 257 comes back as v);
    # floats in [0, 1] are scaled to 255, anything else is clipped to the 8-bit range. `peak`: the largest value of
    # the whole image when `image` is a strip of it (the same rule for every strip); by default `image`'s own.
    array = np.asarray(image)
    if peak is None:
        peak = float(array.max(initial=0))
    if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
        array = np.clip(array.astype(np.int64), 0, 65535) >> 8
    elif image.mode == "F":
        array = np.nan_to_num(array.astype(np.float32))
        if peak <= 1:
            array = array * 255
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _to_rgb(image: Image.Image) -> Image.Image:
    # Phone photos are often stored sideways with an orientation tag.
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image, peak: float | None = None) -> Image.Image:
    """`image` (any mode, as stored: no orientation applied) as RGB: 16-bit and float images scaled to 8 bits
    (`peak`: see `_high_depth_to_l`), transparent ones composited on white."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_depth_to_l(image, peak)
    if image.has_transparency_data:
        # Transparent product cut-outs belong on the white background of shop photos, not on black.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"Cannot convert a {image.mode} image to RGB: {error}") from error


def load_image(image: str | os.PathLike | bytes | Image.Image | np.ndarray | Mapping[str, Any]) -> Image.Image:
    """Loads an image from any usual form and returns it as RGB.

    Args:
        image: a file path, the encoded bytes of an image file, a `PIL.Image.Image`, a NumPy array (HxW, HxWx3 or
            HxWx4; floats are taken to be in [0, 1]) or a `datasets` image dict (`{"bytes": ..., "path": ...}`).

    Returns:
        A decoded RGB `PIL.Image.Image`, rotated upright following its EXIF orientation. Transparent images are
        composited on white; greyscale, palette, CMYK and 16-bit images are converted.

    Raises:
        ImageError: the input is missing, unreadable, corrupt, not an image, or larger than `MAX_IMAGE_PIXELS`.
        TypeError: the input is of none of the types above.
    """
    if isinstance(image, Mapping) and ("bytes" in image or "path" in image):
        image = image.get("bytes") or image.get("path")
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, "The image")
        try:
            image.load()  # a lazily opened image may still fail to decode
        except Exception as error:
            raise ImageError("The image is corrupt or truncated; it cannot be decoded.") from error
    elif isinstance(image, np.ndarray):
        image = _array_to_image(image)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        image = open_image(io.BytesIO(image))
    elif isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    else:
        raise TypeError(f"Cannot load an image from {type(image).__name__}; pass a path, bytes, PIL image or array.")
    return _to_rgb(image)


__all__ = ["MAX_IMAGE_PIXELS", "ImageError", "image_problem", "load_image", "open_image"]
