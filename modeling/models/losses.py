"""The losses of the models and of their training: text-image InfoNCE (dual encoder, CLIP + LoRA), the dual
encoder's auxiliary attribute loss and image-image SupCon (with a cross-batch memory), the label-free image-image
NT-Xent of the VAE, and the composed stage's relevance loss. Imports only torch: it travels with the modeling files
as remote code."""

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


def attribute_heads_loss(attribute_logits: list[torch.Tensor],
                         attribute_targets: torch.Tensor) -> torch.Tensor | None:
    """Mean cross-entropy of the attribute heads: `attribute_logits[i]` `(batch, num_values)` against column i of
    `attribute_targets` `(batch, num_attributes)` (-100 where unknown). Heads without any known target are skipped;
    None when none has one."""
    losses = [
        F.cross_entropy(logits, attribute_targets[:, i], ignore_index=-100)
        for i, logits in enumerate(attribute_logits)
        if (attribute_targets[:, i] != -100).any()
    ]
    return torch.stack(losses).mean() if losses else None


def supervised_contrastive_loss(image_embeds: torch.Tensor, positive_mask: torch.Tensor, scale: float = 10.0,
                                memory_embeds: torch.Tensor | None = None,
                                memory_positive_mask: torch.Tensor | None = None) -> torch.Tensor:
    """SupCon among images (Khosla et al., 2020): each image pulls in the others that share its label and pushes
    away the rest of the batch. Rows without any other positive are skipped.

    `memory_embeds` `(memory, dim)` (normalised, detached embeddings of earlier batches) with
    `memory_positive_mask` `(batch, memory)` extend every row's candidates beyond the batch: the cross-batch memory
    of Wang et al. (2020, XBM), many more positives and hard negatives per step at the cost of one matrix product.
    """
    n = image_embeds.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=image_embeds.device)
    logits = (scale * image_embeds @ image_embeds.t()).masked_fill(self_mask, float("-inf"))
    positives = positive_mask.bool() & ~self_mask
    if memory_embeds is not None and memory_embeds.shape[0] > 0:
        if memory_positive_mask is None or memory_positive_mask.shape != (n, memory_embeds.shape[0]):
            raise ValueError("memory_positive_mask must be (batch, memory) when memory_embeds are given")
        logits = torch.cat([logits, scale * image_embeds @ memory_embeds.to(image_embeds.dtype).t()], dim=1)
        positives = torch.cat([positives, memory_positive_mask.bool()], dim=1)
    rows = positives.any(dim=-1)
    if not rows.any():
        return logits.new_zeros(())
    log_prob = F.log_softmax(logits[rows].float(), dim=-1).masked_fill(~positives[rows], 0.0)
    return -(log_prob.sum(-1) / positives[rows].sum(-1)).mean()


def composed_relevance_loss(logits: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass of each row of `logits` `(batch, items)` that falls on its relevant items
    (`relevant`, bool, same shape): a composed query may be answered by any of several items, and R@K counts any
    of them, so the loss rewards exactly that (the composed training stage). Excluded candidates (the reference
    item) carry -inf logits."""
    return (logits.logsumexp(-1) - logits.masked_fill(~relevant, float("-inf")).logsumexp(-1)).mean()


__all__ = ["attribute_heads_loss", "composed_relevance_loss", "contrastive_loss", "nt_xent_loss",
           "supervised_contrastive_loss", "symmetric_infonce"]
