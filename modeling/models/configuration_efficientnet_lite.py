"""Configuration of EfficientNet-Lite (the ImageNet-pretrained CNN: a baseline and an optional image tower)."""

from __future__ import annotations

from transformers import PreTrainedConfig

# EfficientNet-Lite0's stages (TensorFlow's efficientnet_lite_builder.py): per stage
# [repeats, kernel size, stride, expansion ratio, input channels, output channels]. No squeeze-and-excitation,
# ReLU6, stem and head not scaled: what makes the Lite variants Lite.
LITE0_BLOCKS = [
    [1, 3, 1, 1, 32, 16],
    [2, 3, 2, 6, 16, 24],
    [2, 5, 2, 6, 24, 40],
    [3, 3, 2, 6, 40, 80],
    [3, 5, 1, 6, 80, 112],
    [4, 5, 2, 6, 112, 192],
    [1, 3, 1, 6, 192, 320],
]
# The Lite checkpoints were trained in TensorFlow on inputs scaled as (x - 127) / 128 (efficientnet_lite_builder.py:
# MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3), not with the ImageNet mean/std of the B0-B7 models.
LITE_MEAN = [127.0 / 255.0] * 3
LITE_STD = [128.0 / 255.0] * 3
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class EfficientNetLiteConfig(PreTrainedConfig):
    r"""
    Configuration of [`EfficientNetLiteModel`], by default EfficientNet-Lite0 (ImageNet, 1,000 classes).

    Args:
        num_channels (`int`, *optional*, defaults to 3): input channels.
        stem_channels (`int`, *optional*, defaults to 32): channels of the stride-2 stem convolution.
        block_args (`list[list[int]]`, *optional*): the stages, each `[repeats, kernel, stride, expansion,
            input channels, output channels]` (defaults to Lite0's).
        head_channels (`int`, *optional*, defaults to 1280): channels of the final 1x1 convolution: the size of
            the pooled features (`get_image_features`).
        batch_norm_eps (`float`, *optional*, defaults to 1e-3): TensorFlow's batch-norm epsilon.
        batch_norm_momentum (`float`, *optional*, defaults to 0.01): PyTorch momentum (TensorFlow's 0.99).
        dropout_rate (`float`, *optional*, defaults to 0.2): dropout before the classifier.
        drop_connect_rate (`float`, *optional*, defaults to 0.2): stochastic depth of the residual blocks in
            training, growing linearly with depth from 0 to this rate.
        num_classes (`int`, *optional*, defaults to 1000): classifier outputs; 0 for no classifier.
        image_size (`list[int]`, *optional*, defaults to `[224, 168]`): the processor's (height, width), 3:4 like
            the catalog's photos (the network itself takes any size; TensorFlow "SAME" padding).
        image_mean / image_std (`list[float]`, *optional*): the input scaling the weights were trained with
            (defaults to the Lite checkpoints' (x - 127) / 128).
    """

    model_type = "efficientnet_lite"

    num_channels: int = 3
    stem_channels: int = 32
    block_args: list[list[int]] | None = None
    head_channels: int = 1280
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.01
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    num_classes: int = 1000
    image_size: list[int] | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None

    def __post_init__(self, **kwargs):
        if self.block_args is None:
            self.block_args = [list(b) for b in LITE0_BLOCKS]
        if self.image_size is None:
            self.image_size = [224, 168]
        if self.image_mean is None:
            self.image_mean = list(LITE_MEAN)
        if self.image_std is None:
            self.image_std = list(LITE_STD)
        if any(len(b) != 6 for b in self.block_args):
            raise ValueError("block_args: each stage is [repeats, kernel, stride, expansion, in, out]")
        if len(self.image_size) != 2:
            raise ValueError(f"image_size is (height, width), got {self.image_size!r}")
        super().__post_init__(**kwargs)

    @property
    def projection_dim(self) -> int:
        """The embedding size the search engine indexes: the pooled features."""
        return int(self.head_channels)

    @property
    def hidden_size(self) -> int:
        return int(self.head_channels)


__all__ = ["EfficientNetLiteConfig", "IMAGENET_MEAN", "IMAGENET_STD", "LITE0_BLOCKS", "LITE_MEAN", "LITE_STD"]
