# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""Uploaded photos with bounded memory: what a served photo search decodes, and nothing more.

A shopper's photo is searched by a 224-pixel model, its box is drawn on a 480-pixel view and the product is cut out
at 160 pixels; the photo itself is worked on at most `WORKING_SIDE` pixels a side (a product boxed in a quarter of
the photo's width still has 512 pixels). `load_upload` therefore

* takes the formats of photos only (`UPLOAD_FORMATS`: JPEG, PNG, WebP, GIF, BMP, TIFF); Pillow's other decoders
  (PostScript through Ghostscript, PSD, ICNS, ...) are never tried;
* refuses, from the header alone, an image that would decode to more than `MAX_UPLOAD_PIXELS` (16 megapixels:
  4000 x 4000, a 12-megapixel phone photo fits; at most 64 MB decoded, 4 bytes a pixel); a JPEG is decoded by its
  own decoder at 1/2, 1/4 or 1/8 scale (draft mode) first, so one of up to `MAX_JPEG_PIXELS` (100 megapixels) is
  taken at a fraction of that;
* converts to RGB and reduces by an integer factor (`Image.reduce`, a box filter) one strip of rows at a time into
  the working image, so no full-size copy is made besides the decoded image itself (the palette, 16-bit and
  transparency conversions happen strip by strip);
* answers with the working image upright (EXIF orientation), the upload's own upright size, and the scale between
  them (a shopper's box is given in the upload's pixels).

Memory per request: the decoded image (at most 64 MB) + the working image (at most 16 MB) + one strip (a few MB);
`benchmarks/upload_memory.py` measures it on the served app.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from modeling.data.images import ImageError, to_rgb

UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # a phone's MPO opens as JPEG
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
MAX_UPLOAD_PIXELS = 16_000_000
MAX_JPEG_PIXELS = 100_000_000
WORKING_SIDE = 2048
STRIP_PIXELS = 1_000_000  # pixels of the decoded image converted at once
# EXIF orientation -> the transposition that makes the photo upright (as `ImageOps.exif_transpose`).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


@dataclass
class Upload:
    """An uploaded photo as it is searched: `image` (RGB, upright, at most the working side), the upload's upright
    `size` in pixels, and `scale` = image pixels per upload pixel (<= 1)."""

    image: Image.Image
    size: tuple[int, int]

    @property
    def scale(self) -> float:
        return self.image.width / self.size[0] if self.size[0] else 1.0

    def to_image(self, box):
        """A box in the upload's pixels, in the working image's (None stays None)."""
        return None if box is None else tuple(float(v) * self.scale for v in box)

    def to_upload(self, box) -> tuple[int, int, int, int]:
        """A box in the working image's pixels, in the upload's."""
        return tuple(int(round(v / self.scale)) for v in box)


def _too_large(what: str, width: int, height: int, limit: int) -> ImageError:
    return ImageError(f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
                      f"limit of {limit / 1e6:.0f} megapixels for photos; send a smaller copy.")


def _open(source, what: str) -> Image.Image:
    try:
        return Image.open(source, formats=UPLOAD_FORMATS)
    except FileNotFoundError as error:
        raise ImageError(f"{what} does not exist.") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{what} is not an image file this app takes ({FORMAT_NAMES}).") from error
    except Image.DecompressionBombError as error:  # Pillow's own header check (over 179 megapixels)
        raise ImageError(f"{what} declares more pixels than the limit of {MAX_JPEG_PIXELS / 1e6:.0f} megapixels "
                         "for photos; send a smaller copy.") from error
    except Exception as error:
        raise ImageError(f"{what} is corrupt or truncated; it cannot be decoded.") from error


def _plan_decode(image: Image.Image, what: str, max_side: int) -> None:
    """Checks the declared size and, for a JPEG, sets its decoder to the smallest scale still at least `max_side`
    pixels a side (draft mode). Raises `ImageError` for an image over the limits."""
    width, height = image.size
    jpeg = image.format in ("JPEG", "MPO")
    if width * height > (MAX_JPEG_PIXELS if jpeg else MAX_UPLOAD_PIXELS):
        raise _too_large(what, width, height, MAX_JPEG_PIXELS if jpeg else MAX_UPLOAD_PIXELS)
    if jpeg and max(width, height) > max_side:
        shrink = max_side / max(width, height)
        image.draft("RGB", (math.ceil(width * shrink), math.ceil(height * shrink)))
        if image.width * image.height > MAX_UPLOAD_PIXELS:
            raise _too_large(what, width, height, MAX_UPLOAD_PIXELS)


def _peak(image: Image.Image) -> float | None:
    """The largest value of a 16-bit, 32-bit or float image (read without a copy), so every strip is scaled by the
    same rule; None for other modes."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return float(image.getextrema()[1])
    return None


def reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """`image` (decoded, any mode) as RGB reduced by `factor` (a box filter), converted one strip of rows at a time:
    the only full-size image in memory is `image` itself."""
    if factor <= 1:
        return to_rgb(image, _peak(image))
    peak, width, height = _peak(image), image.width, image.height
    rows = max(1, STRIP_PIXELS // (width * factor)) * factor
    out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        out.paste(to_rgb(strip, peak).reduce(factor), (0, top // factor))
        del strip
    return out


def load_upload(source: str | os.PathLike | bytes, max_side: int = WORKING_SIDE, what: str | None = None) -> Upload:
    """An uploaded photo (a file path or the file's bytes) as an `Upload`: RGB, upright, at most `max_side` pixels a
    side; `ImageError` (a message for the user) for anything that is not a photo of an allowed format and size.
    `what` names the photo in messages (default: "Image file '<path>'" as `open_image` says it, else "The image
    data"; `user_message` cuts the path to the file's name)."""
    if what is None:
        what = f"Image file '{os.fspath(source)}'" if isinstance(source, (str, os.PathLike)) else "The image data"
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    with _open(source, what) as image:
        full = image.size
        _plan_decode(image, what, max_side)
        orientation = image.getexif().get(0x0112, 1)
        try:
            image.load()
            factor = max(1, math.ceil(max(image.size) / max_side))
            working = reduced_rgb(image, factor)
        except ImageError:
            raise
        except Exception as error:  # truncated or corrupt data: the codec's words stay in the log's chain
            raise ImageError(f"{what} is corrupt or truncated; it cannot be decoded.") from error
    if orientation in UPRIGHT:
        working = working.transpose(UPRIGHT[orientation])
        full = full[::-1] if orientation >= 5 else full
    return Upload(working, full)


__all__ = ["FORMAT_NAMES", "MAX_JPEG_PIXELS", "MAX_UPLOAD_PIXELS", "UPLOAD_FORMATS", "WORKING_SIDE", "Upload",
           "load_upload", "reduced_rgb"]
