# Copyright 2025 The Fashion Search Authors.
# Licensed under the Apache License, Version 2.0.
"""The published retrieval protocols, so numbers can be compared with the papers' tables.

Each protocol comes as

* a **pure function on features** (numpy arrays, L2-normalised here), unit-tested on hand-checked cases:
  `fashion_iq_recall`, `fashion200k_recall`, `kagl_text_to_image`;
* a **runner** that takes encoder callables, so any model can be plugged in (`evaluate.py`):
  `evaluate_fashion_iq`, `evaluate_fashion200k`.

Common conventions:

* similarity is the cosine (dot product of L2-normalised rows; an all-zero row stays zero), higher first;
* ties are broken by the **lower gallery position**, so every ranking is deterministic (the papers' code uses
  `np.argsort(-sims)` / `torch.topk`, whose tie order is unspecified);
* recalls are fractions in [0, 1] (the papers print them x100);
* runners take `encode_images(list[PIL.Image]) -> np.ndarray (n, dim)` and
  `compose(reference_embeds np.ndarray (q, dim), texts list[str]) -> np.ndarray (q, dim)`; the reference
  embeddings passed to `compose` are exactly what `encode_images` returned (not normalised).

Protocols:

1. **Fashion-IQ** (Wu et al., CVPR 2021; the composed-image-retrieval papers' evaluation, e.g. CLIP4Cir,
   Baldrati et al.): val split, per category (dress, shirt, toptee); the gallery is the category's val images
   (`image_splits/split.<cat>.val.json`), each query is a caption-file triplet with text
   `join_captions([c1, c2])` = `"<c1> and <c2>"` and a single target; R@10, R@50, their mean per category and
   the average over categories. The reference image stays in the gallery (as in the published numbers) unless
   `exclude_reference=True`.
2. **Fashion200K** (Han et al., ICCV 2017; queries and metric of TIRG, Vo et al., CVPR 2019): the gallery is every
   test image; a query is a source image plus `"replace <source word> with <target word>"`; the source image is
   removed from its own ranking; a hit at K is any of the top K whose caption equals the target caption; R@1,
   R@10, R@50.
3. **KAGL-style text->image** (the fashion-CLIP leaderboards): each item's title queries the item images; the
   single target is the item itself (R@1, R@10, MRR over the full ranking), reported beside the "any item with
   the same normalised title" variant.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from modeling.data.composed import (
    FASHION_IQ_CATEGORIES,
    FashionIQError,
    fashion_iq_gallery_with_report,
    join_captions,
    load_fashion_iq_with_report,
)
from modeling.data.catalog import ImageError, open_image
from modeling.evaluation.metrics import check_chunk, topk_indices, text_to_image_metrics

logger = logging.getLogger(__name__)

EncodeImages = Callable[[list[Image.Image]], np.ndarray]
Compose = Callable[[np.ndarray, list[str]], np.ndarray]

FASHION_IQ_KS = (10, 50)
FASHION200K_KS = (1, 10, 50)
KAGL_KS = (1, 10)


# --------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------


def normalise_text(text: Any) -> str:
    """Lower-cases, collapses whitespace runs to one space and strips; non-strings (None, NaN) give `""`.

    The same normalisation as `modeling.metrics.group_by_text`.
    """
    if not isinstance(text, str):
        return ""
    return re.sub(r"\s+", " ", text).strip().lower()


def _normalise_rows(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows, dim), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _check_pair(queries: Any, gallery: Any, query_name: str, gallery_name: str) -> tuple[np.ndarray, np.ndarray]:
    queries = _normalise_rows(queries, query_name)
    gallery = _normalise_rows(gallery, gallery_name)
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"{query_name} dim {queries.shape[1]} != {gallery_name} dim {gallery.shape[1]}")
    return queries, gallery


def _check_ks(ks: Sequence[int]) -> list[int]:
    if isinstance(ks, (int, np.integer)):
        ks = [ks]
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every k must be a positive integer, got {k!r}")
        if int(k) not in out:
            out.append(int(k))
    if not out:
        raise ValueError("ks must not be empty")
    return out


def _check_positions(positions: Any, name: str, num_queries: int, num_items: int, allow_none: bool) -> np.ndarray:
    """Integer positions, one per query, in [0, num_items) (or -1 = "not in the gallery" with `allow_none`)."""
    array = np.asarray(positions)
    if array.shape != (num_queries,):
        raise ValueError(f"{name} must have shape ({num_queries},) (one per query), got {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer gallery positions, got dtype {array.dtype}")
    array = array.astype(np.int64)
    low = -1 if allow_none else 0
    if array.size and (array.min() < low or array.max() >= num_items):
        allowed = f"[-1, {num_items})" if allow_none else f"[0, {num_items})"
        raise ValueError(f"{name} must be in {allowed}, got values from {array.min()} to {array.max()}")
    return array


def _ranked_positions(
    queries: np.ndarray, gallery: np.ndarray, depth: int, excluded: np.ndarray | None, chunk: int
) -> np.ndarray:
    """Top-`depth` gallery positions per query (cosine, ties -> lower position), `-1` past the end.

    `excluded[i] >= 0` removes that gallery item from query `i`'s ranking (it gets -inf, so it can only show up
    as the very last item, where it is replaced by -1).
    """
    num_queries, num_items = len(queries), len(gallery)
    depth = min(depth, num_items)
    out = np.empty((num_queries, depth), dtype=np.int64)
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        scores = queries[start:stop] @ gallery.T
        if excluded is not None:
            rows = np.nonzero(excluded[start:stop] >= 0)[0]
            scores[rows, excluded[start:stop][rows]] = -np.inf
        top = topk_indices(scores, depth)
        if excluded is not None:
            top[top == excluded[start:stop, None]] = -1
        out[start:stop] = top
    return out


def _recall_dict(hits: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """`hits` (Q, depth) bool at ranks 1..depth -> `{"r@k": share of queries with a hit in the top k}`."""
    return {f"r@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}


# --------------------------------------------------------------------------------------------------------------
# Fashion-IQ
# --------------------------------------------------------------------------------------------------------------


def fashion_iq_recall(
    query_embeds: np.ndarray,
    gallery_embeds: np.ndarray,
    target_positions: Sequence[int] | np.ndarray,
    reference_positions: Sequence[int] | np.ndarray,
    ks: Sequence[int] = FASHION_IQ_KS,
    exclude_reference: bool = False,
    chunk: int = 1024,
) -> dict[str, float]:
    """Fashion-IQ recall of one category: each composed query has exactly one target in the gallery.

    Protocol, as implemented: rows of `query_embeds` (the composed reference + text embeddings) and
    `gallery_embeds` (the category's val images) are L2-normalised; each query ranks the whole gallery by cosine
    similarity, higher first, ties broken by lower gallery position. With `exclude_reference=True` the query's
    reference image (`reference_positions[i]`, when >= 0) is removed from its ranking, so everything behind it
    moves up one rank (if a reference were its own target, that query would always miss); by default it stays
    in the gallery, as in the published Fashion-IQ numbers. R@k is the share of queries whose target is among
    the first k.

    Args:
        query_embeds: `(Q, D)` composed query embeddings.
        gallery_embeds: `(N, D)` gallery image embeddings.
        target_positions: `(Q,)` gallery position of each query's target, in [0, N).
        reference_positions: `(Q,)` gallery position of each query's reference image, or -1 when it is not in
            the gallery (only used with `exclude_reference`).
        ks: recall depths, default (10, 50).
        exclude_reference: remove the reference image from its query's ranking.
        chunk: queries scored at once.

    Returns:
        `{"r@k": ... for k in ks, "mean": mean of the r@k values, "num_queries": Q}`.

    Raises:
        ValueError: empty / non-2-D / non-finite features, mismatched dims, positions of the wrong shape, type or
            range, bad `ks` or `chunk`.
    """
    ks = _check_ks(ks)
    chunk = check_chunk(chunk)
    queries, gallery = _check_pair(query_embeds, gallery_embeds, "query_embeds", "gallery_embeds")
    num_queries, num_items = len(queries), len(gallery)
    targets = _check_positions(target_positions, "target_positions", num_queries, num_items, allow_none=False)
    references = _check_positions(
        reference_positions, "reference_positions", num_queries, num_items, allow_none=True
    )
    top = _ranked_positions(queries, gallery, max(ks), references if exclude_reference else None, chunk)
    hits = _pad_hits(top == targets[:, None], max(ks))
    metrics = _recall_dict(hits, ks)
    metrics["mean"] = float(np.mean([metrics[f"r@{k}"] for k in ks]))
    metrics["num_queries"] = num_queries
    return metrics


def _pad_hits(hits: np.ndarray, depth: int) -> np.ndarray:
    if hits.shape[1] < depth:
        hits = np.pad(hits, ((0, 0), (0, depth - hits.shape[1])), constant_values=False)
    return hits


def _check_encoded(embeds: Any, expected_rows: int, what: str) -> np.ndarray:
    embeds = np.asarray(embeds)
    if embeds.ndim != 2 or embeds.shape[0] != expected_rows:
        raise ValueError(f"{what} must return an array of shape ({expected_rows}, dim), got shape {embeds.shape}")
    return embeds.astype(np.float32, copy=False)


def _load_rgb(path: str) -> Image.Image:
    image = open_image(path, f"Image file '{path}'")
    return image if image.mode == "RGB" else image.convert("RGB")


def encode_image_files(paths: Sequence[str], encode_images: EncodeImages, batch_size: int = 64) -> np.ndarray:
    """Opens `paths` (RGB) batch by batch and stacks `encode_images`' `(batch, D)` outputs into `(len(paths), D)`."""
    batch_size = check_chunk(batch_size)
    if not paths:
        raise ValueError("no image to encode")
    parts = []
    for start in range(0, len(paths), batch_size):
        batch = [_load_rgb(path) for path in paths[start : start + batch_size]]
        parts.append(_check_encoded(encode_images(batch), len(batch), "encode_images"))
    return np.concatenate(parts)


def _compose_batches(compose: Compose, references: np.ndarray, texts: list[str], batch_size: int) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), batch_size):
        stop = start + batch_size
        parts.append(_check_encoded(compose(references[start:stop], texts[start:stop]), len(texts[start:stop]),
                                    "compose"))
    return np.concatenate(parts)


def evaluate_fashion_iq(
    root: str | os.PathLike,
    image_dir: str | os.PathLike,
    encode_images: EncodeImages,
    compose: Compose,
    categories: str | Sequence[str] = FASHION_IQ_CATEGORIES,
    exclude_reference: bool = False,
    ks: Sequence[int] = FASHION_IQ_KS,
    max_queries: int | None = None,
    batch_size: int = 64,
    check_images: bool = True,
) -> dict[str, Any]:
    """Runs the Fashion-IQ val protocol (see `fashion_iq_recall`) on the caption/split files and an image folder.

    Per category: the gallery is `image_splits/split.<cat>.val.json` (duplicates once; ids without a readable
    image in `image_dir` are dropped and counted, `fashion_iq_gallery_with_report`); the queries are
    `captions/cap.<cat>.val.json` in file order (`load_fashion_iq_with_report`), text `join_captions(captions)`
    (`"<c1> and <c2>"`, stray `.?,` stripped); a triplet whose reference or target image is missing/unreadable is
    skipped and counted, and so is one whose target is not in the gallery. `max_queries` keeps the first that
    many remaining queries per category. Every gallery image is encoded once; a reference that is in the gallery
    reuses its gallery embedding, others are encoded from their files. The composed query is
    `compose(reference_embeds, texts)`.

    Args:
        root: the Fashion-IQ folder (`captions/`, `image_splits/`) or a folder holding `fashion-iq/`.
        image_dir: `<ASIN>.<png|jpg|jpeg|webp>`, flat or in per-category sub-folders.
        encode_images: `list[PIL.Image] -> (n, D)` image embeddings.
        compose: `(reference_embeds (q, D), texts) -> (q, D)` query embeddings.
        categories: some of ("dress", "shirt", "toptee").
        exclude_reference: remove each query's reference image from its ranking (published numbers keep it).
        ks: recall depths.
        max_queries: at most this many queries per category (the first ones); None for all.
        batch_size: images / queries per call of the encoders.
        check_images: decode every image once while loading, so unreadable files are skipped (not fatal).

    Returns:
        `{"protocol": "fashion_iq", "split": "val", "exclude_reference", "ks",
        "categories": {cat: {"r@k"..., "mean", "num_queries", "num_triplets", "skipped_missing_image",
        "skipped_target_not_in_gallery", "gallery_size", "gallery_missing_images"}},
        "average": {"r@k"..., "mean"} (unweighted mean over categories), "num_queries": total}`.

    Raises:
        FashionIQError: missing/malformed files, unknown category, or no usable image/query in a category.
        ValueError: bad `ks`, `max_queries`, `batch_size`, or encoder outputs of the wrong shape.
    """
    ks = _check_ks(ks)
    batch_size = check_chunk(batch_size)
    if max_queries is not None and (
        isinstance(max_queries, bool) or not isinstance(max_queries, (int, np.integer)) or max_queries < 1
    ):
        raise ValueError(f"max_queries must be a positive integer or None, got {max_queries!r}")
    names = [categories] if isinstance(categories, str) else list(categories)
    if not names:
        raise FashionIQError(f"No Fashion-IQ category given; use some of {FASHION_IQ_CATEGORIES}.")

    per_category: dict[str, dict[str, Any]] = {}
    for category in dict.fromkeys(names):
        gallery, gallery_missing = fashion_iq_gallery_with_report(root, image_dir, category, "val", check_images)
        triplets, skipped = load_fashion_iq_with_report(root, image_dir, category, "val", check_images)
        gallery_ids = list(gallery["id"])
        position = {asin: index for index, asin in enumerate(gallery_ids)}
        rows = triplets.select_columns(["candidate", "target", "captions", "reference_image_path"]).to_list()
        kept = [row for row in rows if row["target"] in position]
        not_in_gallery = len(rows) - len(kept)
        if max_queries is not None:
            kept = kept[:max_queries]
        if not kept:
            raise FashionIQError(f"No Fashion-IQ val query of '{category}' has its target in the gallery.")

        gallery_embeds = encode_image_files(list(gallery["image_path"]), encode_images, batch_size)
        references = np.array([position.get(row["candidate"], -1) for row in kept], dtype=np.int64)
        targets = np.array([position[row["target"]] for row in kept], dtype=np.int64)
        outside = np.nonzero(references < 0)[0]
        reference_embeds = gallery_embeds[np.maximum(references, 0)].copy()
        if len(outside):
            reference_embeds[outside] = encode_image_files(
                [kept[i]["reference_image_path"] for i in outside], encode_images, batch_size
            )
        texts = [join_captions(row["captions"]) for row in kept]
        query_embeds = _compose_batches(compose, reference_embeds, texts, batch_size)
        result = fashion_iq_recall(query_embeds, gallery_embeds, targets, references, ks, exclude_reference)
        result.update(
            num_triplets=len(rows) + len(skipped),
            skipped_missing_image=len(skipped),
            skipped_target_not_in_gallery=not_in_gallery,
            gallery_size=len(gallery_ids),
            gallery_missing_images=len(gallery_missing),
        )
        per_category[category] = result
        logger.info("Fashion-IQ %s: %s", category, {key: result[key] for key in result if key.startswith("r@")})

    average = {
        key: float(np.mean([result[key] for result in per_category.values()]))
        for key in [*(f"r@{k}" for k in ks), "mean"]
    }
    return {
        "protocol": "fashion_iq",
        "split": "val",
        "exclude_reference": bool(exclude_reference),
        "ks": ks,
        "categories": per_category,
        "average": average,
        "num_queries": int(sum(result["num_queries"] for result in per_category.values())),
    }


# --------------------------------------------------------------------------------------------------------------
# Fashion200K
# --------------------------------------------------------------------------------------------------------------


class Fashion200kError(ValueError):
    """The Fashion200K files cannot be used: missing label folder or files, no usable image or query."""


def load_fashion200k_labels_with_report(
    label_dir: str | os.PathLike, split: str = "test"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`load_fashion200k_labels` plus one `{"file", "line", "text", "error"}` dict per malformed line."""
    folder = Path(label_dir).expanduser()
    if not folder.is_dir():
        raise Fashion200kError(f"Fashion200K label folder '{label_dir}' does not exist or is not a folder.")
    if not isinstance(split, str) or not split.strip() or any(sep in split for sep in "/\\*?["):
        raise ValueError(f"split must be a plain name such as 'train' or 'test', got {split!r}")
    files = sorted(folder.glob(f"*_{split}_detect_all.txt"))
    if not files:
        raise Fashion200kError(f"No '*_{split}_detect_all.txt' label file in '{folder}'.")
    rows: list[dict[str, Any]] = []
    malformed: list[dict[str, Any]] = []
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue  # blank lines (e.g. at the end of a file) are not data
                fields = line.split("\t")
                error = ""
                if len(fields) != 3:
                    error = f"expected 3 tab-separated fields (path, score, caption), got {len(fields)}"
                else:
                    path, score_text, caption = (field.strip() for field in fields)
                    try:
                        score = float(score_text)
                    except ValueError:
                        error = f"detection score {score_text!r} is not a number"
                    else:
                        if not path:
                            error = "empty image path"
                        elif not normalise_text(caption):
                            error = "empty caption"
                if error:
                    malformed.append({"file": file.name, "line": number, "text": line[:200], "error": error})
                else:
                    rows.append({"path": path, "score": score, "caption": caption})
    if malformed:
        logger.warning(
            "Skipped %d malformed Fashion200K label line(s) in '%s'; e.g. %s line %d: %s.",
            len(malformed), folder, malformed[0]["file"], malformed[0]["line"], malformed[0]["error"],
        )
    return rows, malformed


def load_fashion200k_labels(label_dir: str | os.PathLike, split: str = "test") -> list[dict[str, Any]]:
    """Reads Fashion200K's label files `<label_dir>/*_<split>_detect_all.txt` (sorted by file name).

    Each line is `<image path>\\t<detection score>\\t<caption>`; returns one `{"path", "score" (float),
    "caption" (stripped)}` dict per line, in file then line order. Blank lines are ignored; malformed lines
    (not exactly 3 tab-separated fields, a non-numeric score, an empty path or caption) are skipped, counted and
    logged (`load_fashion200k_labels_with_report` returns them).
    """
    rows, _ = load_fashion200k_labels_with_report(label_dir, split)
    return rows


def tirg_different_word(source_caption: str, target_caption: str) -> tuple[str, str, str]:
    """TIRG's `get_different_word`: the first source word absent from the target and the first target word absent
    from the source (Python's loop variable keeps the *last* word when every word is shared), and the
    modification text `"replace <source word> with <target word>"`."""
    source_words, target_words = source_caption.split(), target_caption.split()
    if not source_words or not target_words:
        raise ValueError("captions must not be empty")
    source_word = next((word for word in source_words if word not in target_words), source_words[-1])
    target_word = next((word for word in target_words if word not in source_words), target_words[-1])
    return source_word, target_word, f"replace {source_word} with {target_word}"


def fashion200k_modification(source_caption: str, target_caption: str) -> str:
    """`"replace <source word> with <target word>"` for two captions.

    When the normalised captions have the same word count and differ at exactly one position, the words are the
    two at that position; otherwise TIRG's rule (`tirg_different_word`) picks them.
    """
    source, target = normalise_text(source_caption).split(), normalise_text(target_caption).split()
    if len(source) == len(target):
        differing = [i for i, (s, t) in enumerate(zip(source, target)) if s != t]
        if len(differing) == 1:
            return f"replace {source[differing[0]]} with {target[differing[0]]}"
    return tirg_different_word(" ".join(source), " ".join(target))[2]


def fashion200k_generate_queries(
    captions: Sequence[str], max_queries: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Deterministic Fashion200K test queries from the gallery captions (used when no `test_queries.txt` is given).

    Rule (TIRG paper: "pairs of products that have one word difference in their descriptions are selected as
    the query images and target images; and the modification text is that one different word"): two normalised
    captions form a pair when they have the same number of words and differ at exactly one position. For every
    ordered caption pair (s, t) and every gallery image whose caption is s, one query is made: that image is the
    source, the target image is the lowest-positioned image whose caption is t (only informative: any image
    with caption t is a hit), and the text is `"replace <word of s> with <word of t>"` at the differing
    position. Candidates are ordered by (source position, target position); with `max_queries` smaller than
    their number, `max_queries` of them are drawn without replacement by `numpy.random.default_rng(seed)` and kept
    in that order.

    This differs from TIRG's training-time pairing (`caption_index_init_`: captions sharing a "parent" caption
    with one word removed, by substring replacement), which also pairs captions of different lengths; and the
    sampling behind TIRG's released `test_queries.txt` is not published, so generated queries reproduce the rule,
    not TIRG's exact query list. Pass the released file to `evaluate_fashion200k` to use that list.

    Returns:
        `[{"source": position, "target": position, "source_caption", "target_caption" (normalised),
        "modification"}]`.
    """
    if max_queries is not None and (
        isinstance(max_queries, bool) or not isinstance(max_queries, (int, np.integer)) or max_queries < 1
    ):
        raise ValueError(f"max_queries must be a positive integer or None, got {max_queries!r}")
    normalised = [normalise_text(caption) for caption in captions]
    caption_images: dict[str, list[int]] = {}
    for position, caption in enumerate(normalised):
        if caption:
            caption_images.setdefault(caption, []).append(position)
    # Captions sharing every word but the one at position i fall in the same bucket.
    buckets: dict[tuple, list[str]] = {}
    for caption in caption_images:
        words = caption.split()
        for i in range(len(words)):
            buckets.setdefault((len(words), i, tuple(words[:i]), tuple(words[i + 1 :])), []).append(caption)
    partners: dict[str, list[tuple[str, int]]] = {}  # source caption -> [(target caption, differing position)]
    for (_, i, _, _), group in buckets.items():
        if len(group) > 1:
            for source in group:
                partners.setdefault(source, []).extend((target, i) for target in group if target != source)
    candidates: list[tuple[int, int, str, str, int]] = []
    for position, caption in enumerate(normalised):
        for target_caption, i in partners.get(caption, ()):
            candidates.append((position, caption_images[target_caption][0], caption, target_caption, i))
    candidates.sort(key=lambda c: (c[0], c[1]))
    if max_queries is not None and len(candidates) > max_queries:
        chosen = np.sort(np.random.default_rng(seed).choice(len(candidates), size=int(max_queries), replace=False))
        candidates = [candidates[index] for index in chosen]
    return [
        {
            "source": source,
            "target": target,
            "source_caption": source_caption,
            "target_caption": target_caption,
            "modification": f"replace {source_caption.split()[i]} with {target_caption.split()[i]}",
        }
        for source, target, source_caption, target_caption, i in candidates
    ]


def fashion200k_recall(
    query_embeds: np.ndarray,
    gallery_embeds: np.ndarray,
    gallery_captions: Sequence[str],
    target_captions: Sequence[str],
    query_positions: Sequence[int] | np.ndarray,
    ks: Sequence[int] = FASHION200K_KS,
    chunk: int = 1024,
) -> dict[str, float]:
    """Fashion200K recall as in TIRG's `test_retrieval.test`.

    Protocol, as implemented: rows are L2-normalised; each composed query ranks the gallery (all test images) by
    cosine similarity, higher first, ties broken by lower gallery position, with its own source image
    (`query_positions[i]`; -1 = not in the gallery, nothing removed) taken out of the ranking. A hit at k is any
    of the first k items whose caption equals the query's target caption, both normalised by `normalise_text`
    (lower-cased, whitespace collapsed, stripped). R@k is the share of queries with a hit.

    Args:
        query_embeds: `(Q, D)` composed query embeddings.
        gallery_embeds: `(N, D)` gallery image embeddings.
        gallery_captions: `N` captions of the gallery images.
        target_captions: `Q` target captions.
        query_positions: `(Q,)` gallery position of each query's source image, or -1.
        ks: recall depths, default (1, 10, 50).
        chunk: queries scored at once.

    Returns:
        `{"r@k": ... for k in ks, "num_queries": Q}`; queries whose target caption no gallery item has are
        counted as misses (and in `"num_queries_without_target"`).
    """
    ks = _check_ks(ks)
    chunk = check_chunk(chunk)
    queries, gallery = _check_pair(query_embeds, gallery_embeds, "query_embeds", "gallery_embeds")
    num_queries, num_items = len(queries), len(gallery)
    if isinstance(gallery_captions, str) or len(gallery_captions) != num_items:
        raise ValueError(f"gallery_captions must hold one caption per gallery item ({num_items})")
    if isinstance(target_captions, str) or len(target_captions) != num_queries:
        raise ValueError(f"target_captions must hold one caption per query ({num_queries})")
    sources = _check_positions(query_positions, "query_positions", num_queries, num_items, allow_none=True)
    codes: dict[str, int] = {}
    gallery_codes = np.array([codes.setdefault(normalise_text(c), len(codes)) for c in gallery_captions] + [-2])
    target_codes = np.array([codes.get(normalise_text(c), -3) for c in target_captions], dtype=np.int64)
    if any(not normalise_text(c) for c in target_captions):
        raise ValueError("target_captions must not be empty")
    top = _ranked_positions(queries, gallery, max(ks), sources, chunk)
    hits = _pad_hits(gallery_codes[top] == target_codes[:, None], max(ks))  # top == -1 reads the -2 sentinel
    metrics: dict[str, Any] = _recall_dict(hits, ks)
    metrics["num_queries"] = num_queries
    metrics["num_queries_without_target"] = int((target_codes == -3).sum())
    return metrics


def _read_query_file(file: str | os.PathLike) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    path = Path(file).expanduser()
    if not path.is_file():
        raise Fashion200kError(f"Fashion200K query file '{file}' does not exist.")
    pairs, malformed = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != 2:
                malformed.append({"line": number, "text": raw.strip()[:200],
                                  "error": f"expected '<source path> <target path>', got {len(fields)} fields"})
            else:
                pairs.append((fields[0], fields[1]))
    return pairs, malformed


def evaluate_fashion200k(
    label_dir: str | os.PathLike,
    image_root: str | os.PathLike,
    encode_images: EncodeImages,
    compose: Compose,
    test_queries: str | os.PathLike | None = None,
    ks: Sequence[int] = FASHION200K_KS,
    max_queries: int | None = None,
    seed: int = 0,
    split: str = "test",
    batch_size: int = 64,
    check_images: bool = True,
) -> dict[str, Any]:
    """Runs the Fashion200K protocol (TIRG) on label files and an image folder; see `fashion200k_recall`.

    Gallery: every line of `<label_dir>/*_<split>_detect_all.txt` (`load_fashion200k_labels`), an image path
    listed twice kept once (first line), images missing under `image_root` (or unreadable, with `check_images`)
    dropped and counted. Queries: the `<source path> <target path>` lines of `test_queries` (TIRG's released
    file; the modification text comes from `fashion200k_modification`, the target caption from the target
    path's label line) or, without it, `fashion200k_generate_queries` on the gallery captions. A query is skipped
    and counted when its source image is not in the gallery or no gallery image has its target caption; with a
    file, `max_queries` then keeps a `default_rng(seed)` sample of that size (in file order). The source image
    is encoded once as a gallery image and its embedding is passed to `compose` with the modification text.

    Returns:
        `{"protocol": "fashion200k", "r@k"..., "num_queries", "query_source": "file" | "generated",
        "gallery_size", "gallery_missing_images", "malformed_label_lines", "duplicate_paths",
        "skipped_queries_missing_source", "skipped_queries_missing_target", "malformed_query_lines"}`.
    """
    ks = _check_ks(ks)
    batch_size = check_chunk(batch_size)
    labels, malformed = load_fashion200k_labels_with_report(label_dir, split)
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise Fashion200kError(f"Fashion200K image folder '{image_root}' does not exist or is not a folder.")

    unique: dict[str, dict[str, Any]] = {}
    for row in labels:
        unique.setdefault(row["path"], row)
    duplicates = len(labels) - len(unique)
    gallery, missing = [], []
    for row in unique.values():
        file = root / row["path"]
        if not file.is_file():
            missing.append(row["path"])
            continue
        if check_images:
            try:
                open_image(str(file), f"Image file '{file}'")
            except ImageError:
                missing.append(row["path"])
                continue
        gallery.append(row)
    if missing:
        logger.warning("%d Fashion200K %s image(s) are missing or unreadable under '%s'; e.g. %s.",
                       len(missing), split, root, missing[0])
    if not gallery:
        raise Fashion200kError(f"None of the {len(unique)} Fashion200K {split} images is under '{root}'.")
    captions = [row["caption"] for row in gallery]
    normalised = [normalise_text(caption) for caption in captions]
    position = {row["path"]: index for index, row in enumerate(gallery)}
    available = set(normalised)

    skipped_source = skipped_target = 0
    malformed_queries: list[dict[str, Any]] = []
    if test_queries is not None:
        pairs, malformed_queries = _read_query_file(test_queries)
        caption_of = {path: normalise_text(row["caption"]) for path, row in unique.items()}
        queries = []
        for source_path, target_path in pairs:
            if source_path not in position:
                skipped_source += 1
            elif caption_of.get(target_path, "") not in available:
                skipped_target += 1
            else:
                source = position[source_path]
                target_caption = caption_of[target_path]
                queries.append({
                    "source": source,
                    "target_caption": target_caption,
                    "modification": fashion200k_modification(normalised[source], target_caption),
                })
        if max_queries is not None and len(queries) > max_queries:
            chosen = np.sort(np.random.default_rng(seed).choice(len(queries), size=int(max_queries), replace=False))
            queries = [queries[index] for index in chosen]
        source_kind = "file"
    else:
        queries = fashion200k_generate_queries(captions, max_queries=max_queries, seed=seed)
        source_kind = "generated"
    if not queries:
        raise Fashion200kError("No usable Fashion200K query (no caption pair differing by one word, or every "
                               "query's source or target is missing).")

    gallery_embeds = encode_image_files([str(root / row["path"]) for row in gallery], encode_images, batch_size)
    sources = np.array([query["source"] for query in queries], dtype=np.int64)
    texts = [query["modification"] for query in queries]
    query_embeds = _compose_batches(compose, gallery_embeds[sources], texts, batch_size)
    metrics = fashion200k_recall(
        query_embeds, gallery_embeds, captions, [query["target_caption"] for query in queries], sources, ks
    )
    metrics.pop("num_queries_without_target", None)  # always 0 here: such queries were skipped above
    return {
        "protocol": "fashion200k",
        **metrics,
        "query_source": source_kind,
        "gallery_size": len(gallery),
        "gallery_missing_images": len(missing),
        "malformed_label_lines": len(malformed),
        "duplicate_paths": duplicates,
        "skipped_queries_missing_source": skipped_source,
        "skipped_queries_missing_target": skipped_target,
        "malformed_query_lines": len(malformed_queries),
    }


# --------------------------------------------------------------------------------------------------------------
# KAGL-style text -> image
# --------------------------------------------------------------------------------------------------------------


def kagl_text_to_image(
    text_embeds: np.ndarray,
    image_embeds: np.ndarray,
    titles: Sequence[str],
    ks: Sequence[int] = KAGL_KS,
    chunk: int = 1024,
) -> dict[str, Any]:
    """Title -> image retrieval as on the fashion-CLIP leaderboards (KAGL / Myntra catalogs).

    Protocol, as implemented: one query per item, its title embedding `text_embeds[i]`, ranks all `N` item images
    `image_embeds` by cosine similarity (rows L2-normalised), higher first, ties broken by lower item position.

    * `"single_target"`: the only relevant image is item `i`'s own; R@k = share of queries whose item is in the
      top k; MRR = mean of 1 / (rank of the item in the full ranking).
    * `"any_same_title"`: every item whose normalised title (`normalise_text`: lower-cased, whitespace
      collapsed, stripped) equals the query's is relevant (the item itself included; an empty title matches only
      its own item); R@k and MRR of the first relevant image. Always >= the single-target numbers.

    Returns:
        `{"single_target": {"r@k"..., "mrr"}, "any_same_title": {"r@k"..., "mrr"}, "num_queries": N,
        "num_distinct_titles": number of distinct non-empty normalised titles}`.

    Raises:
        ValueError: features not `(N, D)` with the same N and D, non-finite values, `titles` not of length N, bad
            `ks` or `chunk`.
    """
    ks = _check_ks(ks)
    chunk = check_chunk(chunk)
    texts, images = _check_pair(text_embeds, image_embeds, "text_embeds", "image_embeds")
    if len(texts) != len(images):
        raise ValueError(f"text_embeds ({len(texts)} rows) and image_embeds ({len(images)} rows) must both hold "
                         "one row per item")
    if isinstance(titles, str) or len(titles) != len(texts):
        raise ValueError(f"titles must hold one title per item ({len(texts)})")
    num_items = len(texts)
    keys = [normalise_text(title) for title in titles]
    groups: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        if key:
            groups.setdefault(key, []).append(position)
    group_arrays = {key: np.asarray(positions, dtype=np.int64) for key, positions in groups.items()}
    same_title = [group_arrays[key] if key else np.array([position], dtype=np.int64)
                  for position, key in enumerate(keys)]
    single = [np.array([position], dtype=np.int64) for position in range(num_items)]
    return {
        "single_target": text_to_image_metrics(texts, images, single, ks=ks, chunk=chunk),
        "any_same_title": text_to_image_metrics(texts, images, same_title, ks=ks, chunk=chunk),
        "num_queries": num_items,
        "num_distinct_titles": len(groups),
    }
