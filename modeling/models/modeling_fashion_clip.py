"""CLIP with LoRA adapters on both towers, plus an optional learned combiner for composed (image + text) queries.

The base CLIP stays frozen: only the LoRA matrices, the combiner and the logit scale train, and only they are saved.
A saved folder holds `config.json` and `adapter_model.safetensors` (9 MB for ViT-B/32 with the default combiner,
2 MB of it LoRA) and names the base CLIP it adapts (`config.base_model_name_or_path`, a Hub id or a local folder),
which `from_pretrained` loads first.

Imports only its own configuration, `composition.py`, `losses.py`, transformers, peft and torch (plus safetensors, a hard
dependency of transformers) so the file can later travel to the Hub and load with `trust_remote_code`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import CLIPModel, PreTrainedConfig, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.initialization import no_init_weights
from transformers.utils import ADAPTER_SAFE_WEIGHTS_NAME, ModelOutput, cached_file, logging

from .composition import Combiner, compose
from .losses import contrastive_loss, symmetric_infonce
from .configuration_fashion_clip import FashionClipConfig

logger = logging.get_logger(__name__)

# Set while `from_pretrained` / `from_clip_pretrained` build a model whose base CLIP weights are about to be
# overwritten: random init of ViT-B/32 costs seconds on CPU for nothing. LoRA and the combiner still initialise.
_SKIP_BASE_INIT = contextvars.ContextVar("fashion_clip_skip_base_init", default=False)

# Keyword arguments that `AutoModel.from_pretrained` (or habit) passes and that mean nothing for an adapter folder.
_IGNORED_LOAD_KWARGS = ("_from_auto", "_from_pipeline", "trust_remote_code", "adapter_kwargs", "code_revision",
                        "use_safetensors", "weights_only", "low_cpu_mem_usage", "proxies", "disable_mmap",
                        "ignore_mismatched_sizes")


@dataclass
class FashionClipOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        `contrastive_loss` + `config.composed_loss_weight * composed_loss` (whichever parts the inputs allow).
    logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`, *optional*):
        Scaled cosine similarities between image and text embeddings.
    logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`, *optional*):
        The transpose of `logits_per_image`.
    logits_per_composed (`torch.FloatTensor` of shape `(batch_size, target_batch_size)`, *optional*):
        Scaled cosine similarities between composed queries and target images.
    text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        L2-normalised text embeddings.
    image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        L2-normalised image embeddings.
    composed_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        L2-normalised composed queries (reference image + modification text).
    target_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        L2-normalised embeddings of the target images.
    contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*): symmetric image-text InfoNCE.
    composed_loss (`torch.FloatTensor` of shape `()`, *optional*): InfoNCE of composed queries against targets.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_composed: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    composed_embeds: torch.FloatTensor | None = None
    target_embeds: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    composed_loss: torch.FloatTensor | None = None


fashion_clip_loss = symmetric_infonce  # the dual encoder's objective: symmetric multi-positive InfoNCE (losses.py)


def lora_target_pattern(target_modules: list[str] | str) -> str:
    """The regex peft matches (with `re.fullmatch`) against module names of the `CLIPModel`: a list of layer names is
    confined to the encoder blocks of both towers; a string is already a regex and is returned as is."""
    if isinstance(target_modules, str):
        return target_modules
    names = "|".join(re.escape(name) for name in target_modules)
    return rf"^(?:text_model|vision_model)\.encoder\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})$"


class FashionClipPreTrainedModel(PreTrainedModel):
    config_class = FashionClipConfig
    config: FashionClipConfig
    base_model_prefix = "fashion_clip"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        # Nothing to do: the CLIPModel initialises itself (its own `_init_weights`, or pretrained weights), the
        # Combiner keeps PyTorch's default init, LoRA keeps peft's (A Kaiming-uniform, B zero: the adapted model
        # starts equal to the base).
        pass


class FashionClipModel(FashionClipPreTrainedModel):
    r"""
    A [`~transformers.CLIPModel`] with LoRA adapters (peft) on both towers and an optional learned
    [`~modeling.models.composition.Combiner`], for text-to-image, image-to-image and composed (image + modification
    text) retrieval. The base CLIP weights are frozen; only the adapters, the combiner and (by default) the logit
    scale train, and [`~FashionClipModel.save_pretrained`] writes only those.

    The constructor builds a randomly initialised CLIP from `config.clip_config`. Use
    [`~FashionClipModel.from_clip_pretrained`] to start training from a pretrained CLIP and
    [`~FashionClipModel.from_pretrained`] (or `AutoModel.from_pretrained` once `modeling` is imported) to load a
    saved adapter folder.

    Args:
        config ([`FashionClipConfig`]): the model configuration.
    """

    def __init__(self, config: FashionClipConfig):
        super().__init__(config)
        self.combiner = None
        if config.combiner_hidden_size > 0:  # PyTorch default init, as in CLIP4Cir
            self.combiner = Combiner(config.clip_config.projection_dim, config.combiner_hidden_size,
                                     config.combiner_dropout)
        base_init = no_init_weights() if _SKIP_BASE_INIT.get() else contextlib.nullcontext()
        with base_init:
            self.clip = CLIPModel(config.clip_config)
            self.post_init()
        if config.logit_scale_init_value is not None:
            with torch.no_grad():
                self.clip.logit_scale.fill_(float(config.logit_scale_init_value))
        # Adapters go in after post_init so no generic init ever touches LoRA's zero-initialised B matrices.
        if config.lora_rank > 0:
            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=lora_target_pattern(config.lora_target_modules),
                bias="none",
            )
            self.clip = inject_adapter_in_model(lora, self.clip)
        self._set_trainable()

    def _set_trainable(self):
        """Freeze the base CLIP; train LoRA, the combiner and (if `config.train_logit_scale`) the logit scale."""
        for name, param in self.named_parameters():
            param.requires_grad = (
                "lora_" in name
                or name.startswith("combiner.")
                or (name == "clip.logit_scale" and self.config.train_logit_scale)
            )

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        """Log inverse temperature of the similarity logits (CLIP's, trained with the adapters)."""
        return self.clip.logit_scale

    # ------------------------------------------------------------------------------------------------ features

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.FloatTensor:
        r"""
        Projected, unnormalised text embeddings.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): CLIP tokenizer ids (each sequence
                must contain the EOS token, whose final hidden state is pooled).
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for real tokens.
            position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*).

        Returns:
            `torch.FloatTensor` of shape `(batch_size, projection_dim)`.
        """
        # transformers 5 returns the tower's output with `pooler_output` replaced by the projected embedding.
        return self.clip.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).pooler_output

    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.FloatTensor:
        r"""
        Projected, unnormalised image embeddings.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): CLIP-normalised
                images (e.g. from [`~transformers.CLIPImageProcessor`]).
            interpolate_pos_encoding (`bool`, *optional*, defaults to `False`): allow other image sizes.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, projection_dim)`.
        """
        return self.clip.get_image_features(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding
        ).pooler_output

    def get_composed_features(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        method: str | None = None,
        text_weight: float | None = None,
    ) -> torch.FloatTensor:
        r"""
        Composed query of a reference image and a modification text (unnormalised; normalise before searching).

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
                Reference images; not needed when `image_embeds` is given.
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Modification texts; not needed when `text_embeds` is given.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*).
            image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
                Precomputed reference image embeddings (normalised or not).
            text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
                Precomputed modification text embeddings (normalised or not).
            method (`str`, *optional*): `"combiner"` or `"sum"`; defaults to `config.composition_method`.
                `"combiner"` raises a `ValueError` when the model has no combiner.
            text_weight (`float`, *optional*): text weight of the `"sum"` method, in [0, 1]; defaults to
                `config.composition_text_weight`.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, projection_dim)`.
        """
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("get_composed_features needs pixel_values or image_embeds")
            image_embeds = self.get_image_features(pixel_values)
        if text_embeds is None:
            if input_ids is None:
                raise ValueError("get_composed_features needs input_ids or text_embeds")
            text_embeds = self.get_text_features(input_ids, attention_mask)
        method = method or self.config.composition_method
        text_weight = self.config.composition_text_weight if text_weight is None else text_weight
        return compose(image_embeds, text_embeds, method=method, text_weight=text_weight, combiner=self.combiner)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positive_mask: torch.Tensor | None = None,
        reference_pixel_values: torch.Tensor | None = None,
        modification_input_ids: torch.Tensor | None = None,
        modification_attention_mask: torch.Tensor | None = None,
        target_pixel_values: torch.Tensor | None = None,
        return_loss: bool | None = None,
        composed_positive_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> FashionClipOutput:
        r"""
        Image-text matching and, when triplets are given, composed retrieval. Every part is optional: texts alone give
        `text_embeds`, images alone `image_embeds`, both give the logits and the contrastive loss, and
        reference/modification (+ target) give the composed queries (+ the composed loss).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): texts.
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*): images.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*).
            positive_mask (`torch.Tensor` of shape `(text_batch_size, image_batch_size)`, *optional*):
                `[i, j]` true when text i describes image j (defaults to the diagonal).
            reference_pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`,
                *optional*): reference images of composed queries.
            modification_input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Modification texts of composed queries.
            modification_attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*).
            target_pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
                Target images: query i should retrieve target i among the batch's targets.
            return_loss (`bool`, *optional*): compute the loss.
            composed_positive_mask (`torch.Tensor` of shape `(batch_size, target_batch_size)`, *optional*):
                `[i, j]` true when target j satisfies composed query i (defaults to the diagonal).

        The composed queries use the combiner when the model has one (that is what the composed loss trains), else the
        weighted sum with `config.composition_text_weight`, whatever `config.composition_method` says.
        """
        text_embeds = image_embeds = composed_embeds = target_embeds = None
        logits_per_text = logits_per_composed = None
        logit_scale = self.clip.logit_scale.exp().clamp(max=100.0)  # CLIP's cap on the inverse temperature

        if input_ids is not None:
            text_embeds = F.normalize(self.get_text_features(input_ids, attention_mask), dim=-1)
        if pixel_values is not None:
            image_embeds = F.normalize(self.get_image_features(pixel_values), dim=-1)
        if text_embeds is not None and image_embeds is not None:
            logits_per_text = logit_scale * text_embeds @ image_embeds.t()

        if reference_pixel_values is not None and modification_input_ids is not None:
            composed = self.get_composed_features(
                pixel_values=reference_pixel_values,
                input_ids=modification_input_ids,
                attention_mask=modification_attention_mask,
                method="combiner" if self.combiner is not None else "sum",
            )
            composed_embeds = F.normalize(composed, dim=-1)
            if target_pixel_values is not None:
                target_embeds = F.normalize(self.get_image_features(target_pixel_values), dim=-1)
                logits_per_composed = logit_scale * composed_embeds @ target_embeds.t()

        loss = contrastive = composed_loss = None
        if return_loss:
            if logits_per_text is None and logits_per_composed is None:
                raise ValueError("return_loss needs input_ids + pixel_values and/or reference_pixel_values + "
                                 "modification_input_ids + target_pixel_values")
            if logits_per_text is not None:
                contrastive = fashion_clip_loss(logits_per_text, positive_mask)
                loss = contrastive
            if logits_per_composed is not None:
                composed_loss = contrastive_loss(logits_per_composed, composed_positive_mask)
                weighted = self.config.composed_loss_weight * composed_loss
                loss = weighted if loss is None else loss + weighted

        return FashionClipOutput(
            loss=loss,
            logits_per_image=None if logits_per_text is None else logits_per_text.t(),
            logits_per_text=logits_per_text,
            logits_per_composed=logits_per_composed,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            composed_embeds=composed_embeds,
            target_embeds=target_embeds,
            contrastive_loss=contrastive,
            composed_loss=composed_loss,
        )

    # --------------------------------------------------------------------------------------- adapter weights

    def adapter_state_dict(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        r"""
        The weights a saved folder holds: LoRA (`clip.<module>.lora_A.weight`, peft's keys without the adapter name),
        the combiner (`combiner.*`) and `clip.logit_scale`. Never any base CLIP weight.

        Args:
            state_dict (`dict[str, torch.Tensor]`, *optional*): a full `self.state_dict()` to pick from (e.g. one
                gathered by a distributed trainer); defaults to the model's own.
        """
        if state_dict is None:
            state_dict = self.state_dict()
        clip_state = {key[len("clip."):]: value for key, value in state_dict.items() if key.startswith("clip.")}
        adapter = {}
        if self.config.lora_rank > 0:
            lora = get_peft_model_state_dict(self.clip, state_dict=clip_state, save_embedding_layers=False)
            adapter.update({f"clip.{key}": value for key, value in lora.items()})
        adapter["clip.logit_scale"] = clip_state["logit_scale"]
        adapter.update({key: value for key, value in state_dict.items() if key.startswith("combiner.")})
        return {key: value.detach().contiguous() for key, value in adapter.items()}

    def load_adapter_state_dict(self, adapter: dict[str, torch.Tensor]) -> None:
        """Load what [`~FashionClipModel.adapter_state_dict`] returns; every adapter weight must be present."""
        adapter = dict(adapter)
        with torch.no_grad():
            self.clip.logit_scale.copy_(adapter.pop("clip.logit_scale"))
        combiner = {key[len("combiner."):]: adapter.pop(key) for key in list(adapter) if key.startswith("combiner.")}
        if self.combiner is not None:
            self.combiner.load_state_dict(combiner)
        elif combiner:
            raise ValueError("the adapter file holds combiner weights but config.combiner_hidden_size is 0")
        lora = {key[len("clip."):]: value for key, value in adapter.items() if key.startswith("clip.")}
        unknown = [key for key in adapter if not key.startswith("clip.")]
        if unknown:
            raise ValueError(f"unexpected keys in the adapter file: {unknown[:5]}")
        if self.config.lora_rank > 0:
            result = set_peft_model_state_dict(self.clip, lora)
            missing = [key for key in result.missing_keys if "lora_" in key]
            if missing or result.unexpected_keys:
                raise ValueError(f"LoRA weights do not match the model: missing {missing[:5]}, "
                                 f"unexpected {list(result.unexpected_keys)[:5]}")
        elif lora:
            raise ValueError("the adapter file holds LoRA weights but config.lora_rank is 0")

    def _load_base_state_dict(self, base_state_dict: dict[str, torch.Tensor]) -> None:
        """Put a plain `CLIPModel` state dict into the adapted CLIP (peft renames adapted layers' weights to
        `<module>.base_layer.weight`)."""
        own_state = self.clip.state_dict()
        own = {key.replace(".base_layer.", "."): key for key in own_state if "lora_" not in key}
        unexpected = [key for key in base_state_dict if key not in own]
        missing = [key for key in own if key not in base_state_dict]
        if unexpected or missing:
            raise ValueError(f"base CLIP does not match config.clip_config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        renamed = {own[key]: value.to(own_state[own[key]].dtype) for key, value in base_state_dict.items()}
        # assign=True takes the loaded tensors over instead of copying 600 MB into freshly allocated ones.
        result = self.clip.load_state_dict(renamed, strict=False, assign=True)
        assert all("lora_" in key for key in result.missing_keys), result.missing_keys
        self._set_trainable()

    @classmethod
    def _from_base(cls, config: FashionClipConfig, base: CLIPModel) -> FashionClipModel:
        """Build the model around the weights of a loaded base CLIP (without randomly initialising them first)."""
        token = _SKIP_BASE_INIT.set(True)
        try:
            model = cls(config)
        finally:
            _SKIP_BASE_INIT.reset(token)
        model._load_base_state_dict(base.state_dict())
        return model

    # ------------------------------------------------------------------------------------------ save and load

    @classmethod
    def from_clip_pretrained(
        cls,
        base_model_name_or_path: str | os.PathLike,
        base_model_kwargs: dict | None = None,
        **config_kwargs,
    ) -> FashionClipModel:
        r"""
        A new trainable model: a pretrained CLIP (frozen) with fresh LoRA adapters and combiner.

        Args:
            base_model_name_or_path (`str` or `os.PathLike`): Hub id or local folder of a [`~transformers.CLIPModel`];
                stored as `config.base_model_name_or_path`.
            base_model_kwargs (`dict`, *optional*): passed to `CLIPModel.from_pretrained` (e.g. `revision`,
                `cache_dir`, `local_files_only`).
            config_kwargs: the other [`FashionClipConfig`] arguments (`lora_rank`, `combiner_hidden_size`, ...).

        Returns:
            [`FashionClipModel`] in training mode.
        """
        base = CLIPModel.from_pretrained(base_model_name_or_path, **(base_model_kwargs or {}))
        config = FashionClipConfig(
            clip_config=base.config.to_dict(), base_model_name_or_path=str(base_model_name_or_path), **config_kwargs
        )
        model = cls._from_base(config, base)
        if config.logit_scale_init_value is not None:
            with torch.no_grad():
                model.clip.logit_scale.fill_(float(config.logit_scale_init_value))
        return model.train()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        config: FashionClipConfig | str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        subfolder: str = "",
        base_model_name_or_path: str | os.PathLike | None = None,
        base_model_kwargs: dict | None = None,
        dtype: torch.dtype | str | None = None,
        device_map: str | torch.device | None = None,
        **kwargs,
    ) -> FashionClipModel:
        r"""
        Load a saved adapter folder: the base CLIP named by `config.base_model_name_or_path`, then the adapters.
        `AutoModel.from_pretrained` ends here once `modeling` is imported.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): folder (or Hub id) written by
                [`~FashionClipModel.save_pretrained`]: `config.json` + `adapter_model.safetensors`.
            config ([`FashionClipConfig`], `str` or `os.PathLike`, *optional*): a config (or where to read one) to use
                instead of the folder's.
            cache_dir, force_download, local_files_only, token: Hub options, used for the adapter folder and the base.
            revision (`str`, *optional*), subfolder (`str`, *optional*): where in the adapter repository to read (not
                applied to the base; pass `base_model_kwargs={"revision": ...}` for that).
            base_model_name_or_path (`str` or `os.PathLike`, *optional*): load the base CLIP from here instead of
                `config.base_model_name_or_path` (e.g. a local copy); the config is updated.
            base_model_kwargs (`dict`, *optional*): more arguments for `CLIPModel.from_pretrained` of the base.
            dtype (`torch.dtype` or `str`, *optional*): cast the loaded model (`"auto"`/`None`: keep float32).
            device_map (`str` or `torch.device`, *optional*): a single device to move the model to (`"auto"`: CUDA
                when available).
            kwargs: attributes of the config to override (e.g. `composition_method="sum"`).

        Returns:
            [`FashionClipModel`] in evaluation mode.
        """
        if model_args:
            raise TypeError("FashionClipModel.from_pretrained takes no extra positional arguments")
        for key in _IGNORED_LOAD_KWARGS:
            kwargs.pop(key, None)
        dtype = dtype if dtype is not None else kwargs.pop("torch_dtype", None)
        hub_kwargs = {"cache_dir": cache_dir, "force_download": force_download,
                      "local_files_only": local_files_only, "token": token}
        # Any PreTrainedConfig, not just this module's FashionClipConfig: with trust_remote_code the config class may
        # come from another copy of this file.
        if not isinstance(config, PreTrainedConfig):
            config, kwargs = FashionClipConfig.from_pretrained(
                config if config is not None else pretrained_model_name_or_path,
                revision=revision, subfolder=subfolder, return_unused_kwargs=True, **hub_kwargs, **kwargs,
            )
        else:
            config = copy.deepcopy(config)
            for key in [key for key in kwargs if hasattr(config, key)]:
                setattr(config, key, kwargs.pop(key))
        if kwargs:
            raise TypeError(f"unexpected keyword arguments for FashionClipModel.from_pretrained: {sorted(kwargs)}")
        if base_model_name_or_path is not None:
            config.base_model_name_or_path = str(base_model_name_or_path)

        adapter_file = cached_file(pretrained_model_name_or_path, ADAPTER_SAFE_WEIGHTS_NAME, revision=revision,
                                   subfolder=subfolder, **hub_kwargs)
        base = CLIPModel.from_pretrained(config.base_model_name_or_path, **{**hub_kwargs, **(base_model_kwargs or {})})
        model = cls._from_base(config, base)
        del base
        model.load_adapter_state_dict(load_file(adapter_file))
        model.config.name_or_path = str(pretrained_model_name_or_path)
        if dtype not in (None, "auto"):
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        if device_map is not None:
            if isinstance(device_map, dict):
                raise ValueError("FashionClipModel supports only a single device as device_map")
            if device_map == "auto":
                device_map = "cuda" if torch.cuda.is_available() else "cpu"
            model.to(device_map)
        return model.eval()

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        push_to_hub: bool = False,
        safe_serialization: bool = True,
        token: str | bool | None = None,
        max_shard_size: int | str | None = None,
        **kwargs,
    ):
        r"""
        Write `config.json` and `adapter_model.safetensors` (LoRA, combiner and logit scale; never the base CLIP, never
        pickle). Load it back with [`~FashionClipModel.from_pretrained`], which needs the base CLIP named by
        `config.base_model_name_or_path`.

        Args:
            save_directory (`str` or `os.PathLike`): created if missing.
            is_main_process (`bool`, *optional*, defaults to `True`): only the main process writes.
            state_dict (`dict[str, torch.Tensor]`, *optional*): a full state dict to take the adapter weights from.
            push_to_hub (`bool`, *optional*, defaults to `False`): also upload the folder to the Hub (`repo_id`,
                `commit_message`, `create_pr`, `private` are read from `kwargs`).
            safe_serialization (`bool`, *optional*, defaults to `True`): must stay `True` (safetensors only).
            token (`str` or `bool`, *optional*): Hub token for `push_to_hub`.
            max_shard_size: ignored (the adapter file is never sharded); accepted for API compatibility.
        """
        if not safe_serialization:
            raise ValueError("FashionClipModel saves safetensors only (safe_serialization=False is not supported)")
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory should be a directory, got a file: {save_directory}")
        if is_main_process:
            os.makedirs(save_directory, exist_ok=True)
            if self._auto_class is not None:  # registered for the Hub: copy the code next to the weights
                custom_object_save(self, save_directory, config=self.config)
            self.config.architectures = [self.__class__.__name__]
            self.config.dtype = str(self.dtype).split(".")[1]
            self.config.save_pretrained(save_directory)
            save_file(self.adapter_state_dict(state_dict), os.path.join(save_directory, ADAPTER_SAFE_WEIGHTS_NAME),
                      metadata={"format": "pt"})
            if push_to_hub:
                repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
                self.push_to_hub(repo_id, token=token, commit_message=kwargs.pop("commit_message", None),
                                 create_pr=kwargs.pop("create_pr", False), private=kwargs.pop("private", None))

    # -------------------------------------------------------------------------------------------------- export

    def merge_and_unload(self) -> CLIPModel:
        r"""
        A plain [`~transformers.CLIPModel`] with the LoRA updates merged into its weights (and the trained logit
        scale), for export or for tools that know CLIP only. Its embeddings equal this model's; the combiner is not
        part of it. This model is left unchanged (the CLIP is copied).
        """
        merged = copy.deepcopy(self.clip)
        for name, module in list(merged.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge(safe_merge=True)
                parent, _, child = name.rpartition(".")
                setattr(merged.get_submodule(parent), child, module.get_base_layer())
        merged.__dict__.pop("peft_config", None)  # set by inject_adapter_in_model
        for param in merged.parameters():
            param.requires_grad_(True)
        return merged


__all__ = ["FashionClipModel", "FashionClipOutput", "FashionClipPreTrainedModel", "contrastive_loss",
           "fashion_clip_loss", "lora_target_pattern"]
