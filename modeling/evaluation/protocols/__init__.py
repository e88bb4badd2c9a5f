# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""The published retrieval protocols, so numbers can be compared with the papers' tables.

Each protocol comes as

* a **pure function on features** (numpy arrays, L2-normalised here), unit-tested on hand-checked cases:
  `fashion_iq_recall`, `fashion200k_recall`, `kagl_text_to_image`;
* a **runner** that takes encoder callables, so any model can be plugged in (`evaluate.py`, through
  `modeling.evaluation.suite.standard_protocols`): `evaluate_fashion_iq`, `evaluate_fashion200k`.

Common conventions:

* similarity is the cosine (dot product of L2-normalised rows; an all-zero row stays zero), higher first;
* ties are broken by the **lower gallery position**, so every ranking is deterministic (the papers' code uses
  `np.argsort(-sims)` / `torch.topk`, whose tie order is unspecified);
* recalls are fractions in [0, 1] (the papers print them x100);
* runners take `encode_images(list[PIL.Image]) -> np.ndarray (n, dim)` and
  `compose(reference_embeds np.ndarray (q, dim), texts list[str]) -> np.ndarray (q, dim)`; the reference
  embeddings passed to `compose` are exactly what `encode_images` returned (not normalised).

Protocols, one module each:

1. **Fashion-IQ** (`fashion_iq`): val split, per category; R@10, R@50, their mean per category and the average over
   categories.
2. **Fashion200K** (`fashion200k`): TIRG's queries ("replace <word> with <word>") and metric; R@1, R@10, R@50.
3. **KAGL-style text->image** (`kagl`): each item's title queries the item images; single target and "any item with
   the same normalised title".
"""

from modeling.evaluation.protocols.base import Compose, EncodeImages, encode_image_files
from modeling.evaluation.protocols.fashion200k import (FASHION200K_KS, Fashion200kError, evaluate_fashion200k,
                                                       fashion200k_generate_queries, fashion200k_modification,
                                                       fashion200k_recall, load_fashion200k_labels,
                                                       load_fashion200k_labels_with_report, tirg_different_word)
from modeling.evaluation.protocols.fashion_iq import FASHION_IQ_KS, evaluate_fashion_iq, fashion_iq_recall
from modeling.evaluation.protocols.kagl import KAGL_KS, kagl_text_to_image

__all__ = [
    "FASHION200K_KS",
    "FASHION_IQ_KS",
    "KAGL_KS",
    "Compose",
    "EncodeImages",
    "Fashion200kError",
    "encode_image_files",
    "evaluate_fashion200k",
    "evaluate_fashion_iq",
    "fashion200k_generate_queries",
    "fashion200k_modification",
    "fashion200k_recall",
    "fashion_iq_recall",
    "kagl_text_to_image",
    "load_fashion200k_labels",
    "load_fashion200k_labels_with_report",
    "tirg_different_word",
]
