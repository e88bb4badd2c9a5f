"""Evaluate every model of the project and the baselines on the same gallery, queries and protocols.

    python evaluate.py --all --model runs/dual-encoder --model runs/vae --model runs/autoencoder \
        --rerank-model runs/vae --ood-model runs/dual-encoder-no-kurtas --ood articleType=Kurtas \
        --queries queries/test.jsonl --output runs/eval --model-card model_card.md
    python evaluate.py --model runs/dual-encoder --split val --queries queries/dev.jsonl --output runs/eval-dev

Rows of the comparison table: every `--model` (dual encoder, VAE, plain autoencoder, CLIP+LoRA, ...), random,
the region colour histogram, the colour-histogram + learned-feature hybrid (histogram + the first image-only
model's latents, or the first model's), hybrid re-ranking (`--rerank-model`), and pretrained extractors
(`--pretrained dinov2,resnet,vit`, only where the Hub is reachable). Same split, gallery and queries for all.

Protocols (the gallery is every item of `--split`, a comma-separated list of splits):
- image->image: every gallery item queries the rest (itself excluded); relevant: same articleType. P@10, mAP@10,
  nDCG@10, R@10 (share of the relevant items found), top-1, P@10 for same articleType + baseColour, VSC@10 (query:
  the item's description) beside the mean cosine of the top 10, and per-attribute consistency@10.
- title->image: one query per distinct normalised title (relevant: every item with it): R@1/R@10/MRR; and the
  KAGL protocol of the fashion-CLIP leaderboards (one query per item, its title, single target).
- --queries FILE.jsonl (format in modeling/queries.py): shopper queries through the search engine, visual only,
  item text only and fused: P@10, nDCG@10, VSC@10. Lines with `"image": <catalog id>` are composed queries
  (reference item + the text) and get their own section. Writes OUT/queries.json.
- --composed: catalog triplets of the gallery (reference + "make it blue") through the engine's composed search:
  R@1/10/50 (any item of the reference's type and gender in the new colour), exact-target R@K, VSC@10 (query: the
  reference's description with the colour replaced), consistency. Writes OUT/composed.json.
- --rerank-model DIR: hybrid image search (candidates from the first text model, re-ranked by e.g. the VAE) at each
  --rerank-weights value. Writes OUT/hybrid.json.
- --ood FIELD=VALUE: queries generated from the held-out items' titles and attributes against the same forms in
  domain, per text model (add the model trained with `train.py --exclude FIELD=VALUE` as --ood-model).
- --fashion-iq-images DIR / --fashion200k DIR: the published composed-retrieval protocols (modeling/protocols.py).
VSC is the raw cosine of MiniLM sentence embeddings of the query's description and each result's description
(modeling/vsc.py); it shares its encoder with the fused item-text score. Reports: OUT/results.json, OUT/results.md,
OUT/comparison.png, OUT/consistency_<model>.png, OUT/samples.png, and with --model-card the regenerated card.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from modeling.evaluation.analysis import CHANGED, attribute_consistency, match_mask, ood_query_sets
from modeling.evaluation.baselines import (PRETRAINED_EXTRACTORS, PretrainedImageExtractor, colour_histogram_features,
                                hybrid_features, random_features)
from modeling.data.composed import catalog_triplets, composed_relevance_matrix
from modeling.data.catalog import load_catalog, normalise_title
from modeling.retrieval.index import CatalogIndex, VectorIndex
from modeling.evaluation.metrics import (topk_indices, composed_metrics, group_by_text, ndcg_at_k, precision_at_k,
                              ranking_metrics, text_to_image_metrics)
from modeling.evaluation.protocols import evaluate_fashion200k, evaluate_fashion_iq, kagl_text_to_image
from modeling.data.queries import load_queries, relevance_mask
from modeling.evaluation.reporting import markdown_table, plot_attribute_consistency, plot_comparison, query_grid
from modeling.data.catalog import item_description
from modeling.encoders.loading import embedding_dim, encode_images, encode_texts, has_text_tower, model_fingerprint
from modeling.retrieval.build import catalog_items
from modeling.retrieval.search import (DEFAULT_LEXICAL_WEIGHT, DEFAULT_QUERY_EXPANSION, DEFAULT_TEXT_WEIGHT,
                                       FashionSearchEngine, VisualReranker, expand_queries)
from modeling.encoders.sentence import SentenceEncoder
from modeling.retrieval.vsc import VSCScorer, observation_note, summarise

DEPTH = 50  # rankings are kept to this depth; metrics at K = 1, 5, 10, 50
KS = (1, 5, 10, 50)
# The seeds' own example queries, shown in the sample grid and the observation table.
SAMPLE_TEXT_QUERIES = ("red summer dress", "white polo t-shirts", "watches for men", "men formal black shoes")
SAMPLE_COMPOSED = ("Dresses", "is shorter and sleeveless")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="trained model folder (repeatable)")
    p.add_argument("--catalog", default="../shared/data")
    p.add_argument("--split", default="test", help="gallery split(s), comma-separated")
    p.add_argument("--output", required=True)
    p.add_argument("--all", action="store_true",
                   help="everything: baselines, queries (default queries/<split>.jsonl), composed, VSC table, "
                        "consistency, KAGL, pretrained rows where reachable, plots")
    p.add_argument("--queries", default=None, help="JSONL query file (text and composed lines)")
    p.add_argument("--text-weight", type=float, default=DEFAULT_TEXT_WEIGHT, help="fusion weight of item text")
    p.add_argument("--lexical-weight", type=float, default=DEFAULT_LEXICAL_WEIGHT,
                   help="weight of the BM25 keyword match inside the item-text score")
    p.add_argument("--text-encoder", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="sentence encoder of the item-text match and of VSC")
    p.add_argument("--vsc-source", choices=["title", "caption"], default="title", help="item description of VSC")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-items", type=int, default=None, help="cap the gallery (quick runs, tests)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--hist-weight", type=float, default=0.5, help="colour-histogram share of the hybrid baseline")
    p.add_argument("--composed", action="store_true", help="evaluate composed search on the gallery's triplets")
    p.add_argument("--composed-max", type=int, default=None, help="cap the number of composed triplets")
    p.add_argument("--composed-variants", choices=["main", "all"], default="main",
                   help="main: the engine's default, weighted sum, combiner and an uploaded photo; all: 11 variants")
    p.add_argument("--rerank-model", default=None, help="model folder re-ranking image queries (hybrid search)")
    p.add_argument("--rerank-weights", default="0.1,0.2,0.3,0.5", help="hybrid re-ranking weights to measure")
    p.add_argument("--rerank-depth", type=int, default=100, help="candidates the re-ranker re-scores")
    p.add_argument("--ood", default=None, metavar="FIELD=VALUE", help="out-of-domain analysis of a held-out value")
    p.add_argument("--ood-model", action="append", default=[], help="model trained without it (also a table row)")
    p.add_argument("--pretrained", default="", help="pretrained extractor rows, e.g. dinov2,resnet,vit (Hub)")
    p.add_argument("--fashion-iq-root", default="../shared/data/fashion-iq")
    p.add_argument("--fashion-iq-images", default=None, help="Fashion-IQ image folder: run the Fashion-IQ protocol")
    p.add_argument("--fashion-iq-exclude-reference", action="store_true")
    p.add_argument("--fashion200k", default=None, help="Fashion200K folder (labels/ and images): run its protocol")
    p.add_argument("--plots", action="store_true", help="write the PNG plots and the sample grid")
    p.add_argument("--model-card", default=None, help="regenerate this model card from the run (first model's card)")
    args = p.parse_args(argv)
    if args.all:
        args.composed = args.plots = True
        if args.queries is None and Path(f"queries/{args.split}.jsonl").exists():
            args.queries = f"queries/{args.split}.jsonl"
        args.pretrained = args.pretrained or ",".join(PRETRAINED_EXTRACTORS)
    return args


# -- per-model rows ---------------------------------------------------------------------------------------------------
def rankings(embeds: np.ndarray, depth: int = DEPTH, chunk: int = 512) -> np.ndarray:
    """(N, depth) positions of each item's nearest other items, best first (itself excluded)."""
    embeds = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-12)
    out = []
    for start in range(0, len(embeds), chunk):
        stop = min(start + chunk, len(embeds))
        out.append(topk_indices(embeds[start:stop] @ embeds.T, depth, np.arange(start, stop)))
    return np.concatenate(out)


def expanded_rankings(embeds: np.ndarray, depth: int, expansion: int = DEFAULT_QUERY_EXPANSION,
                      chunk: int = 512) -> np.ndarray:
    """(N, depth) rankings of the engine's "more like this" (`search_item`): each item's query expanded with its
    `expansion` nearest other items (`expand_queries`), then every other item ranked by cosine to it."""
    unit = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-12)
    first = rankings(unit, expansion)
    queries = expand_queries(unit, unit[first], np.einsum("nd,nkd->nk", unit, unit[first]))
    out = []
    for start in range(0, len(unit), chunk):
        stop = min(start + chunk, len(unit))
        out.append(topk_indices(queries[start:stop] @ unit.T, depth, np.arange(start, stop)))
    return np.concatenate(out)


def image_to_image(embeds: np.ndarray, items, vsc: VSCScorer | None, k: int) -> dict:
    """Image->image metrics from the item embeddings (the same ranking as the engine's exact index), and the
    engine's ranking with query expansion (`*_expanded`)."""
    top = rankings(embeds, min(DEPTH, len(items) - 1))
    article = items["articleType"].to_numpy()
    colour = items["baseColour"].to_numpy()
    same = article[top] == article[:, None]
    counts = items["articleType"].value_counts()
    num_relevant = items["articleType"].map(counts).to_numpy() - 1
    ks = [x for x in KS if x <= top.shape[1]]
    ranked = ranking_metrics(np.pad(same, ((0, 0), (0, max(ks) - same.shape[1]))), num_relevant, ks)
    unit = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-12)
    cosines = np.einsum("nd,nkd->nk", unit, unit[top[:, :k]])
    row = {f"p@{k}": ranked[f"precision@{k}"], f"map@{k}": ranked[f"map@{k}"], f"ndcg@{k}": ranked[f"ndcg@{k}"],
           f"r@{k}": ranked[f"recall@{k}"], "top1": float(same[:, 0].mean()),
           f"p@{k}_colour": float((same & (colour[top] == colour[:, None]))[:, :k].mean()),
           f"cos@{k}": float(cosines.mean())}
    if vsc is not None:
        row[f"vsc@{k}"] = float(np.einsum("nd,nkd->nk", vsc.embeddings, vsc.embeddings[top[:, :k]]).mean())
    row["consistency"] = attribute_consistency(items, top, items, k=k)
    if DEFAULT_QUERY_EXPANSION > 0 and len(items) > DEFAULT_QUERY_EXPANSION + 1:
        expanded = expanded_rankings(embeds, k)
        same = article[expanded] == article[:, None]
        row.update({f"p@{k}_expanded": float(same.mean()), "top1_expanded": float(same[:, 0].mean()),
                    f"p@{k}_colour_expanded": float((same & (colour[expanded] == colour[:, None])).mean())})
    return row


def title_to_image(text_embeds_per_item: np.ndarray, image_embeds: np.ndarray, items, k: int) -> dict:
    titles = [normalise_title(t) for t in items["title"]]
    distinct, groups = group_by_text(titles)
    first = [int(g[0]) for g in groups]
    row = text_to_image_metrics(text_embeds_per_item[first], image_embeds, groups, ks=(1, k))
    row["kagl"] = kagl_text_to_image(text_embeds_per_item, image_embeds, list(items["title"]), ks=(1, k))
    return row


def index_bytes(embeds: np.ndarray) -> int:
    """Size of the FAISS index the engine would build for these embeddings."""
    return VectorIndex.build(embeds).nbytes


def model_row(name: str, model_dir: str, images, items, vsc, k: int) -> tuple[dict, dict]:
    """(table row, state for the engine-based sections) of one saved model."""
    model, tokenizer, processor = FashionSearchEngine.load_model(model_dir)
    started = time.perf_counter()
    embeds = encode_images(model, processor, images, progress=True)
    row = {"model": name, "path": str(model_dir), "items_per_s": len(images) / (time.perf_counter() - started)}
    row["i2i"] = image_to_image(embeds, items, vsc, k)
    if tokenizer is not None:
        titles = [str(t) for t in items["title"]]
        row["t2i"] = title_to_image(encode_texts(model, tokenizer, titles, progress=True), embeds, items, k)
    row["index_bytes"] = index_bytes(embeds)
    return row, {"model": model, "tokenizer": tokenizer, "processor": processor, "embeds": embeds}


def feature_row(name: str, feats: np.ndarray, items, vsc, k: int, items_per_s: float | None = None) -> dict:
    return {"model": name, "i2i": image_to_image(feats, items, vsc, k), "items_per_s": items_per_s,
            "index_bytes": index_bytes(feats)}


def baseline_rows(args, images, items, vsc, states: dict, k: int) -> list[dict]:
    """Random, colour histogram, histogram + learned-feature hybrid, and pretrained extractors (Hub only)."""
    rows = [feature_row("random", random_features(len(items)), items, vsc, k)]
    hist, speed = timed(colour_histogram_features, images)
    rows.append(feature_row("colour histogram", hist, items, vsc, k, speed))
    learned = next((n for n, s in states.items() if s["tokenizer"] is None), next(iter(states)))
    rows.append(feature_row(f"colour histogram + {learned}",
                            hybrid_features(hist, states[learned]["embeds"], args.hist_weight), items, vsc, k))
    for short in [s.strip() for s in args.pretrained.split(",") if s.strip()]:
        try:
            extractor = PretrainedImageExtractor(PRETRAINED_EXTRACTORS.get(short, short))
        except (OSError, ValueError) as error:  # offline: the Hub is not reachable
            print(f"skipping pretrained extractor {short}: {type(error).__name__}: {str(error).splitlines()[0]}")
            continue
        feats, speed = timed(lambda ims: extractor.encode(ims, progress=True), images)
        rows.append(feature_row(f"{short} (pretrained)", feats, items, vsc, k, speed))
    return rows


def timed(fn, *a):
    started = time.perf_counter()
    out = fn(*a)
    return out, len(a[0]) / (time.perf_counter() - started)


# -- engine-based sections ---------------------------------------------------------------------------------------------
def make_engine(name: str, state: dict, items, encoder: SentenceEncoder, vsc: VSCScorer, text_weight: float,
                reranker=None, lexical_weight: float = DEFAULT_LEXICAL_WEIGHT) -> FashionSearchEngine:
    model = state["model"]
    info = {"name": name, "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
    text = has_text_tower(model)
    index = CatalogIndex.build(
        state["embeds"], items, model_info=info,
        text_embeddings=encoder.encode([item_description(r) for r in items.to_dict("records")]) if text else None,
        text_encoder_info={"name": encoder.name, "embedding_dim": encoder.dim} if text else None)
    return FashionSearchEngine(model, state["tokenizer"], state["processor"], index, encoder, text_weight=text_weight,
                               model_name=name, reranker=reranker, vsc=vsc, lexical_weight=lexical_weight)


def _positions(engine: FashionSearchEngine, results, depth: int) -> np.ndarray:
    """Gallery positions of the ranked results, -1 past the end."""
    row = np.full(depth, -1, dtype=np.int64)
    positions = [engine._position[r.id] for r in results][:depth]
    row[:len(positions)] = positions
    return row


def _relevance_of(engine: FashionSearchEngine, results, relevant: np.ndarray, depth: int) -> np.ndarray:
    positions = _positions(engine, results, depth)
    return (positions >= 0) & relevant[np.maximum(positions, 0)]


def _vsc_at(results, k: int) -> float | None:
    return summarise(results[:k])["vsc@k"]


def query_metrics(engine: FashionSearchEngine, queries: list[dict], items, k: int, text_weight: float) -> dict:
    """Text lines: visual-only, item-text-only (dense + keywords), fused, and fused without the keyword match
    (`fused_dense`) rankings; composed lines (`"image"`): composed search."""
    modes = {"visual": (0.0, None), "text": (1.0, None), "fused": (text_weight, None), "fused_dense": (text_weight, 0.0)}
    out = {mode: {"per_query": []} for mode in [*modes, "composed"]}
    skipped = []
    for q in tqdm(queries, desc="queries"):
        relevant = relevance_mask(items, q["match"])
        reference = None if q.get("image") is None else str(q["image"])
        if reference is not None:
            if reference not in engine._position:
                raise SystemExit(f"query {q['query']!r}: no item {reference!r} in the gallery")
            relevant[engine._position[reference]] = False  # the reference never comes back
        n_relevant = int(relevant.sum())
        if n_relevant == 0:
            skipped.append(q["query"])
            continue
        if reference is not None:
            runs = {"composed": engine.search_composed(item_id=reference, text=q["query"], k=k)}
        else:
            runs = {mode: engine.search_text(q["query"], k=k, text_weight=w, lexical_weight=lw)
                    for mode, (w, lw) in modes.items()}
        for mode, results in runs.items():
            rel = _relevance_of(engine, results, relevant, k)[None]
            out[mode]["per_query"].append({
                "query": q["query"], **({"image": str(q["image"])} if mode == "composed" else {}),
                "relevant": n_relevant, f"p@{k}": float(precision_at_k(rel, k)[0]),
                f"ndcg@{k}": float(ndcg_at_k(rel, np.array([n_relevant]), k)[0]), f"vsc@{k}": _vsc_at(results, k),
                f"cos@{k}": summarise(results)["mean_cosine"]})
    for mode in out:
        rows = out[mode]["per_query"]
        out[mode]["mean"] = {m: (float(np.mean([r[m] for r in rows if r[m] is not None])) if rows else None)
                             for m in (f"p@{k}", f"ndcg@{k}", f"vsc@{k}", f"cos@{k}")}
    if not out["composed"]["per_query"]:
        del out["composed"]
    out["text_weight"] = text_weight
    out["lexical_weight"] = engine.lexical_weight
    out["num_queries"] = len(queries) - len(skipped)
    out["skipped_no_relevant"] = len(skipped)
    return out


def hybrid_metrics(engine: FashionSearchEngine, items, weights: list[float], k: int, depth: int) -> dict:
    """Image->image through `engine.search_item` with the re-ranker at each weight (0 = the model alone)."""
    article, colour = items["articleType"].to_numpy(), items["baseColour"].to_numpy()
    report = {}
    for weight in [0.0, *[w for w in weights if w > 0]]:
        same, same_colour, vsc = [], [], []
        for i, item_id in enumerate(tqdm(engine._ids, desc=f"hybrid w={weight:g}")):
            results = engine.search_item(item_id, k=k, rerank_weight=weight, rerank_depth=depth)
            same.append(_relevance_of(engine, results, article == article[i], k))
            same_colour.append(_relevance_of(engine, results, (article == article[i]) & (colour == colour[i]), k))
            vsc.append(_vsc_at(results, k))
        same, same_colour = np.array(same), np.array(same_colour)
        name = "model alone" if weight == 0 else f"re-ranked, weight {weight:g}"
        report[name] = {"rerank_weight": weight, f"p@{k}": float(precision_at_k(same, k).mean()),
                        "top1": float(same[:, 0].mean()), f"p@{k}_colour": float(precision_at_k(same_colour, k).mean()),
                        f"vsc@{k}": float(np.mean(vsc)) if None not in vsc else None}
    return report


def composed_report(engine: FashionSearchEngine, items, triplets, images, variants: str = "main",
                    depth: int = 50, k: int = 10) -> dict:
    """Composed search variants over the same catalog triplets, all through `engine.search_composed`."""
    relevant, exact = composed_relevance_matrix(items, triplets)
    has_combiner = getattr(engine.model, "combiner", None) is not None
    default = "combiner" if has_combiner else "sum"
    table = {  # name: (reference given as, search_composed keyword arguments)
        "image only": ("item", dict(method="sum", text_weight=0.0, item_text_weight=0.0)),
        "text only (model)": ("item", dict(method="sum", text_weight=1.0, item_text_weight=0.0)),
        "text only (item text)": ("item", dict(method="sum", text_weight=1.0, item_text_weight=1.0)),
        "sum, no attributes": ("item", dict(method="sum", item_text_weight=0.0, use_reference_attributes=False)),
        "sum": ("item", dict(method="sum", item_text_weight=0.0)),
        "sum + item text": ("item", dict(method="sum")),
    }
    if has_combiner:
        table["combiner, no attributes"] = ("item", dict(method="combiner", item_text_weight=0.0,
                                                         use_reference_attributes=False))
        table["combiner"] = ("item", dict(method="combiner", item_text_weight=0.0))
        table["combiner + item text"] = ("item", dict(method="combiner"))
    table[f"uploaded photo ({default} + item text)"] = ("image", dict(method=default))
    table[f"no attributes ({default} + item text)"] = ("item", dict(method=default, use_reference_attributes=False))
    if variants == "main":
        keep = {"image only", "sum", f"{default} + item text", f"uploaded photo ({default} + item text)", default}
        table = {name: spec for name, spec in table.items() if name in keep}
    rows = triplets.to_list()
    references = items.iloc[[engine._position[str(r["reference_id"])] for r in rows]].reset_index(drop=True)
    changed = [(r["changed_attribute"], r["target_value"]) for r in rows]
    out = {"num_triplets": len(rows), "default": f"{default} + item text",
           "text_weight": engine.model.config.composition_text_weight, "item_text_weight": engine.text_weight,
           "variants": {}}
    for name, (given, kwargs) in table.items():
        hits, exact_hits, positions, vsc = [], [], [], []
        for q, row in enumerate(tqdm(rows, desc=f"composed: {name}")):
            reference = ({"item_id": row["reference_id"]} if given == "item" else
                         {"image": images[engine._position[str(row["reference_id"])]],
                          "exclude_ids": [row["reference_id"]]})
            results = engine.search_composed(text=row["modification"], k=depth, **reference, **kwargs)
            hits.append(_relevance_of(engine, results, relevant[q], depth))
            exact_hits.append(_relevance_of(engine, results, exact[q], depth))
            positions.append(_positions(engine, results, depth))
            vsc.append(_vsc_at(results, k))
        metrics = composed_metrics(np.array(hits), np.array(exact_hits), ks=(1, k, depth))
        metrics[f"vsc@{k}"] = float(np.mean(vsc)) if None not in vsc else None
        metrics["consistency"] = attribute_consistency(references, np.array(positions), items, k=k, changed=changed)
        out["variants"][name] = metrics
    return out


def ood_report(models: dict, field: str, value: str, items, k: int) -> dict:
    """Held-out vs in-domain query sets of the same forms, per text model (model embeddings alone, no fusion)."""
    sets = ood_query_sets(items, field, value)
    held = (items[field].astype(str) == value).to_numpy()
    report = {"field": field, "value": value, "gallery_items_held_out": int(held.sum()),
              "num_queries": {s: {kind: len(q) for kind, q in v.items()} for s, v in sets.items()}, "models": {}}
    for name, state in models.items():
        row = {}
        top = rankings(state["embeds"], k)
        article = items["articleType"].to_numpy()
        same = (article[top] == article[:, None]).mean(axis=1)
        row["i2i_p@10"] = {"held_out": float(same[held].mean()), "in_domain": float(same[~held].mean())}
        if state["tokenizer"] is not None:
            unit = state["embeds"] / np.linalg.norm(state["embeds"], axis=1, keepdims=True)
            for kind, metric in (("titles", f"r@{k}"), ("attributes", f"p@{k}")):
                row[f"{kind}_{metric}"] = {}
                for which, queries in sets.items():
                    if not queries[kind]:
                        continue
                    text = encode_texts(state["model"], state["tokenizer"], [q["query"] for q in queries[kind]])
                    positions = topk_indices(text @ unit.T, k)
                    relevance = np.stack([match_mask(items, q["match"]) for q in queries[kind]])
                    rel = np.take_along_axis(relevance, positions, axis=1)
                    value_ = rel.any(axis=1).mean() if kind == "titles" else rel.mean()
                    row[f"{kind}_{metric}"][which] = float(value_)
        for metric in row.values():
            if "held_out" in metric and "in_domain" in metric:
                metric["gap"] = metric["in_domain"] - metric["held_out"]
        report["models"][name] = row
    return report


def samples(engine: FashionSearchEngine, items, images, k: int = 5) -> list[dict]:
    """The seeds' example queries through the engine: the grid's rows and the observation table's."""
    out = []
    for text in SAMPLE_TEXT_QUERIES:
        out.append({"kind": "text", "text": text, "image": None, "results": engine.search_text(text, k=k)})
    positions = {t: np.flatnonzero(items["articleType"].to_numpy() == t) for t in ("Tshirts", SAMPLE_COMPOSED[0])}
    if len(positions["Tshirts"]):
        p = int(positions["Tshirts"][0])
        out.append({"kind": "image", "text": None, "image": images[p], "description": items["title"].iloc[p],
                    "results": engine.search_item(items["id"].iloc[p], k=k)})
    if len(positions[SAMPLE_COMPOSED[0]]):
        p = int(positions[SAMPLE_COMPOSED[0]][0])
        out.append({"kind": "composed", "text": SAMPLE_COMPOSED[1], "image": images[p],
                    "results": engine.search_composed(item_id=items["id"].iloc[p], text=SAMPLE_COMPOSED[1], k=k)})
    return out


def observation_table(sample_rows: list[dict]) -> list[dict]:
    """The seeds' format: query, CosSim (mean cosine of the top 5), VSC (VSC@5) and a note."""
    summaries = [summarise(s["results"]) for s in sample_rows]
    cos = [s["mean_cosine"] for s in summaries if s["mean_cosine"] is not None]
    vsc = [s["vsc@k"] for s in summaries if s["vsc@k"] is not None]
    cos_high, vsc_high = (float(np.median(cos)) if cos else 0.0), (float(np.median(vsc)) if vsc else 0.0)
    table = []
    for s, summary in zip(sample_rows, summaries):
        label = s["text"] if s["kind"] == "text" else (
            f"[photo: {s.get('description', '')}]" if s["kind"] == "image" else f"[photo] + {s['text']}")
        table.append({"query": label, "mode": s["kind"], "cos": summary["mean_cosine"], "vsc": summary["vsc@k"],
                      "note": observation_note(summary["mean_cosine"], summary["vsc@k"], cos_high, vsc_high)})
    return table


# -- the table ---------------------------------------------------------------------------------------------------------
def flat_row(row: dict, k: int) -> dict:
    i2i, t2i = row.get("i2i") or {}, row.get("t2i") or {}
    flat = {"model": row["model"], "i2i_p": i2i.get(f"p@{k}"), "i2i_p_expanded": i2i.get(f"p@{k}_expanded"),
            "top1_expanded": i2i.get("top1_expanded"), "i2i_map": i2i.get(f"map@{k}"),
            "top1": i2i.get("top1"), "i2i_colour": i2i.get(f"p@{k}_colour"), "i2i_vsc": i2i.get(f"vsc@{k}"),
            "i2i_cos": i2i.get(f"cos@{k}"), "t2i_r1": t2i.get("r@1"), "t2i_r10": t2i.get(f"r@{k}"),
            "t2i_mrr": t2i.get("mrr"), "kagl_r10": (t2i.get("kagl") or {}).get("single_target", {}).get(f"r@{k}"),
            "fused_p": ((row.get("queries") or {}).get("fused") or {}).get(f"p@{k}"),
            "fused_vsc": ((row.get("queries") or {}).get("fused") or {}).get(f"vsc@{k}"),
            "items_per_s": round(row["items_per_s"]) if row.get("items_per_s") else None,
            "index_mb": round(row["index_bytes"] / 2**20, 2) if row.get("index_bytes") is not None else None}
    composed = (row.get("composed") or {})
    if composed:
        main = composed["variants"][composed["default"]]
        flat.update(composed_r10=main.get(f"r@{k}"), composed_r50=main.get("r@50"), composed_vsc=main.get(f"vsc@{k}"))
    return flat


COLUMNS = [("model", "model"), ("t2i_r1", "title→img R@1"), ("t2i_r10", "title→img R@10"), ("t2i_mrr", "title MRR"),
           ("kagl_r10", "KAGL R@10"), ("fused_p", "queries P@10 (fused)"), ("fused_vsc", "queries VSC@10"),
           ("i2i_p", "img→img P@10"), ("i2i_map", "img mAP@10"), ("top1", "img top-1"),
           ("i2i_p_expanded", "img→img P@10 (engine, expanded)"), ("top1_expanded", "img top-1 (engine, expanded)"),
           ("i2i_colour", "img P@10 type+colour"), ("i2i_cos", "img cos@10"), ("i2i_vsc", "img VSC@10"),
           ("composed_r10", "composed R@10"), ("composed_r50", "composed R@50"), ("composed_vsc", "composed VSC@10"),
           ("items_per_s", "images/s"), ("index_mb", "index MB")]


class Timings(dict):
    """Seconds per stage of the run (reported in results.json and printed)."""

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        yield
        self[name] = round(self.get(name, 0.0) + time.perf_counter() - started, 1)
        print(f"[{name}: {self[name]:.1f} s]")


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.time()
    timings = Timings()
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = args.k
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    gallery = load_catalog(args.catalog, split=splits, max_items=args.max_items)
    if len(gallery) < 2:
        raise SystemExit(f"the gallery (split {args.split}) has {len(gallery)} items; need at least 2")
    items = catalog_items(gallery)
    images = gallery.select_columns(["image"])["image"]
    print(f"gallery: {len(items)} items of split {args.split}")
    encoder = SentenceEncoder(args.text_encoder)
    vsc = VSCScorer(encoder, items, args.vsc_source, progress=True)

    rows, states = [], {}
    model_dirs = list(dict.fromkeys([*args.model, *args.ood_model]))
    for model_dir in model_dirs:
        name = Path(model_dir).name or "model"
        with timings(f"model {name}"):
            row, states[name] = model_row(name, model_dir, images, items, vsc, k)
        rows.append(row)
    if not args.no_baselines:
        with timings("baselines"):
            rows += baseline_rows(args, images, items, vsc, states, k)

    text_models = [n for n, s in states.items() if s["tokenizer"] is not None]
    first_text = next((n for n in text_models if n not in {Path(m).name for m in args.ood_model}), None)
    with timings("engines"):
        engines = {n: make_engine(n, states[n], items, encoder, vsc, args.text_weight,
                                  lexical_weight=args.lexical_weight) for n in text_models}
    by_name = {r["model"]: r for r in rows}
    if args.queries and text_models:
        for name in text_models:
            with timings(f"queries {name}"):
                report = query_metrics(engines[name], load_queries(args.queries), items, k, args.text_weight)
            (out_dir / f"queries_{name}.json").write_text(json.dumps(report, indent=2))
            by_name[name]["queries"] = {m: report[m]["mean"] for m in ("visual", "text", "fused", "fused_dense",
                                                                       "composed") if m in report}
            if name == first_text:
                (out_dir / "queries.json").write_text(json.dumps(report, indent=2))
    if args.rerank_model and first_text:
        r_model, _, r_processor = FashionSearchEngine.load_model(args.rerank_model)
        r_name = Path(args.rerank_model).name
        r_embeds = states[r_name]["embeds"] if r_name in states else encode_images(r_model, r_processor, images)
        r_info = {"name": r_name, "fingerprint": model_fingerprint(r_model), "embedding_dim": embedding_dim(r_model)}
        reranker = VisualReranker(r_model, r_processor, CatalogIndex.build(r_embeds, items, model_info=r_info), r_name)
        engines[first_text].reranker = reranker
        weights = [float(w) for w in args.rerank_weights.split(",") if w.strip()]
        with timings("hybrid"):
            report = hybrid_metrics(engines[first_text], items, weights, k, args.rerank_depth)
        (out_dir / "hybrid.json").write_text(json.dumps(report, indent=2))
        best = max((r for r in report.values() if r["rerank_weight"] > 0), key=lambda r: r[f"p@{k}"], default=None)
        if best:
            rows.append({"model": f"hybrid: {first_text} top-{args.rerank_depth} + {r_name} (w={best['rerank_weight']:g})",
                         "i2i": {key: v for key, v in best.items() if key != "rerank_weight"}})
        by_name[first_text]["hybrid"] = report
    if args.composed and text_models:
        triplets = catalog_triplets(gallery, seed=0)
        if args.composed_max:
            triplets = triplets.select(range(min(args.composed_max, len(triplets))))
        for name in text_models:
            if name in {Path(m).name for m in args.ood_model}:
                continue
            with timings(f"composed {name}"):
                report = composed_report(engines[name], items, triplets, images, args.composed_variants, k=k)
            (out_dir / (f"composed_{name}.json" if name != first_text else "composed.json")).write_text(
                json.dumps(report, indent=2))
            by_name[name]["composed"] = report
    ood = None
    if args.ood:
        field, _, value = args.ood.partition("=")
        with timings("ood"):
            ood = ood_report({n: states[n] for n in states}, field, value, items, k)
        (out_dir / "ood.json").write_text(json.dumps(ood, indent=2))
    protocols = {}
    for name in text_models:
        engine = engines[name]

        def compose(refs, texts, engine=engine):
            import torch

            with torch.inference_mode():
                text = torch.from_numpy(engine.encode_texts(texts))
                return engine.model.get_composed_features(image_embeds=torch.from_numpy(refs), text_embeds=text).numpy()

        if args.fashion_iq_images:
            protocols.setdefault(name, {})["fashion_iq"] = evaluate_fashion_iq(
                args.fashion_iq_root, args.fashion_iq_images, engine.encode_images, compose,
                exclude_reference=args.fashion_iq_exclude_reference)
        if args.fashion200k:
            queries_file = Path(args.fashion200k) / "test_queries.txt"  # TIRG's released queries, when present
            protocols.setdefault(name, {})["fashion200k"] = evaluate_fashion200k(
                Path(args.fashion200k) / "labels", args.fashion200k, engine.encode_images, compose,
                test_queries=queries_file if queries_file.exists() else None)

    results = {"gallery": {"split": args.split, "items": len(items), "catalog": str(args.catalog)},
               "command": "python evaluate.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
               "k": k, "vsc": {"encoder": encoder.name, "source": args.vsc_source,
                               "shares_encoder_with": "the fused item-text score"},
               "rows": rows, "ood": ood, "protocols": protocols}
    if first_text:
        with timings("samples"):
            sample_rows = samples(engines[first_text], items, images)
        results["observations"] = observation_table(sample_rows)
    results["elapsed_s"] = round(time.time() - started, 1)
    results["timings_s"] = dict(timings)
    flat = [flat_row(r, k) for r in rows]
    results["table"] = flat
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    (out_dir / "metrics.json").write_text(json.dumps({r["model"]: r for r in rows}, indent=2, default=_json_default))
    markdown = results_markdown(results, flat, k)
    (out_dir / "results.md").write_text(markdown)
    print("\n" + markdown)
    if args.plots:
        plot_comparison(flat, [("t2i_r10", f"title→image R@{k}"), ("i2i_p", f"image→image P@{k}"),
                               ("i2i_colour", f"P@{k} type+colour"), ("composed_r10", f"composed R@{k}"),
                               ("i2i_vsc", f"VSC@{k} (image)")], out_dir / "comparison.png",
                        title=f"{args.split} split, {len(items)} items")
        for r in rows:
            consistency = {"image query": (r.get("i2i") or {}).get("consistency")}
            if r.get("composed"):
                consistency["composed query"] = r["composed"]["variants"][r["composed"]["default"]]["consistency"]
            consistency = {key: v for key, v in consistency.items() if v}
            if consistency:
                plot_attribute_consistency(consistency, out_dir / f"consistency_{_slug(r['model'])}.png",
                                           title=f"{r['model']}: share of the top {k} keeping the query's attribute")
        if first_text:
            grid = [{"text": s["text"], "image": s["image"],
                     "results": [{"image": images[engines[first_text]._position[res.id]], "title": res.title,
                                  "score": res.visual_score, "vsc": res.vsc, "relevant": None}
                                 for res in s["results"]]} for s in sample_rows]
            query_grid(grid, out_dir / "samples.png")
    if args.model_card:
        from modeling.evaluation.model_card import update_model_card

        update_model_card(args.model_card, results, markdown, rows[0])
    print(f"\nwrote {out_dir}/results.json, results.md" + (", plots" if args.plots else "")
          + f" in {results['elapsed_s']:.0f} s")
    return results


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def results_markdown(results: dict, flat: list[dict], k: int) -> str:
    g = results["gallery"]
    parts = [f"Gallery: {g['items']:,} items of the `{g['split']}` split. VSC: cosine of "
             f"{results['vsc']['encoder']} embeddings of the query's and the result's descriptions "
             f"({results['vsc']['source']}); it shares its encoder with the fused item-text score.",
             markdown_table(flat, COLUMNS, bold_best=["t2i_r10", "i2i_p", "top1", "i2i_colour", "composed_r10"])]
    if results.get("observations"):
        parts += ["Observations (the seeds' format; CosSim = mean cosine of the top 5, VSC = VSC@5, notes relative to "
                  "the medians of these queries):",
                  markdown_table(results["observations"], [("query", "query"), ("cos", "CosSim"), ("vsc", "VSC"),
                                                          ("note", "notes")], digits=2)]
    consistency = []
    for row in results["rows"]:
        for mode, values in (("image", (row.get("i2i") or {}).get("consistency")),
                             ("composed", (row.get("composed") or {}).get("variants", {}).get(
                                 (row.get("composed") or {}).get("default"), {}).get("consistency"))):
            if values:
                consistency.append({"model": f"{row['model']} ({mode})", **values})
    if consistency:
        attrs = ["articleType", "baseColour", "gender", "usage", "season", CHANGED]
        parts += [f"Per-attribute consistency: share of the top {k} keeping the query item's attribute:",
                  markdown_table(consistency, [("model", "model / query"), *[(a, a) for a in attrs]])]
    ood = results.get("ood")
    if ood:
        lines = []
        for name, row in ood["models"].items():
            for metric, values in row.items():
                lines.append({"model": name, "metric": metric, **values})
        parts += [f"Out-of-domain: {ood['field']} = {ood['value']} ({ood['gallery_items_held_out']} gallery items; "
                  f"queries: {ood['num_queries']}), model embeddings alone:",
                  markdown_table(lines, [("model", "model"), ("metric", "metric"), ("held_out", "held out"),
                                         ("in_domain", "in domain"), ("gap", "gap")])]
    lines = []
    for name, protos in results.get("protocols", {}).items():
        fiq = protos.get("fashion_iq")
        if fiq:
            for category, r in [*fiq["categories"].items(), ("average", fiq["average"])]:
                lines.append({"model": name, "protocol": f"Fashion-IQ val {category}", "r@1": None,
                              "r@10": r.get("r@10"), "r@50": r.get("r@50"), "mean": r.get("mean"),
                              "queries": r.get("num_queries", fiq["num_queries"])})
        f200k = protos.get("fashion200k")
        if f200k:
            lines.append({"model": name, "protocol": f"Fashion200K test ({f200k['query_source']} queries)",
                          "r@1": f200k.get("r@1"), "r@10": f200k.get("r@10"), "r@50": f200k.get("r@50"),
                          "mean": None, "queries": f200k.get("num_queries")})
    for row in results["rows"]:
        kagl = (row.get("t2i") or {}).get("kagl")
        if kagl:
            for variant in ("single_target", "any_same_title"):
                lines.append({"model": row["model"], "protocol": f"KAGL title→image, {variant.replace('_', ' ')}",
                              "r@1": kagl[variant]["r@1"], "r@10": kagl[variant].get(f"r@{k}"),
                              "mrr": kagl[variant]["mrr"], "queries": kagl["num_queries"]})
    if lines:
        parts += ["Standard protocols:", markdown_table(lines, [
            ("model", "model"), ("protocol", "protocol"), ("r@1", "R@1"), ("r@10", "R@10"), ("r@50", "R@50"),
            ("mean", "mean(R@10, R@50)"), ("mrr", "MRR"), ("queries", "queries")])]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
