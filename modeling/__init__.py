"""Multimodal fashion search: models, catalog data, index and search engine."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .configuration_dual_encoder import DEFAULT_TEXT_MODEL, DualEncoderConfig
from .image_processing_dual_encoder import DualEncoderImageProcessor
from .modeling_dual_encoder import DualEncoderModel, DualEncoderOutput

AutoConfig.register(DualEncoderConfig.model_type, DualEncoderConfig, exist_ok=True)
AutoModel.register(DualEncoderConfig, DualEncoderModel, exist_ok=True)
AutoImageProcessor.register(DualEncoderConfig, slow_image_processor_class=DualEncoderImageProcessor, exist_ok=True)

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "DualEncoderConfig",
    "DualEncoderImageProcessor",
    "DualEncoderModel",
    "DualEncoderOutput",
]
