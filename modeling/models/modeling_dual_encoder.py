"""BERT + CNN dual encoder: a BERT-family text tower and a small residual CNN, aligned in one embedding space.

The image tower is the small CNN by default; `config.image_tower = "efficientnet-lite0"` puts the ImageNet-pretrained
EfficientNet-Lite0 (`modeling_efficientnet_lite.py`) in its place, trained or frozen (`freeze_image_tower`).

Imports only its own configuration, `composition.py`, `losses.py` and the EfficientNet-Lite files (plus
transformers/peft/torch) so the file can travel to the Hub and load with `trust_remote_code`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .composition import Combiner, compose
from .losses import attribute_heads_loss, supervised_contrastive_loss, symmetric_infonce
from .configuration_dual_encoder import DualEncoderConfig
from .configuration_efficientnet_lite import EfficientNetLiteConfig
from .modeling_efficientnet_lite import EfficientNetLiteEncoder


@dataclass
class DualEncoderOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        Symmetric InfoNCE loss, plus the weighted auxiliary attribute loss when targets are given.
    logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
        Scaled cosine similarities between image and text embeddings.
    logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
        The transpose of `logits_per_image`.
    text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised text embeddings.
    image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised image embeddings.
    attribute_logits (`dict[str, torch.FloatTensor]`, *optional*): per attribute, `(batch_size, num_values)`.
    contrastive_loss / attribute_loss / supcon_loss (`torch.FloatTensor`, *optional*): the parts of `loss`.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    attribute_logits: dict[str, torch.FloatTensor] | None = None
    contrastive_loss: torch.FloatTensor | None = None
    attribute_loss: torch.FloatTensor | None = None
    supcon_loss: torch.FloatTensor | None = None


# Symmetric multi-positive InfoNCE, shared with the CLIP model; this model's losses all live in losses.py.
dual_encoder_loss = symmetric_infonce


class ResidualBlock(nn.Module):
    """Basic ResNet block (two 3x3 convolutions) with a projected shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class DualEncoderVisionModel(nn.Module):
    """A small ResNet for low-resolution product photos (80x64 by default).

    The stem downsamples once and every later stage but the first halves the resolution again; at 80x64 that is
    40x32 -> 20x16 -> 10x8 -> 5x4, cheap enough to train on two CPU cores. Average- and max-pooled features are
    concatenated: max pooling keeps small, distinctive parts (a watch face, a logo) that averaging washes out.
    """

    def __init__(self, config: DualEncoderConfig):
        super().__init__()
        stem = config.cnn_stem_channels
        self.stem = nn.Sequential(
            nn.Conv2d(config.num_channels, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        stages, in_channels = [], stem
        for index, (channels, blocks) in enumerate(zip(config.cnn_channels, config.cnn_blocks_per_stage)):
            layers = []
            for block in range(blocks):
                stride = 2 if (block == 0 and index > 0) else 1
                layers.append(ResidualBlock(in_channels, channels, stride))
                in_channels = channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.output_size = 2 * in_channels
        # Channels-last activations: oneDNN's fastest convolution layout on CPU (measured: training steps 1.15x
        # faster in fp32, 2x with bf16 autocast; inference 1.25x). Weights keep the default layout. Not below 16
        # channels: there oneDNN's channels-last backward of the strided 1x1 shortcut crashes (torch 2.13).
        self.channels_last = min(stem, *config.cnn_channels) >= 16

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        hidden = self.stages(self.stem(pixel_values))
        return torch.cat([hidden.mean(dim=(2, 3)), hidden.amax(dim=(2, 3))], dim=1)


class EfficientNetLiteVisionTower(nn.Module):
    """EfficientNet-Lite as the image tower: the encoder's head, average-pooled (1,280 numbers for Lite0).

    Frozen (`config.freeze_image_tower`), its weights take no gradient and it stays in eval mode (batch-norm
    statistics fixed) whatever mode the model is in; the pooled features of a photo then never change, which lets
    training compute them once (`image_pooled_output`)."""

    def __init__(self, config: DualEncoderConfig):
        super().__init__()
        self.tower_config = EfficientNetLiteConfig.from_dict(dict(config.image_tower_config or {}))
        self.encoder = EfficientNetLiteEncoder(self.tower_config)
        self.output_size = self.tower_config.head_channels
        self.frozen = bool(config.freeze_image_tower)
        if self.frozen:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixel_values).mean(dim=(2, 3))


class CosineClassifier(nn.Module):
    """Linear head on normalised features with normalised class weights: classes become directions of the
    embedding space, so cosine neighbours (what retrieval uses) share attributes."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_features) * 0.02)
        self.scale = scale

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.scale * normalised @ F.normalize(self.weight, dim=-1).t()


class DualEncoderPreTrainedModel(PreTrainedModel):
    config_class = DualEncoderConfig
    config: DualEncoderConfig
    base_model_prefix = "dual_encoder"
    input_modalities = ("image", "text")
    main_input_name = "pixel_values"

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, CosineClassifier):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, DualEncoderModel):
            module.logit_scale.fill_(self.config.logit_scale_init_value)


class DualEncoderModel(DualEncoderPreTrainedModel):
    def __init__(self, config: DualEncoderConfig):
        super().__init__(config)
        try:
            self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        except TypeError:  # BERT-family models without a pooler argument (e.g. DistilBERT)
            self.text_model = AutoModel.from_config(config.text_config)
        if config.image_tower == "efficientnet-lite0":
            self.vision_model = EfficientNetLiteVisionTower(config)
        else:
            self.vision_model = DualEncoderVisionModel(config)

        text_hidden, dim = config.text_config.hidden_size, config.projection_dim
        if config.text_projection_hidden_size:
            self.text_projection = nn.Sequential(
                nn.Linear(text_hidden, config.text_projection_hidden_size),
                nn.GELU(),
                nn.Linear(config.text_projection_hidden_size, dim),
            )
        else:
            self.text_projection = nn.Linear(text_hidden, dim)
        if config.image_projection_hidden_size:
            self.visual_projection = nn.Sequential(
                nn.Dropout(config.image_dropout),
                nn.Linear(self.vision_model.output_size, config.image_projection_hidden_size),
                nn.GELU(),
                nn.Linear(config.image_projection_hidden_size, dim),
            )
        else:
            self.visual_projection = nn.Sequential(
                nn.Dropout(config.image_dropout), nn.Linear(self.vision_model.output_size, dim)
            )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.combiner = (Combiner(dim, config.combiner_hidden_size, config.combiner_dropout)
                         if config.combiner_hidden_size else None)
        self.attribute_heads = nn.ModuleDict(
            {name: CosineClassifier(dim, len(values)) for name, values in config.attribute_labels.items()}
        )
        self.post_init()
        # Adapters go in after post_init so the generic init never overwrites LoRA's zero-initialised B matrices.
        if config.text_lora_rank > 0:
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(
                r=config.text_lora_rank,
                lora_alpha=config.text_lora_alpha,
                lora_dropout=config.text_lora_dropout,
                target_modules=list(config.text_lora_target_modules),
            )
            self.text_model = inject_adapter_in_model(lora, self.text_model)
        self._set_text_trainable()

    def _set_text_trainable(self):
        frozen = self.config.freeze_text_model or self.config.text_lora_rank > 0
        for name, param in self.text_model.named_parameters():
            param.requires_grad = (not frozen) or "lora_" in name

    @classmethod
    def from_text_pretrained(cls, pretrained_text_model: str, **config_kwargs) -> "DualEncoderModel":
        """A new model for training: pretrained text tower (Hub id or local folder), fresh CNN and projections.

        `config_kwargs` go to [`DualEncoderConfig`] (`text_model_name_or_path` defaults to `pretrained_text_model`).
        """
        text_config = AutoConfig.from_pretrained(pretrained_text_model)
        config_kwargs.setdefault("text_model_name_or_path", str(pretrained_text_model))
        config = DualEncoderConfig(text_config=text_config.to_dict(), **config_kwargs)
        model = cls(config)
        pretrained = AutoModel.from_pretrained(pretrained_text_model)
        missing, unexpected = model.text_model.load_state_dict(pretrained.state_dict(), strict=False)
        # Only LoRA weights (new) may be missing; the pooler (unused) may be unexpected.
        missing = [k for k in missing if "lora_" not in k]
        unexpected = [k for k in unexpected if not k.startswith("pooler.")]
        if missing or unexpected:
            raise ValueError(f"text tower mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model

    def pool_text(self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.config.text_pooling == "cls":
            return last_hidden_state[:, 0]
        if attention_mask is None:
            return last_hidden_state.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def encode_text_backbone(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Pooled text-tower output before projection (what a frozen tower lets training cache)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        outputs = self.text_model(**kwargs)
        return self.pool_text(outputs.last_hidden_state, attention_mask)

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        text_pooled_output: torch.Tensor | None = None,
    ) -> torch.FloatTensor:
        """Projected, unnormalised text embeddings `(batch, projection_dim)`. `text_pooled_output` (from
        `encode_text_backbone`) skips the text tower."""
        if text_pooled_output is None:
            if input_ids is None:
                raise ValueError("get_text_features needs input_ids or text_pooled_output")
            text_pooled_output = self.encode_text_backbone(input_ids, attention_mask, token_type_ids)
        return self.text_projection(text_pooled_output)

    def load_image_tower(self, pretrained_model_name_or_path) -> None:
        """Fill the EfficientNet-Lite tower with the weights of a saved `EfficientNetLiteModel` folder (e.g. the
        ImageNet Lite0 converted by `modeling.evaluation.baselines.efficientnet_lite0_folder`); every weight of
        the tower must come from it."""
        if not isinstance(self.vision_model, EfficientNetLiteVisionTower):
            raise ValueError(f"load_image_tower needs the efficientnet-lite0 tower, not {self.config.image_tower!r}")
        from .modeling_efficientnet_lite import EfficientNetLiteModel

        pretrained = EfficientNetLiteModel.from_pretrained(pretrained_model_name_or_path)
        self.vision_model.encoder.load_state_dict(pretrained.encoder.state_dict(), strict=True)

    def encode_image_backbone(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled output before the projection (what a frozen tower lets training cache)."""
        return self.vision_model(pixel_values)

    def get_image_features(self, pixel_values: torch.Tensor | None = None,
                           image_pooled_output: torch.Tensor | None = None) -> torch.FloatTensor:
        """Projected, unnormalised image embeddings `(batch, projection_dim)`. `image_pooled_output` (from
        `encode_image_backbone`) skips the image tower."""
        if image_pooled_output is None:
            if pixel_values is None:
                raise ValueError("get_image_features needs pixel_values or image_pooled_output")
            image_pooled_output = self.vision_model(pixel_values)
        return self.visual_projection(image_pooled_output)

    def add_combiner(self, hidden_size: int, dropout: float = 0.1) -> Combiner:
        """Give a trained model a fresh learned combiner (second-stage composed training); recorded in the config
        so `save_pretrained`/`from_pretrained` keep it."""
        self.config.combiner_hidden_size, self.config.combiner_dropout = int(hidden_size), float(dropout)
        self.combiner = Combiner(self.config.projection_dim, hidden_size, dropout)
        return self.combiner

    def get_composed_features(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        text_pooled_output: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        method: str | None = None,
        text_weight: float | None = None,
    ) -> torch.FloatTensor:
        """Unnormalised composed query `(batch, projection_dim)` of a reference image and a modification text.

        Either side may be given precomputed (`image_embeds`, `text_embeds`). `method` is `"sum"` (weighted sum
        with `text_weight`, default `config.composition_text_weight`) or `"combiner"` (the learned combiner);
        by default the combiner when the model has one.
        """
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("get_composed_features needs pixel_values or image_embeds")
            image_embeds = self.get_image_features(pixel_values)
        if text_embeds is None:
            text_embeds = self.get_text_features(input_ids, attention_mask, token_type_ids, text_pooled_output)
        method = method or ("combiner" if self.combiner is not None else "sum")
        weight = self.config.composition_text_weight if text_weight is None else text_weight
        return compose(image_embeds, text_embeds, method, weight, self.combiner)

    def predict_attributes(self, image_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class probabilities `(batch, num_values)` of every attribute head (values in `config.attribute_labels`)."""
        normalised = F.normalize(image_embeds, dim=-1)
        return {name: head(normalised).softmax(-1) for name, head in self.attribute_heads.items()}

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        text_pooled_output: torch.Tensor | None = None,
        positive_mask: torch.Tensor | None = None,
        attribute_targets: torch.Tensor | None = None,
        image_positive_mask: torch.Tensor | None = None,
        image_memory_embeds: torch.Tensor | None = None,
        image_memory_positive_mask: torch.Tensor | None = None,
        image_pooled_output: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> DualEncoderOutput:
        r"""
        positive_mask (`torch.Tensor` of shape `(batch, batch)`, *optional*):
            `[i, j]` true when text i describes image j (defaults to the diagonal).
        attribute_targets (`torch.LongTensor` of shape `(batch, num_attributes)`, *optional*):
            Class index per attribute head, in `config.attribute_labels` order; -100 where unknown.
        image_positive_mask (`torch.Tensor` of shape `(batch, batch)`, *optional*):
            `[i, j]` true when images i and j share a label (e.g. articleType); adds the image-image supervised
            contrastive loss weighted by `config.image_supcon_weight`.
        image_memory_embeds (`torch.Tensor` of shape `(memory, projection_dim)`, *optional*):
            Normalised image embeddings of earlier batches (no gradient), extra candidates of that loss.
        image_memory_positive_mask (`torch.Tensor` of shape `(batch, memory)`, *optional*):
            `[i, m]` true when image i and memory entry m share a label.
        image_pooled_output (`torch.Tensor` of shape `(batch, tower features)`, *optional*):
            The image tower's pooled output (`encode_image_backbone`), in place of `pixel_values`.
        """
        image_embeds = F.normalize(self.get_image_features(pixel_values, image_pooled_output), dim=-1)
        text_embeds = F.normalize(
            self.get_text_features(input_ids, attention_mask, token_type_ids, text_pooled_output), dim=-1
        )
        logits_per_text = self.logit_scale.exp() * text_embeds @ image_embeds.t()
        attribute_logits = {name: head(image_embeds) for name, head in self.attribute_heads.items()}

        loss = contrastive = attribute_loss = supcon = None
        if return_loss:
            contrastive = dual_encoder_loss(logits_per_text, positive_mask)
            loss = contrastive
            if attribute_targets is not None and attribute_logits:
                attribute_loss = attribute_heads_loss(list(attribute_logits.values()), attribute_targets)
                if attribute_loss is not None:
                    loss = loss + self.config.attribute_loss_weight * attribute_loss
            if image_positive_mask is not None and self.config.image_supcon_weight > 0:
                supcon = supervised_contrastive_loss(image_embeds, image_positive_mask,
                                                     memory_embeds=image_memory_embeds,
                                                     memory_positive_mask=image_memory_positive_mask)
                loss = loss + self.config.image_supcon_weight * supcon
        return DualEncoderOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            attribute_logits=attribute_logits or None,
            contrastive_loss=contrastive,
            attribute_loss=attribute_loss,
            supcon_loss=supcon,
        )


__all__ = ["DualEncoderModel", "DualEncoderPreTrainedModel", "EfficientNetLiteVisionTower", "DualEncoderOutput", "dual_encoder_loss",
           "supervised_contrastive_loss"]
