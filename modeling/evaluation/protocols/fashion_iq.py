"""Fashion-IQ (Wu et al., CVPR 2021; the composed-image-retrieval papers' evaluation, e.g. CLIP4Cir, Baldrati et al.).

Val split, per category (dress, shirt, toptee); the gallery is the category's val images
(`image_splits/split.<cat>.val.json`), each query is a caption-file triplet with text `join_captions([c1, c2])` =
`"<c1> and <c2>"` and a single target; R@10, R@50, their mean per category and the average over categories. The
reference image stays in the gallery (as in the published numbers) unless `exclude_reference=True`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from modeling.data.fashion_iq import (FASHION_IQ_CATEGORIES, FashionIQError, check_categories,
                                      fashion_iq_gallery_with_report, join_captions, load_fashion_iq_with_report)
from modeling.evaluation.protocols.base import (Compose, EncodeImages, check_max_queries, check_positions,
                                                encode_gallery_and_queries, ranked_positions, recall_dict)
from modeling.evaluation.metrics import check_chunk, check_ks, check_pair, pad_ranks

logger = logging.getLogger(__name__)

FASHION_IQ_KS = (10, 50)


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
    ks = check_ks(ks, sort=False)
    chunk = check_chunk(chunk)
    queries, gallery = check_pair(query_embeds, gallery_embeds, "query_embeds", "gallery_embeds")
    num_queries, num_items = len(queries), len(gallery)
    targets = check_positions(target_positions, "target_positions", num_queries, num_items, allow_none=False)
    references = check_positions(
        reference_positions, "reference_positions", num_queries, num_items, allow_none=True
    )
    top = ranked_positions(queries, gallery, max(ks), references if exclude_reference else None, chunk)
    hits = pad_ranks(top == targets[:, None], max(ks))
    metrics = recall_dict(hits, ks)
    metrics["mean"] = float(np.mean([metrics[f"r@{k}"] for k in ks]))
    metrics["num_queries"] = num_queries
    return metrics


def _category_queries(
    root: str | os.PathLike, image_dir: str | os.PathLike, category: str, max_queries: int | None,
    check_images: bool,
) -> tuple[list[str], dict[str, int], list[dict[str, Any]], dict[str, int]]:
    """One category's val split: `(gallery image paths, gallery position by id, queries, counts)`; the queries are
    the triplets whose target is in the gallery (the first `max_queries`), the counts those of the triplets, of
    the skipped ones and of the gallery."""
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
    counts = {"num_triplets": len(rows) + len(skipped), "skipped_missing_image": len(skipped),
              "skipped_target_not_in_gallery": not_in_gallery, "gallery_size": len(gallery_ids),
              "gallery_missing_images": len(gallery_missing)}
    return list(gallery["image_path"]), position, kept, counts


def _category_recall(
    root: str | os.PathLike, image_dir: str | os.PathLike, category: str, encode_images: EncodeImages,
    compose: Compose, *, exclude_reference: bool, ks: list[int], max_queries: int | None, batch_size: int,
    check_images: bool,
) -> dict[str, Any]:
    """`fashion_iq_recall` of one category's val queries, with the counts of `_category_queries`."""
    gallery_paths, position, kept, counts = _category_queries(root, image_dir, category, max_queries, check_images)
    references = np.array([position.get(row["candidate"], -1) for row in kept], dtype=np.int64)
    targets = np.array([position[row["target"]] for row in kept], dtype=np.int64)
    gallery_embeds, query_embeds = encode_gallery_and_queries(
        gallery_paths, references, [join_captions(row["captions"]) for row in kept], encode_images, compose,
        batch_size, [row["reference_image_path"] for row in kept])
    result = fashion_iq_recall(query_embeds, gallery_embeds, targets, references, ks, exclude_reference)
    result.update(counts)
    return result


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
    ks = check_ks(ks, sort=False)
    batch_size = check_chunk(batch_size)
    check_max_queries(max_queries)
    categories = check_categories(categories)

    per_category: dict[str, dict[str, Any]] = {}
    for category in categories:
        result = _category_recall(root, image_dir, category, encode_images, compose,
                                  exclude_reference=exclude_reference, ks=ks, max_queries=max_queries,
                                  batch_size=batch_size, check_images=check_images)
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


__all__ = ["FASHION_IQ_KS", "evaluate_fashion_iq", "fashion_iq_recall"]
