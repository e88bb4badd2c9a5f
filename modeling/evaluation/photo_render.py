"""Phone-like renders of catalog photos for the photo benchmark (`modeling.evaluation.photos`, whose docstring
describes the conditions and the held-out backgrounds), and the remedies applied to a query photo."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from modeling.data.photos import isolate_product, on_white, studio_background_mask

CONDITIONS = ("clean", "zoom", "light", "plain", "photo", "phone")
REMEDIES = ("none", "isolate", "box")
# Real photographs bundled with installed packages, one set per use: the backgrounds choices are made on never meet
# the headline's. Greyscale ones are tinted with a random colour. A bare name is a scikit-image photograph
# (`skimage.data`, public domain or CC0 per its README); "package:file" names another package's bundled photograph.
# "val" and "test" are the first benchmark's dev and held-out sets (test was run once, so it is dev now); "fresh"
# is the held-out set of the second round, from other sources: scikit-learn's two sample photos (a temple in China,
# a flower; CC BY 2.0, sklearn/datasets/images/README.txt) and matplotlib's portrait of Grace Hopper (public domain,
# U.S. Navy photograph). "fresh2" is the held-out set of the third round: the photographs bundled with Gradio (its
# media assets and test data, Apache-2.0 package): a cheetah in grass (two shots), a lion, a tower against the sky and
# a figure in a garden (groot.jpeg); run once with the third round's served default, dev since.
BACKGROUNDS = {
    "val": ("coffee.png", "chelsea.png", "rocket.jpg", "brick.png", "gravel.png", "text.png"),
    "test": ("astronaut.png", "motorcycle_left.png", "motorcycle_right.png", "grass.png", "camera.png",
             "page.png", "coins.png", "moon.png"),
    "fresh": ("sklearn:china.jpg", "sklearn:flower.jpg", "matplotlib:grace_hopper.jpg"),
    "fresh2": ("gradio:cheetah.jpg", "gradio:groot.jpeg", "gradio:lion.jpg", "gradio:tower.jpg",
               "gradio-test:cheetah2.jpg"),
}


def background_file(name: str) -> Path:
    """The file of a background photograph: a bare name in scikit-image's data folder, or "package:file"."""
    package, _, file = name.rpartition(":")
    if package in ("", "skimage"):
        import skimage.data

        return Path(skimage.data.__file__).parent / file
    if package == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images" / file
    if package == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / file
    if package in ("gradio", "gradio-test"):
        import gradio

        return Path(gradio.__file__).parent / ("media_assets/images" if package == "gradio" else "test_data") / file
    raise ValueError(f"unknown background source {package!r}")


def background_sets(names: str | None, split: str) -> list[str]:
    """The background set names of a comma-separated `names` ("val,test"), or the split's own set when None."""
    chosen = [n for n in (names or ("test" if split == "test" else "val")).split(",") if n]
    unknown = [n for n in chosen if n not in BACKGROUNDS]
    if unknown or not chosen:
        raise ValueError(f"unknown background set(s) {unknown}; use {', '.join(BACKGROUNDS)}")
    return chosen


def background_photos(sets: str) -> list[np.ndarray]:
    """The background photographs of comma-separated set names ("val", "test", "fresh"; a split's name is its
    set), as (H, W, 3) uint8 arrays (greyscale kept 2-D for tinting)."""
    out = []
    for name in (n for s in sets.split(",") for n in BACKGROUNDS[s]):
        with Image.open(background_file(name)) as image:
            out.append(np.asarray(image.convert("L" if image.mode in ("L", "I;16", "1") else "RGB")))
    return out


def _background(photos: list[np.ndarray], size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random crop (30-100% of the shorter side) of a random photograph, resized to `size` (width, height)."""
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 1.0))
    cw, ch = (side, int(side * size[1] / size[0])) if size[1] <= size[0] else (int(side * size[0] / size[1]), side)
    cw, ch = min(cw, w), min(ch, h)
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = photo[top:top + ch, left:left + cw]
    if crop.ndim == 2:  # tint a greyscale photograph
        tint = rng.uniform(0.35, 1.0, size=3)
        crop = (crop[..., None] * tint).astype(np.uint8)
    return Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR)


def _light(image: Image.Image, rng: np.random.Generator, strength: float = 0.2) -> Image.Image:
    x = np.asarray(image).astype(np.float32) / 255
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + (x - grey[..., None]) * rng.uniform(1 - strength, 1 + strength)
    x = x * rng.uniform(1 - strength / 2, 1 + strength / 2, size=3)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean * rng.uniform(1 - strength, 1 + strength)
    return Image.fromarray((x.clip(0, 1) * 255).round().astype(np.uint8))


def _crop(image: Image.Image, box, rng: np.random.Generator, low: float, high: float, alpha=None):
    """A crop keeping `low`-`high` of each side at a random place; the product box moved into it (and the product's
    `alpha` mask cropped alike, when given: then a third value)."""
    w, h = image.size
    s = rng.uniform(low, high)
    cw, ch = round(w * s), round(h * s)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    b = (max(0, box[0] - left), max(0, box[1] - top), min(cw, box[2] - left), min(ch, box[3] - top))
    area = (left, top, left + cw, top + ch)
    return (image.crop(area), b) if alpha is None else (image.crop(area), b, alpha.crop(area))


def render(product: Image.Image, condition: str, rng: np.random.Generator, photos: list[np.ndarray],
           with_mask: bool = False):
    """(phone-like photo, the product's box in it) of a catalog photo under one of `CONDITIONS`; with `with_mask`,
    also the product's true mask in the photo ((H, W) uint8 alpha, 255 = product: what the generator pasted, for
    measuring cut-outs), the same random draws either way."""
    rgb = np.asarray(product.convert("RGB"))
    h, w = rgb.shape[:2]
    product_alpha = Image.fromarray(((~studio_background_mask(rgb)) * 255).astype(np.uint8))
    if condition in ("clean", "zoom", "light"):
        image, box, alpha = _studio(product.convert("RGB"), product_alpha, condition, rng)
        return (image, box, np.asarray(alpha)) if with_mask else (image, box)
    big = Image.fromarray(rgb).resize((w * 3, h * 3), Image.Resampling.BICUBIC)
    alpha = product_alpha.resize(big.size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(1.5))
    size = (w * 4, h * 4) if rng.random() < 0.6 else (h * 4, h * 4)  # 3:4 portrait or square
    if condition == "plain":
        colour = _background(photos, (8, 8), rng).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        ramp = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.2), size[1], dtype=np.float32)[:, None, None]
        canvas = Image.fromarray((np.full((size[1], size[0], 3), colour, np.float32) * ramp).clip(0, 255)
                                 .astype(np.uint8))
        scale = rng.uniform(0.75, 0.95)
    else:
        canvas = _background(photos, size, rng)
        scale = rng.uniform(0.6, 0.95)
    ph = int(size[1] * scale)
    pw = int(ph * w / h)
    if pw > size[0] * 0.95:
        pw = int(size[0] * 0.95)
        ph = int(pw * h / w)
    big, alpha = big.resize((pw, ph), Image.Resampling.BILINEAR), alpha.resize((pw, ph), Image.Resampling.BILINEAR)
    left = int(rng.integers(0, size[0] - pw + 1))
    top = int(rng.integers(0, size[1] - ph + 1))
    canvas.paste(big, (left, top), alpha)
    truth = Image.new("L", size, 0)
    truth.paste(alpha, (left, top))
    box = (left, top, left + pw, top + ph)
    if condition != "phone":
        return (canvas, box, np.asarray(truth)) if with_mask else (canvas, box)
    canvas, box, truth = _crop(canvas, box, rng, 0.85, 1.0, truth)
    angle = rng.uniform(-10, 10)
    canvas = canvas.rotate(angle, Image.Resampling.BILINEAR, expand=False, fillcolor=tuple(
        int(v) for v in np.asarray(canvas).reshape(-1, 3).mean(0)))
    truth = truth.rotate(angle, Image.Resampling.BILINEAR, expand=False, fillcolor=0)
    canvas = _light(canvas, rng).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    noisy = np.asarray(canvas).astype(np.float32) + rng.normal(0, rng.uniform(1, 6), (canvas.height, canvas.width, 3))
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=int(rng.integers(45, 91)))
    photo = Image.open(buffer).convert("RGB")
    return (photo, box, np.asarray(truth)) if with_mask else (photo, box)


def _studio(product: Image.Image, alpha: Image.Image, condition: str, rng: np.random.Generator):
    """(photo, box, alpha) of the studio conditions: the catalog photo, a zoomed crop of it, or it re-lit."""
    w, h = product.size
    if condition == "zoom":
        return _crop(product, (0, 0, w, h), rng, 0.7, 0.85, alpha)
    return (_light(product, rng) if condition == "light" else product), (0, 0, w, h), alpha


def remedy_image(image: Image.Image, box, remedy: str, rng: np.random.Generator, mask=None) -> Image.Image:
    """The query photo under a remedy: as rendered, isolated as the engine does, cut from the product's jittered
    box, or ("oracle", measurement only) the product's true `mask` (from `render(..., with_mask=True)`) put on white."""
    if remedy == "none":
        return image
    if remedy == "isolate":
        return isolate_product(image).image
    if remedy == "oracle":
        if mask is None:
            raise ValueError("the oracle remedy needs the product's true mask: render(..., with_mask=True)")
        return on_white(np.asarray(image.convert("RGB")), np.asarray(mask) >= 128)
    bw, bh = box[2] - box[0], box[3] - box[1]
    jitter = rng.uniform(-0.05, 0.05, size=4) * np.array([bw, bh, bw, bh])
    return isolate_product(image, box=tuple(np.asarray(box, float) + jitter), force=True).image


__all__ = ["BACKGROUNDS", "CONDITIONS", "REMEDIES", "background_file", "background_photos", "background_sets", "remedy_image", "render"]
