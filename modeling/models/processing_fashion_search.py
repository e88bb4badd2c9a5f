"""One processor for text and images: the tokenizer and the image processor of a model folder, together.

`AutoProcessor.from_pretrained(folder_or_repo, trust_remote_code=True)` gives a [`FashionSearchProcessor`] whose
call turns texts and/or images into exactly the inputs of `get_text_features` / `get_image_features`, so nobody
re-implements the preprocessing the model was trained with.
"""

from __future__ import annotations

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin


class FashionSearchProcessor(ProcessorMixin):
    r"""
    Tokenizer + image processor of a fashion search model (dual encoder or CLIP+LoRA).

    Args:
        image_processor: the model's image processor (letterboxing CNN processor, or CLIP's).
        tokenizer: the model's tokenizer.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def __call__(self, text=None, images=None, return_tensors: str | None = "pt", padding=True, truncation=True,
                 max_length: int | None = 77, **kwargs) -> BatchFeature:
        """Texts -> `input_ids`/`attention_mask`, images -> `pixel_values`; both when both are given."""
        if text is None and images is None:
            raise ValueError("give text, images or both")
        data = {}
        if text is not None:
            data.update(self.tokenizer(text, padding=padding, truncation=truncation, max_length=max_length,
                                       return_tensors=return_tensors, **kwargs))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(data, tensor_type=return_tensors)


__all__ = ["FashionSearchProcessor"]
