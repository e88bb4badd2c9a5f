"""Configuration of CLIP with LoRA adapters (and an optional learned combiner for composed queries)."""

from __future__ import annotations

from transformers import CLIPConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .composition import COMPOSITION_METHODS

# The base CLIP that `FashionClipModel.from_clip_pretrained` starts from by default (Hub id; a local folder works too).
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"

# Names of CLIP's attention projections that receive LoRA adapters by default (peft has no default mapping for CLIP).
DEFAULT_LORA_TARGET_MODULES = ["q_proj", "v_proj"]


class FashionClipConfig(PreTrainedConfig):
    r"""
    Configuration of [`FashionClipModel`]: a [`~transformers.CLIPModel`] whose text and vision towers carry LoRA
    adapters, plus an optional learned [`~modeling.models.composition.Combiner`] that fuses a reference image with a
    modification text into one composed query.

    Only the adapters, the combiner and the logit scale are trained and saved; the base CLIP weights are loaded from
    `base_model_name_or_path` every time the model is loaded.

    Args:
        clip_config (`dict` or [`~transformers.CLIPConfig`], *optional*):
            Architecture of the base CLIP (e.g. `CLIPConfig(text_config=..., vision_config=..., projection_dim=...)`).
            Defaults to `CLIPConfig()`, the shape of `openai/clip-vit-base-patch32`.
        base_model_name_or_path (`str`, *optional*, defaults to `"openai/clip-vit-base-patch32"`):
            Hub id or local folder of the pretrained [`~transformers.CLIPModel`] the adapters were trained on.
            `FashionClipModel.from_pretrained` loads it before applying the saved adapters, so it must match
            `clip_config`.
        lora_rank (`int`, *optional*, defaults to 8):
            Rank of the LoRA update matrices. 0 disables LoRA (frozen CLIP; only the combiner and logit scale train).
        lora_alpha (`int`, *optional*, defaults to 16):
            LoRA scaling numerator (the update is scaled by `lora_alpha / lora_rank`).
        lora_dropout (`float`, *optional*, defaults to 0.05):
            Dropout on the input of the LoRA path.
        lora_target_modules (`list[str]` or `str`, *optional*, defaults to `["q_proj", "v_proj"]`):
            Which linear layers receive adapters. A list names layers of the encoder blocks of **both** towers
            (`q_proj`, `k_proj`, `v_proj`, `out_proj` in `self_attn`; `fc1`, `fc2` in `mlp`): it is turned into the
            regex `^(?:text_model|vision_model)\.encoder\.layers\.\d+\.(?:self_attn|mlp)\.(?:q_proj|v_proj)$`, so the
            projection heads and embeddings are never adapted. A string is passed to peft as is: a regex fully matched
            against module names relative to the [`~transformers.CLIPModel`] (e.g. `"text_model.*(q_proj|v_proj)"`
            for the text tower only).
        train_logit_scale (`bool`, *optional*, defaults to `True`):
            Whether the logit scale (log inverse temperature) trains along with the adapters (it is saved either way).
        logit_scale_init_value (`float`, *optional*):
            Log inverse temperature a new model starts from. `None` keeps the base CLIP's (ln 100 = 4.6052 for the
            OpenAI checkpoints; `clip_config.logit_scale_init_value` for a randomly initialised CLIP). Ignored when
            loading a saved model, whose adapter file holds the trained value.
        combiner_hidden_size (`int`, *optional*, defaults to 512):
            Hidden size of the learned [`~modeling.models.composition.Combiner`]; 0 builds no combiner (composed
            queries are then a weighted sum of the normalised image and text embeddings).
        combiner_dropout (`float`, *optional*, defaults to 0.1): dropout inside the combiner.
        composition_method (`str`, *optional*):
            Default method of [`FashionClipModel.get_composed_features`]: `"combiner"` or `"sum"`. `None` resolves to
            `"combiner"` when `combiner_hidden_size > 0`, else `"sum"`. A training run that never trains the combiner
            (no composed triplets) should set `"sum"` (or `combiner_hidden_size=0`).
        composition_text_weight (`float`, *optional*, defaults to 0.5):
            Default weight of the text in the `"sum"` method, in [0, 1] (0: the image alone, 1: the text alone).
        composed_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the composed-retrieval loss when it is added to the image-text contrastive loss.

    Example:

    ```python
    >>> from transformers import CLIPConfig
    >>> from modeling import FashionClipConfig, FashionClipModel

    >>> tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}
    >>> clip_config = CLIPConfig(text_config=tower, vision_config={**tower, "image_size": 30, "patch_size": 2},
    ...                          projection_dim=16)
    >>> config = FashionClipConfig(clip_config=clip_config, lora_rank=4, combiner_hidden_size=32)
    >>> model = FashionClipModel(config)  # random CLIP weights; see `FashionClipModel.from_clip_pretrained`
    ```
    """

    model_type = "fashion_clip"
    sub_configs_defaults = {"clip_config": SubConfigSpec(CLIPConfig)}

    clip_config: dict | CLIPConfig | None = None
    base_model_name_or_path: str = DEFAULT_CLIP_MODEL
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str | None = None
    train_logit_scale: bool = True
    logit_scale_init_value: float | None = None
    combiner_hidden_size: int = 512
    combiner_dropout: float = 0.1
    composition_method: str | None = None
    composition_text_weight: float = 0.5
    composed_loss_weight: float = 1.0

    def __post_init__(self, **kwargs):
        # Mutable defaults are filled here rather than as dataclass defaults, so configs never share a list.
        if self.lora_target_modules is None:
            self.lora_target_modules = list(DEFAULT_LORA_TARGET_MODULES)
        if self.composition_method is None:
            self.composition_method = "combiner" if self.combiner_hidden_size > 0 else "sum"
        if self.composition_method not in COMPOSITION_METHODS:
            raise ValueError(f"composition_method must be one of {COMPOSITION_METHODS}, "
                             f"got {self.composition_method!r}")
        if self.composition_method == "combiner" and self.combiner_hidden_size <= 0:
            raise ValueError("composition_method='combiner' needs combiner_hidden_size > 0")
        if not 0.0 <= float(self.composition_text_weight) <= 1.0:
            raise ValueError(f"composition_text_weight must be in [0, 1], got {self.composition_text_weight}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module")
        super().__post_init__(**kwargs)


__all__ = ["DEFAULT_CLIP_MODEL", "DEFAULT_LORA_TARGET_MODULES", "FashionClipConfig"]
