"""Fashion200K (Han et al., ICCV 2017; queries and metric of TIRG, Vo et al., CVPR 2019).

The gallery is every test image; a query is a source image plus `"replace <source word> with <target word>"`; the
source image is removed from its own ranking; a hit at K is any of the top K whose caption equals the target caption;
R@1, R@10, R@50.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modeling.data.images import image_problem
from modeling.data.text import normalise_text
from modeling.evaluation.protocols.base import (Compose, EncodeImages, check_max_queries, check_positions,
                                                encode_gallery_and_queries, ranked_positions, recall_dict,
                                                sample_in_order)
from modeling.evaluation.metrics import check_chunk, check_ks, check_pair, pad_ranks
from modeling.evaluation.tasks import group_by_text

logger = logging.getLogger(__name__)

FASHION200K_KS = (1, 10, 50)


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
    check_max_queries(max_queries)
    normalised = [normalise_text(caption) for caption in captions]
    distinct, positions = group_by_text(captions)
    caption_images = {caption: images.tolist() for caption, images in zip(distinct, positions)}
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
    return [
        {
            "source": source,
            "target": target,
            "source_caption": source_caption,
            "target_caption": target_caption,
            "modification": f"replace {source_caption.split()[i]} with {target_caption.split()[i]}",
        }
        for source, target, source_caption, target_caption, i in sample_in_order(candidates, max_queries, seed)
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
    ks = check_ks(ks, sort=False)
    chunk = check_chunk(chunk)
    queries, gallery = check_pair(query_embeds, gallery_embeds, "query_embeds", "gallery_embeds")
    num_queries, num_items = len(queries), len(gallery)
    if isinstance(gallery_captions, str) or len(gallery_captions) != num_items:
        raise ValueError(f"gallery_captions must hold one caption per gallery item ({num_items})")
    if isinstance(target_captions, str) or len(target_captions) != num_queries:
        raise ValueError(f"target_captions must hold one caption per query ({num_queries})")
    sources = check_positions(query_positions, "query_positions", num_queries, num_items, allow_none=True)
    codes: dict[str, int] = {}
    gallery_codes = np.array([codes.setdefault(normalise_text(c), len(codes)) for c in gallery_captions] + [-2])
    target_codes = np.array([codes.get(normalise_text(c), -3) for c in target_captions], dtype=np.int64)
    if any(not normalise_text(c) for c in target_captions):
        raise ValueError("target_captions must not be empty")
    top = ranked_positions(queries, gallery, max(ks), sources, chunk)
    hits = pad_ranks(gallery_codes[top] == target_codes[:, None], max(ks))  # top == -1 reads the -2 sentinel
    metrics: dict[str, Any] = recall_dict(hits, ks)
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


def _fashion200k_gallery(
    labels: list[dict[str, Any]], root: Path, split: str, check_images: bool
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[str]]:
    """`(unique, gallery, missing)`: the label rows by image path (first line of a path listed twice), the rows
    whose image is under `root` (and readable, with `check_images`), and the paths of the others."""
    unique: dict[str, dict[str, Any]] = {}
    for row in labels:
        unique.setdefault(row["path"], row)
    gallery, missing = [], []
    for row in unique.values():
        file = root / row["path"]
        if not file.is_file() or (check_images and image_problem(str(file))):
            missing.append(row["path"])
        else:
            gallery.append(row)
    if missing:
        logger.warning("%d Fashion200K %s image(s) are missing or unreadable under '%s'; e.g. %s.",
                       len(missing), split, root, missing[0])
    if not gallery:
        raise Fashion200kError(f"None of the {len(unique)} Fashion200K {split} images is under '{root}'.")
    return unique, gallery, missing


def _file_queries(
    test_queries: str | os.PathLike,
    unique: dict[str, dict[str, Any]],
    gallery: list[dict[str, Any]],
    max_queries: int | None,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The usable queries of a `<source path> <target path>` file (a `default_rng(seed)` sample of `max_queries`
    of them, in file order) and the counts of the skipped ones and the malformed lines."""
    pairs, malformed_queries = _read_query_file(test_queries)
    normalised = [normalise_text(row["caption"]) for row in gallery]
    position = {row["path"]: index for index, row in enumerate(gallery)}
    available = set(normalised)
    caption_of = {path: normalise_text(row["caption"]) for path, row in unique.items()}
    skipped_source = skipped_target = 0
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
    counts = {"skipped_queries_missing_source": skipped_source, "skipped_queries_missing_target": skipped_target,
              "malformed_query_lines": len(malformed_queries)}
    return sample_in_order(queries, max_queries, seed), counts


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
    ks = check_ks(ks, sort=False)
    batch_size = check_chunk(batch_size)
    labels, malformed = load_fashion200k_labels_with_report(label_dir, split)
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise Fashion200kError(f"Fashion200K image folder '{image_root}' does not exist or is not a folder.")
    unique, gallery, missing = _fashion200k_gallery(labels, root, split, check_images)
    captions = [row["caption"] for row in gallery]
    if test_queries is not None:
        queries, skipped = _file_queries(test_queries, unique, gallery, max_queries, seed)
        source_kind = "file"
    else:
        queries = fashion200k_generate_queries(captions, max_queries=max_queries, seed=seed)
        skipped = dict.fromkeys(("skipped_queries_missing_source", "skipped_queries_missing_target",
                                 "malformed_query_lines"), 0)
        source_kind = "generated"
    if not queries:
        raise Fashion200kError("No usable Fashion200K query (no caption pair differing by one word, or every "
                               "query's source or target is missing).")

    sources = np.array([query["source"] for query in queries], dtype=np.int64)
    gallery_embeds, query_embeds = encode_gallery_and_queries(
        [str(root / row["path"]) for row in gallery], sources, [query["modification"] for query in queries],
        encode_images, compose, batch_size)
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
        "duplicate_paths": len(labels) - len(unique),
        **skipped,
    }


__all__ = ["FASHION200K_KS", "Fashion200kError", "evaluate_fashion200k", "fashion200k_generate_queries",
           "fashion200k_modification", "fashion200k_recall", "load_fashion200k_labels",
           "load_fashion200k_labels_with_report", "tirg_different_word"]
