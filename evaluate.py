"""Evaluate a trained model and the reference baselines on one catalog split.

    python evaluate.py --model runs/dual-encoder --catalog ../shared/data --split test --output runs/eval
    python evaluate.py --model runs/dual-encoder --split val --queries queries/dev.jsonl --output runs/eval-dev

Protocols (the gallery is every item of `--split`, a comma-separated list of splits):
- image->image: every gallery item queries the rest (itself excluded). Relevant: same articleType. Reports P@10,
  top1 (first result relevant), and P@10 for same articleType + baseColour.
- title->image: one query per distinct normalised title (lower-cased, whitespace collapsed); relevant: every item
  with that title. R@K = share of queries with a relevant item in the top K (K = 1, 10); MRR. Ranked by the visual
  embeddings alone — no item text on the gallery side.
- --queries FILE.jsonl: attribute-relevance queries (format in modeling/queries.py) run three ways through the
  search engine: visual only, item text only, and fused. P@10 and nDCG@10 (binary gains, ideal DCG over
  min(10, #relevant)); queries with no relevant item in the gallery are skipped and counted.
Rows: the model, the colour-histogram baseline and random. Writes OUT/metrics.json (and OUT/queries.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from modeling.baselines import colour_histogram_features, random_features
from modeling.data import load_catalog, normalise_title
from modeling.metrics import group_by_text, image_to_image_metrics, ndcg_at_k, precision_at_k, text_to_image_metrics
from modeling.queries import load_queries, relevance_mask
from modeling.search import (DEFAULT_TEXT_WEIGHT, FashionSearchEngine, build_index, catalog_items, encode_images,
                             encode_texts, model_fingerprint)
from modeling.text_encoder import SentenceEncoder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="trained model folder")
    p.add_argument("--catalog", default="../shared/data")
    p.add_argument("--split", default="test", help="gallery split(s), comma-separated")
    p.add_argument("--output", required=True)
    p.add_argument("--queries", default=None, help="JSONL query file to run visual / text / fused")
    p.add_argument("--text-weight", type=float, default=DEFAULT_TEXT_WEIGHT, help="fusion weight of item text")
    p.add_argument("--text-encoder", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--no-baselines", action="store_true")
    return p.parse_args(argv)


def title_queries(items) -> tuple[list[str], list[np.ndarray]]:
    """Distinct normalised titles and, for each, the gallery positions carrying it."""
    return group_by_text([normalise_title(t) for t in items["title"]])


def retrieval_metrics(image_embeds: np.ndarray, labels: dict, k: int, text_embeds: np.ndarray | None = None,
                      groups=None) -> dict:
    row = {"image_to_image": image_to_image_metrics(image_embeds, labels, k=k)}
    row["title_to_image"] = (text_to_image_metrics(text_embeds, image_embeds, groups, ks=(1, k))
                             if text_embeds is not None else None)
    return row


def query_metrics(engine: FashionSearchEngine, queries: list[dict], items, k: int, text_weight: float) -> dict:
    """Visual-only, item-text-only and fused rankings of the same queries."""
    modes = {"visual": 0.0, "text": 1.0, "fused": text_weight}
    out = {mode: {"per_query": []} for mode in modes}
    skipped = []
    for q in queries:
        relevant = relevance_mask(items, q["match"])
        n_relevant = int(relevant.sum())
        if n_relevant == 0:
            skipped.append(q["query"])
            continue
        for mode, weight in modes.items():
            results = engine.search_text(q["query"], k=k, text_weight=weight)
            positions = [engine._position[r.id] for r in results]
            rel = np.zeros((1, k), dtype=bool)
            rel[0, :len(positions)] = relevant[positions]
            out[mode]["per_query"].append({
                "query": q["query"], "relevant": n_relevant,
                f"p@{k}": float(precision_at_k(rel, k)[0]),
                f"ndcg@{k}": float(ndcg_at_k(rel, np.array([n_relevant]), k)[0]),
            })
    for mode in modes:
        rows = out[mode]["per_query"]
        out[mode]["mean"] = {m: float(np.mean([r[m] for r in rows])) if rows else None
                             for m in (f"p@{k}", f"ndcg@{k}")}
    out["text_weight"] = text_weight
    out["num_queries"] = len(queries) - len(skipped)
    out["skipped_no_relevant"] = len(skipped)
    return out


def format_table(metrics: dict, k: int) -> str:
    header = f"{'model':<24}{'i2i P@' + str(k):>10}{'top1':>8}{'P@' + str(k) + ' col':>10}" \
             f"{'t2i R@1':>9}{'R@' + str(k):>8}{'MRR':>8}"
    lines = [header, "-" * len(header)]
    for name, row in metrics.items():
        i2i, t2i = row["image_to_image"], row.get("title_to_image") or {}
        fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "  n/a"  # noqa: E731
        lines.append(f"{name:<24}{fmt(i2i[f'p@{k}']):>10}{fmt(i2i['top1']):>8}{fmt(i2i[f'p@{k}_colour']):>10}"
                     f"{fmt(t2i.get('r@1')):>9}{fmt(t2i.get(f'r@{k}')):>8}{fmt(t2i.get('mrr')):>8}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    gallery = load_catalog(args.catalog, split=splits)
    if len(gallery) < 2:
        raise SystemExit(f"the gallery (split {args.split}) has {len(gallery)} items; need at least 2")
    items = catalog_items(gallery)
    labels = {"articleType": items["articleType"].to_numpy(), "baseColour": items["baseColour"].to_numpy()}
    texts, groups = title_queries(items)
    images = gallery.select_columns(["image"])["image"]
    print(f"gallery: {len(items)} items of split {args.split}; {len(texts)} distinct titles")

    model, tokenizer, processor = FashionSearchEngine.load_model(args.model)
    model_name = Path(args.model).name or "model"
    started = time.time()
    image_embeds = encode_images(model, processor, images, progress=True)
    throughput = len(images) / (time.time() - started)
    text_embeds = encode_texts(model, tokenizer, texts, progress=True)
    metrics = {model_name: retrieval_metrics(image_embeds, labels, args.k, text_embeds, groups)}
    metrics[model_name]["images_per_second"] = round(throughput, 1)
    if not args.no_baselines:
        metrics["colour_histogram"] = retrieval_metrics(colour_histogram_features(images), labels, args.k)
        metrics["random"] = retrieval_metrics(random_features(len(items)), labels, args.k,
                                              random_features(len(texts), seed=1), groups)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(format_table(metrics, args.k))

    if args.queries:
        encoder = SentenceEncoder(args.text_encoder)
        info = {"name": model_name, "fingerprint": model_fingerprint(model),
                "embedding_dim": int(model.config.projection_dim)}
        index = build_index(model, tokenizer, processor, gallery, model_info=info, sentence_encoder=encoder)
        engine = FashionSearchEngine(model, tokenizer, processor, index, encoder, text_weight=args.text_weight)
        report = query_metrics(engine, load_queries(args.queries), items, args.k, args.text_weight)
        (out_dir / "queries.json").write_text(json.dumps(report, indent=2))
        print(f"\nqueries: {report['num_queries']} run, {report['skipped_no_relevant']} skipped (no relevant item)")
        for mode in ("visual", "text", "fused"):
            mean = report[mode]["mean"]
            print(f"  {mode:<7} P@{args.k} {mean[f'p@{args.k}']:.3f}  nDCG@{args.k} {mean[f'ndcg@{args.k}']:.3f}")
        metrics["queries"] = {m: report[m]["mean"] for m in ("visual", "text", "fused")}
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
