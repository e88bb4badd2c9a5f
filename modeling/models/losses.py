"""Contrastive losses shared by the models: text-image InfoNCE (dual encoder, CLIP + LoRA) and the label-free
image-image NT-Xent of the VAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(logits: torch.Tensor, positive_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each row of `logits` against its positives (soft targets spread evenly over them); without
    `positive_mask` the diagonal is the only positive. Rows without a positive contribute zero."""
    if positive_mask is None:
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))
    targets = positive_mask.to(logits.dtype)
    targets = targets / targets.sum(-1, keepdim=True).clamp(min=1.0)
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def symmetric_infonce(logits_per_text: torch.Tensor, positive_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE. `positive_mask[i, j]` marks text i and image j as a match (identical texts are positives
    of one another); without it the diagonal is the only positive."""
    mask_t = None if positive_mask is None else positive_mask.t()
    return (contrastive_loss(logits_per_text, positive_mask) + contrastive_loss(logits_per_text.t(), mask_t)) / 2.0


def nt_xent_loss(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent of SimCLR (Chen et al., 2020): row i of `first` and row i of `second` are two views of one image.
    Each of the 2N embeddings (cosine-normalised here) must pick its other view among the other 2N - 1; no labels
    are involved, every other image in the batch is a negative."""
    n = first.shape[0]
    embeds = F.normalize(torch.cat([first, second]).float(), dim=-1)
    logits = (embeds @ embeds.t()) / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=logits.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(logits.device)
    return F.cross_entropy(logits, targets)


__all__ = ["contrastive_loss", "nt_xent_loss", "symmetric_infonce"]
