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
- --composed: catalog triplets of the gallery (reference + "make it blue" -> items of the reference's type and
  gender in the new colour; `modeling.composed_data`) run through the engine's composed search: image only, text
  only, weighted sum, learned combiner (when the model has one), each fused or not with the item-text match, with
  the reference's catalog attributes named in the text, with only what the attribute heads predict (an uploaded
  photo) and with nothing. R@1/10/50 (any matching item) and exact-target R@K. Writes OUT/composed.json.
- --rerank-model DIR: hybrid image search (candidates from the model, re-ranked by e.g. the VAE's latent cosine)
  at each --rerank-weights value against the model alone: image->image P@10, top1 and P@10 colour.
  Writes OUT/hybrid.json.
Rows: the model, the colour-histogram baseline and random. Models without a text tower (the VAE) get image->image
only. Writes OUT/metrics.json (and the files above).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from modeling.baselines import colour_histogram_features, random_features
from modeling.data import load_catalog, normalise_title
from modeling.composed_data import catalog_triplets, composed_relevance_matrix
from modeling.index import CatalogIndex
from modeling.metrics import (composed_metrics, group_by_text, image_to_image_metrics, ndcg_at_k, precision_at_k,
                              text_to_image_metrics)
from modeling.queries import load_queries, relevance_mask
from modeling.search import (DEFAULT_TEXT_WEIGHT, FashionSearchEngine, VisualReranker, catalog_items, embedding_dim,
                             encode_images, encode_texts, has_text_tower, item_description, model_fingerprint)
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
    p.add_argument("--composed", action="store_true", help="evaluate composed search on the gallery's triplets")
    p.add_argument("--composed-max", type=int, default=None, help="cap the number of composed triplets")
    p.add_argument("--rerank-model", default=None, help="model folder re-ranking image queries (hybrid search)")
    p.add_argument("--rerank-weights", default="0.1,0.2,0.3,0.5", help="hybrid re-ranking weights to measure")
    p.add_argument("--rerank-depth", type=int, default=100, help="candidates the re-ranker re-scores")
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
    text_embeds = encode_texts(model, tokenizer, texts, progress=True) if tokenizer is not None else None
    metrics = {model_name: retrieval_metrics(image_embeds, labels, args.k, text_embeds, groups)}
    metrics[model_name]["images_per_second"] = round(throughput, 1)
    if not args.no_baselines:
        metrics["colour_histogram"] = retrieval_metrics(colour_histogram_features(images), labels, args.k)
        metrics["random"] = retrieval_metrics(random_features(len(items)), labels, args.k,
                                              random_features(len(texts), seed=1), groups)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(format_table(metrics, args.k))

    if not (args.queries or args.composed or args.rerank_model):
        return metrics
    # The rest runs through the search engine, over an index of the embeddings computed above.
    encoder = SentenceEncoder(args.text_encoder) if tokenizer is not None else None
    info = {"name": model_name, "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
    index = CatalogIndex.build(
        image_embeds, items, model_info=info,
        text_embeddings=encoder.encode([item_description(r) for r in items.to_dict("records")])
        if encoder else None,
        text_encoder_info={"name": encoder.name, "embedding_dim": encoder.dim} if encoder else None)
    reranker = None
    if args.rerank_model:
        r_model, _, r_processor = FashionSearchEngine.load_model(args.rerank_model)
        r_info = {"name": Path(args.rerank_model).name, "fingerprint": model_fingerprint(r_model),
                  "embedding_dim": embedding_dim(r_model)}
        r_index = CatalogIndex.build(encode_images(r_model, r_processor, images, progress=True), items,
                                     model_info=r_info)
        reranker = VisualReranker(r_model, r_processor, r_index, name=r_info["name"])
    engine = FashionSearchEngine(model, tokenizer, processor, index, encoder, text_weight=args.text_weight,
                                 model_name=model_name, reranker=reranker)

    if args.queries:
        if tokenizer is None:
            raise SystemExit(f"--queries: {args.model} has no text tower")
        report = query_metrics(engine, load_queries(args.queries), items, args.k, args.text_weight)
        (out_dir / "queries.json").write_text(json.dumps(report, indent=2))
        print(f"\nqueries: {report['num_queries']} run, {report['skipped_no_relevant']} skipped (no relevant item)")
        for mode in ("visual", "text", "fused"):
            mean = report[mode]["mean"]
            print(f"  {mode:<7} P@{args.k} {mean[f'p@{args.k}']:.3f}  nDCG@{args.k} {mean[f'ndcg@{args.k}']:.3f}")
        metrics["queries"] = {m: report[m]["mean"] for m in ("visual", "text", "fused")}
    if args.rerank_model:
        weights = [float(w) for w in args.rerank_weights.split(",") if w.strip()]
        report = hybrid_metrics(engine, labels, weights, args.k, args.rerank_depth)
        (out_dir / "hybrid.json").write_text(json.dumps(report, indent=2))
        print(f"\nhybrid image search: candidates from {model_name}, re-ranked by {reranker.name}")
        for name, row in report.items():
            print(f"  {name:<22} P@{args.k} {row[f'p@{args.k}']:.3f}  top1 {row['top1']:.3f}  "
                  f"P@{args.k} colour {row[f'p@{args.k}_colour']:.3f}")
        metrics["hybrid"] = report
    if args.composed:
        if tokenizer is None:
            raise SystemExit(f"--composed: {args.model} has no text tower")
        triplets = catalog_triplets(gallery, seed=0)
        if args.composed_max:
            triplets = triplets.select(range(min(args.composed_max, len(triplets))))
        report = composed_report(engine, items, triplets, images)
        (out_dir / "composed.json").write_text(json.dumps(report, indent=2))
        print(f"\ncomposed search: {len(triplets)} catalog triplets (reference + new colour)")
        for name, row in report["variants"].items():
            print(f"  {name:<34} R@1 {row['r@1']:.3f}  R@10 {row['r@10']:.3f}  R@50 {row['r@50']:.3f}  "
                  f"exact R@10 {row['exact_r@10']:.3f}")
        metrics["composed"] = {name: row["r@10"] for name, row in report["variants"].items()}
    return metrics


def _relevance_of(engine: FashionSearchEngine, results, relevant: np.ndarray, depth: int) -> np.ndarray:
    row = np.zeros(depth, dtype=bool)
    positions = [engine._position[r.id] for r in results][:depth]
    row[:len(positions)] = relevant[positions]
    return row


def hybrid_metrics(engine: FashionSearchEngine, labels: dict, weights: list[float], k: int, depth: int) -> dict:
    """Image->image through `engine.search_item` with the re-ranker at each weight (0 = the model alone)."""
    article, colour = labels["articleType"], labels["baseColour"]
    report = {}
    for weight in [0.0, *[w for w in weights if w > 0]]:
        same, same_colour = [], []
        for i, item_id in enumerate(engine._ids):
            results = engine.search_item(item_id, k=k, rerank_weight=weight, rerank_depth=depth)
            same.append(_relevance_of(engine, results, article == article[i], k))
            same_colour.append(_relevance_of(engine, results, (article == article[i]) & (colour == colour[i]), k))
        same, same_colour = np.array(same), np.array(same_colour)
        name = "model alone" if weight == 0 else f"re-ranked, weight {weight:g}"
        report[name] = {"rerank_weight": weight, f"p@{k}": float(precision_at_k(same, k).mean()),
                        "top1": float(same[:, 0].mean()), f"p@{k}_colour": float(precision_at_k(same_colour, k).mean())}
    return report


def composed_report(engine: FashionSearchEngine, items, triplets, images, depth: int = 50) -> dict:
    """Composed search variants over the same catalog triplets, all through `engine.search_composed`."""
    relevant, exact = composed_relevance_matrix(items, triplets)
    has_combiner = getattr(engine.model, "combiner", None) is not None
    default = "combiner" if has_combiner else "sum"
    variants = {  # name: (reference given as, search_composed keyword arguments)
        "image only": ("item", dict(method="sum", text_weight=0.0, item_text_weight=0.0)),
        "text only (model)": ("item", dict(method="sum", text_weight=1.0, item_text_weight=0.0)),
        "text only (item text)": ("item", dict(method="sum", text_weight=1.0, item_text_weight=1.0)),
        "sum, no attributes": ("item", dict(method="sum", item_text_weight=0.0, use_reference_attributes=False)),
        "sum": ("item", dict(method="sum", item_text_weight=0.0)),
        "sum + item text": ("item", dict(method="sum")),
    }
    if has_combiner:
        variants["combiner, no attributes"] = ("item", dict(method="combiner", item_text_weight=0.0,
                                                            use_reference_attributes=False))
        variants["combiner"] = ("item", dict(method="combiner", item_text_weight=0.0))
        variants["combiner + item text"] = ("item", dict(method="combiner"))
    variants[f"uploaded photo ({default} + item text)"] = ("image", dict(method=default))
    variants[f"no attributes ({default} + item text)"] = ("item", dict(method=default, use_reference_attributes=False))
    rows = triplets.to_list()
    out = {"num_triplets": len(rows), "text_weight": engine.model.config.composition_text_weight,
           "item_text_weight": engine.text_weight, "variants": {}}
    for name, (given, kwargs) in tqdm(variants.items(), desc="composed variants"):
        hits, exact_hits = [], []
        for q, row in enumerate(rows):
            reference = ({"item_id": row["reference_id"]} if given == "item" else
                         {"image": images[engine._position[str(row["reference_id"])]],
                          "exclude_ids": [row["reference_id"]]})
            results = engine.search_composed(text=row["modification"], k=depth, **reference, **kwargs)
            hits.append(_relevance_of(engine, results, relevant[q], depth))
            exact_hits.append(_relevance_of(engine, results, exact[q], depth))
        out["variants"][name] = composed_metrics(np.array(hits), np.array(exact_hits), ks=(1, 10, depth))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
