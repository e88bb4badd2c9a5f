"""Helpers several tasks share: item texts and labels of a catalog split, retrieval validation."""

from __future__ import annotations

import numpy as np
import torch

from modeling.data.text import attribute_caption
from modeling.evaluation.tasks import image_to_image_metrics, text_to_image_metrics


def item_texts(dataset) -> tuple[list[str], list[str]]:
    """(title, attribute caption) per item; a missing title falls back to the caption."""
    captions = [row.get("attr_caption") or attribute_caption(row) for row in dataset]
    titles = [t if t.strip() else c for t, c in zip(dataset["title"], captions)]
    return titles, captions


def attribute_targets(dataset, heads: dict[str, list[str]]) -> torch.Tensor:
    """(N, len(heads)) class indices, -100 where the attribute is empty or unseen."""
    columns = []
    for name, values in heads.items():
        lookup = {v: i for i, v in enumerate(values)}
        columns.append([lookup.get(v, -100) for v in dataset[name]])
    return torch.tensor(columns, dtype=torch.long).t().reshape(len(dataset), len(heads))


def label_codes(values, unique_negative_for_empty: bool = True) -> torch.Tensor:
    """Integer code per value; empty values get unique negative codes (never anyone's match)."""
    lookup = {v: i for i, v in enumerate(sorted({v for v in values if v}))}
    return torch.tensor([lookup[v] if v else (-1 - i if unique_negative_for_empty else -1)
                         for i, v in enumerate(values)])


def validation_labels(dataset) -> dict:
    """The labels image->image validation scores against (articleType, and baseColour for the colour metric)."""
    return {a: np.asarray(dataset[a]) for a in ("articleType", "baseColour") if a in dataset.column_names}


def retrieval_validation(image_embeds: np.ndarray, labels: dict, text_embeds=None, groups=None) -> dict:
    """Image->image metrics at 10 (and text->image at 1 and 10 when text embeddings are given), rounded."""
    metrics = image_to_image_metrics(image_embeds, labels, k=10)
    if text_embeds is not None:
        metrics.update(text_to_image_metrics(text_embeds, image_embeds, groups, ks=(1, 10)))
    return {k: round(float(v), 4) for k, v in metrics.items()}


__all__ = ["attribute_targets", "item_texts", "label_codes", "retrieval_validation", "validation_labels"]
