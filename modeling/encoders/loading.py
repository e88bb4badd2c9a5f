"""Model folders to embeddings: load any of the package's models, fingerprint it, encode texts and images.

Importing this module registers the package's models with the Auto classes (`modeling.models`)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

import modeling.models  # noqa: F401 -- registers the Auto classes


def load_model(model_dir: str | os.PathLike):
    """(model, tokenizer or None, image processor) of a saved model folder (any of the package's models)."""
    model = AutoModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir) if has_text_tower(model) else None
    processor = AutoImageProcessor.from_pretrained(model_dir)
    return model, tokenizer, processor


_LOCATION_KEYS = ("_name_or_path", "name_or_path", "auto_map", "transformers_version", "_commit_hash")


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the model's config and weights: an index records it and refuses another model."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        # Where the folder lives and how it loads (remote-code map) do not change the embeddings: a copy of the
        # same model pushed to the Hub or moved elsewhere keeps its fingerprint.
        fields = {key: value for key, value in config.to_dict().items() if key not in _LOCATION_KEYS}
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def embedding_dim(model) -> int:
    """Size of the embeddings a model indexes (projection of a dual encoder / CLIP, latent of a VAE)."""
    config = model.config
    for owner in (config, getattr(config, "clip_config", None)):
        for name in ("projection_dim", "latent_size"):
            value = getattr(owner, name, None) if owner is not None else None
            if value:
                return int(value)
    raise ValueError(f"cannot tell the embedding size of {type(model).__name__}")


def has_text_tower(model) -> bool:
    return callable(getattr(model, "get_text_features", None))


@torch.inference_mode()
def encode_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Normalised text embeddings (N, D) of the model's text tower + projection."""
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="encoding texts", disable=not progress):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=64,
                          return_tensors="pt")
        feats = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        out.append(F.normalize(feats, dim=-1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, embedding_dim(model)), np.float32)


@torch.inference_mode()
def encode_images(model, processor, images: Sequence, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Normalised image embeddings (N, D); `images` are PIL images (any mode)."""
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="encoding images", disable=not progress):
        pixel_values = processor(list(images[start:start + batch_size]), return_tensors="pt")["pixel_values"]
        out.append(F.normalize(model.get_image_features(pixel_values), dim=-1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, embedding_dim(model)), np.float32)


