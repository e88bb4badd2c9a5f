"""Contrastive losses shared by the text-image models (dual encoder, CLIP + LoRA)."""

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


__all__ = ["contrastive_loss", "symmetric_infonce"]
