"""Composing a reference image with a modification text into one query embedding.

Shared by every text-capable model (dual encoder, CLIP+LoRA). Two methods:

- `weighted_sum`: `(1 - w) * image + w * text` of the normalised embeddings (the seeds' baseline), `w` the text
  influence in [0, 1].
- `Combiner`: a learned gated fusion in the style of CLIP4Cir (Baldrati et al., 2022): both embeddings are
  projected, concatenated and mixed by an MLP, and a learned per-query gate adds back a convex mix of the raw text
  and image embeddings as a residual, so the network starts close to a weighted sum and learns corrections.

Inputs are normalised embeddings of the model's shared space; outputs are unnormalised (normalise before search).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# In the order the app offers them (the learned combiner first); serving and the app import this tuple.
COMPOSITION_METHODS = ("combiner", "sum")


def weighted_sum(image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_weight: float = 0.5) -> torch.Tensor:
    """`(1 - text_weight) * normalise(image) + text_weight * normalise(text)`, shapes `(B, D)`."""
    if not 0.0 <= float(text_weight) <= 1.0:
        raise ValueError(f"text_weight must be in [0, 1], got {text_weight}")
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    return (1.0 - text_weight) * image_embeds + text_weight * text_embeds


class Combiner(nn.Module):
    """Learned image+text fusion (CLIP4Cir's Combiner).

    Args:
        dim (`int`): size of the shared embedding space (input and output).
        hidden_size (`int`): width of the projection and mixing layers.
        dropout (`float`, *optional*, defaults to 0.1): dropout inside the network.
    """

    def __init__(self, dim: int, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.text_projection = nn.Sequential(nn.Linear(dim, hidden_size), nn.ReLU(), nn.Dropout(dropout))
        self.image_projection = nn.Sequential(nn.Linear(dim, hidden_size), nn.ReLU(), nn.Dropout(dropout))
        self.mixer = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
                                   nn.Linear(hidden_size, dim))
        self.gate = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden_size, 1), nn.Sigmoid())

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        image_embeds = F.normalize(image_embeds, dim=-1)
        text_embeds = F.normalize(text_embeds, dim=-1)
        joint = torch.cat([self.text_projection(text_embeds), self.image_projection(image_embeds)], dim=-1)
        gate = self.gate(joint)
        return self.mixer(joint) + gate * text_embeds + (1.0 - gate) * image_embeds


def compose(image_embeds: torch.Tensor, text_embeds: torch.Tensor, method: str = "sum", text_weight: float = 0.5,
            combiner: Combiner | None = None) -> torch.Tensor:
    """Dispatch on `method` ("sum" or "combiner"); the combiner method needs a trained `combiner`."""
    if method == "sum":
        return weighted_sum(image_embeds, text_embeds, text_weight)
    if method == "combiner":
        if combiner is None:
            raise ValueError("this model has no trained combiner; use method='sum' or train one "
                             "(train.py --stage composed)")
        return combiner(image_embeds, text_embeds)
    raise ValueError(f"method must be one of {COMPOSITION_METHODS}, got {method!r}")


__all__ = ["COMPOSITION_METHODS", "Combiner", "compose", "weighted_sum"]
