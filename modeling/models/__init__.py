"""The models: configurations, modeling files, processors, composition and losses (flat: a pushed model's remote
code is this one folder). Importing this package registers the models with the transformers Auto classes."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, CLIPImageProcessorPil

from .configuration_dual_encoder import DEFAULT_TEXT_MODEL, DualEncoderConfig
from .configuration_fashion_clip import DEFAULT_CLIP_MODEL, FashionClipConfig
from .configuration_efficientnet_lite import EfficientNetLiteConfig
from .configuration_fashion_vae import FashionVaeConfig
from .image_processing_dual_encoder import DualEncoderImageProcessor
from .modeling_dual_encoder import DualEncoderModel, DualEncoderOutput
from .modeling_efficientnet_lite import EfficientNetLiteModel, EfficientNetLiteOutput
from .modeling_fashion_clip import FashionClipModel, FashionClipOutput
from .modeling_fashion_vae import FashionVaeModel, FashionVaeOutput
from .processing_fashion_search import FashionSearchProcessor
from .vae_utils import reconstruction_grid

AutoConfig.register(DualEncoderConfig.model_type, DualEncoderConfig, exist_ok=True)
AutoModel.register(DualEncoderConfig, DualEncoderModel, exist_ok=True)
AutoImageProcessor.register(DualEncoderConfig, slow_image_processor_class=DualEncoderImageProcessor, exist_ok=True)
AutoConfig.register(FashionClipConfig.model_type, FashionClipConfig, exist_ok=True)
AutoModel.register(FashionClipConfig, FashionClipModel, exist_ok=True)
# transformers' CLIPImageProcessor needs torchvision; its PIL backend is the same preprocessing.
AutoImageProcessor.register(FashionClipConfig, slow_image_processor_class=CLIPImageProcessorPil, exist_ok=True)
AutoConfig.register(FashionVaeConfig.model_type, FashionVaeConfig, exist_ok=True)
AutoModel.register(FashionVaeConfig, FashionVaeModel, exist_ok=True)
AutoImageProcessor.register(FashionVaeConfig, slow_image_processor_class=DualEncoderImageProcessor, exist_ok=True)
# EfficientNet-Lite: letterboxing into its (larger) frame with its own mean/std, the same processor class.
AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteModel, exist_ok=True)
AutoImageProcessor.register(EfficientNetLiteConfig, slow_image_processor_class=DualEncoderImageProcessor,
                            exist_ok=True)

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_TEXT_MODEL",
    "DualEncoderConfig",
    "DualEncoderImageProcessor",
    "DualEncoderModel",
    "DualEncoderOutput",
    "EfficientNetLiteConfig",
    "EfficientNetLiteModel",
    "EfficientNetLiteOutput",
    "FashionClipConfig",
    "FashionClipModel",
    "FashionClipOutput",
    "FashionVaeConfig",
    "FashionVaeModel",
    "FashionVaeOutput",
    "FashionSearchProcessor",
    "reconstruction_grid",
]
