"""Image augmentation of the preloaded catalog: training views of uint8 `(B, H, W, 3)` batches.

Every function draws from torch's global RNG, which the loop seeds per epoch, so a resumed run repeats them.
"""

from __future__ import annotations

import math

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from modeling.data.photos import studio_background_mask
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


def background_masks(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: the studio background of each preloaded photo (letterbox borders included)."""
    return torch.from_numpy(np.stack([studio_background_mask(a) for a in images.numpy()]))


def _colours(b: int, n: int = 1) -> torch.Tensor:
    """(b, n, 3, 1, 1) random colours: half saturated, half near-grey (walls, floors, fabric)."""
    c = torch.rand(b, n, 3, 1, 1)
    grey = torch.rand(b, n, 1, 1, 1)
    muted = torch.rand(b, n, 1, 1, 1) < 0.5
    return torch.where(muted, grey + (c - grey) * 0.25, c)


def _coords(b: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.linspace(-1, 1, h).view(1, h, 1).expand(b, h, w)
    xs = torch.linspace(-1, 1, w).view(1, 1, w).expand(b, h, w)
    return xs, ys


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with one sigma per image (5-tap separable kernels)."""
    taps = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-taps[None, :] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)  # (B, 5)
    b, c, h, w = x.shape
    y = x.reshape(1, b * c, h, w)
    kx = k.repeat_interleave(c, 0).view(b * c, 1, 1, 5)
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), kx, groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), kx.transpose(2, 3), groups=b * c)
    return y.view(b, c, h, w)


def random_backgrounds(b: int, h: int, w: int, pool: torch.Tensor) -> torch.Tensor:
    """(b, 3, h, w) in 0..1: solid colours, two-colour gradients, stripes, checks, smooth noise textures and blurred
    zoomed crops of catalog photos (`pool`, (N, 3, H, W) in 0..1), one kind drawn per image. Training only: the photo
    benchmark evaluates on real photographs, a source these never draw from."""
    kind = torch.randint(0, 6, (b,))
    c = _colours(b, 2)
    xs, ys = _coords(b, h, w)
    xs, ys = xs[:, None], ys[:, None]
    angle = torch.rand(b, 1, 1, 1) * math.pi
    along = xs * angle.cos() + ys * angle.sin()
    t = {
        0: torch.zeros(b, 1, h, w),
        1: (along + 1) / 2,
        2: (torch.sin(along * torch.empty(b, 1, 1, 1).uniform_(3, 14) + torch.rand(b, 1, 1, 1) * 6.3) > 0).float(),
        3: ((torch.sin(xs * torch.empty(b, 1, 1, 1).uniform_(3, 12)) *
             torch.sin(ys * torch.empty(b, 1, 1, 1).uniform_(3, 12))) > 0).float(),
    }
    out = torch.empty(b, 3, h, w)
    for k in (0, 1, 2, 3):
        sel = kind == k
        if sel.any():
            out[sel] = c[sel, 0] + (c[sel, 1] - c[sel, 0]) * t[k][sel]
    sel = kind == 4
    if sel.any():  # smooth value noise in colour, two octaves
        n = int(sel.sum())
        noise = sum(F.interpolate(torch.rand(n, 3, g, g), size=(h, w), mode="bilinear", align_corners=False) / g ** 0.5
                    for g in (3, 9))
        noise = (noise - noise.mean((2, 3), keepdim=True)) * torch.empty(n, 1, 1, 1).uniform_(0.5, 2.0)
        out[sel] = (c[sel, 0] + noise).clamp(0, 1)
    sel = kind == 5
    if sel.any():  # a blurred, zoomed-in crop of another catalog photo
        n = int(sel.sum())
        src = pool[torch.randint(0, len(pool), (n,))]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = torch.empty(n).uniform_(0.25, 0.6)
        theta[:, :, 2] = torch.empty(n, 2).uniform_(-0.4, 0.4)
        crop = F.grid_sample(src, F.affine_grid(theta, [n, 3, h, w], align_corners=False), align_corners=False)
        out[sel] = _blur(crop, torch.empty(n).uniform_(1.0, 2.5))
    return out.clamp(0, 1)


def _homography_grid(b: int, h: int, w: int) -> torch.Tensor:
    """(b, h, w, 2) sampling grids: zoom out (product smaller, up to 1/1.7) or in (a 70-85% crop), shifts, rotations
    up to 12 degrees and a mild perspective."""
    xs, ys = _coords(b, h, w)
    scale = torch.empty(b).uniform_(math.log(0.72), math.log(1.7)).exp()
    rot = torch.empty(b).uniform_(-12, 12) * math.pi / 180
    shift = torch.empty(b, 2).uniform_(-0.18, 0.18)
    persp = torch.empty(b, 2).uniform_(-0.12, 0.12)
    ca, sa = (scale * rot.cos()).view(b, 1, 1), (scale * rot.sin()).view(b, 1, 1)
    z = 1 + persp[:, 0].view(b, 1, 1) * xs + persp[:, 1].view(b, 1, 1) * ys
    gx = (ca * xs - sa * ys + shift[:, 0].view(b, 1, 1)) / z
    gy = (sa * xs + ca * ys + shift[:, 1].view(b, 1, 1)) / z
    return torch.stack([gx, gy], dim=-1)


def _jpeg(x: torch.Tensor) -> torch.Tensor:
    """A real JPEG round trip of each (3, H, W) image in 0..1 at a random quality of 20-75."""
    out = torch.empty_like(x)
    for i, img in enumerate((x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()):
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="JPEG", quality=int(torch.randint(20, 76, ()).item()))
        out[i] = torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).permute(2, 0, 1).float() / 255
    return out


def world_view(images: torch.Tensor, masks: torch.Tensor, pool: torch.Tensor,
               background_prob: float = 0.8) -> torch.Tensor:
    """uint8 (B, H, W, 3) studio photos + their background masks -> (B, 3, H, W) in 0..1 as a shopper might
    photograph them: zoomed / shifted / rotated with a mild perspective, the studio background replaced (with
    `background_prob`), lighting and white-balance changes, sometimes blur, sensor noise and JPEG artefacts. Hue
    stays close to the product's own: colour is what shoppers search by."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    b, _, h, w = x.shape
    flip = torch.rand(b) < 0.5
    x[flip] = x[flip].flip(-1)
    m = masks[:, None].float()
    m[flip] = m[flip].flip(-1)
    grid = _homography_grid(b, h, w)
    x = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = 1.0 - F.grid_sample(1.0 - m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = F.avg_pool2d(m, 3, stride=1, padding=1, count_include_pad=False)  # soft edges
    replace = (torch.rand(b) < background_prob).view(b, 1, 1, 1).float()
    x = x + (random_backgrounds(b, h, w, pool) - x) * m * replace
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    grey = (x * luma).sum(1, keepdim=True)
    x = grey + (x - grey) * torch.empty(b, 1, 1, 1).uniform_(0.75, 1.25)  # saturation
    x = x * torch.empty(b, 3, 1, 1).uniform_(0.92, 1.08)  # white balance
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3) + mean + torch.empty(b, 1, 1, 1).uniform_(-0.2, 0.2)
    x = x.clamp(0, 1) ** torch.empty(b, 1, 1, 1).uniform_(math.log(0.8), math.log(1.25)).exp()
    blur = torch.rand(b) < 0.3
    if blur.any():
        x[blur] = _blur(x[blur], torch.empty(int(blur.sum())).uniform_(0.5, 1.2))
    noisy = (torch.rand(b) < 0.3).view(b, 1, 1, 1)
    x = torch.where(noisy, x + torch.randn_like(x) * torch.empty(b, 1, 1, 1).uniform_(0.01, 0.04), x).clamp(0, 1)
    jpeg = torch.rand(b) < 0.3
    if jpeg.any():
        x[jpeg] = _jpeg(x[jpeg])
    return x


def world_augment(images: torch.Tensor, masks: torch.Tensor, processor: DualEncoderImageProcessor,
                  prob: float) -> torch.Tensor:
    """`augment` for every photo, then `world_view` in place of it for a share `prob` of them (normalised)."""
    out = augment(images, processor)
    world = torch.rand(len(images)) < prob
    if world.any():
        pool = images[torch.randperm(len(images))[:32]].permute(0, 3, 1, 2).float() / 255.0
        view = world_view(images[world], masks[world], pool)
        mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        out[world] = (view - mean) / std
    return out


def to_pixel_values(images: torch.Tensor, processor: DualEncoderImageProcessor) -> torch.Tensor:
    return torch.from_numpy(processor.normalize_uint8(images.numpy()))


__all__ = ["augment", "background_masks", "contrastive_view", "preload_images", "random_backgrounds",
           "to_pixel_values", "world_augment", "world_view"]
