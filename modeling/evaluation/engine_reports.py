"""Evaluation sections measured through the search engine (`FashionSearchEngine`), as shoppers meet it.

Shopper queries (`query_metrics`: visual only, item text only, fused), hybrid re-ranking (`hybrid_metrics`, through
`search_item`), composed search over catalog triplets (`composed_report`, through `search_composed`), and the
seeds' sample queries with their observation table (`samples`, `observation_table`). Ranked results are mapped to
gallery positions with the engine's public `position` / `positions`.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from modeling.data.text import item_description
from modeling.data.composed import composed_relevance_matrix
from modeling.data.queries import relevance_mask
from modeling.encoders.loading import embedding_dim, has_text_tower, model_fingerprint
from modeling.encoders.sentence import SentenceEncoder
from modeling.evaluation.analysis import attribute_consistency
from modeling.evaluation.metrics import ndcg_at_k, precision_at_k
from modeling.evaluation.tasks import composed_metrics
from modeling.retrieval.backends.faiss.index import CatalogIndex
from modeling.retrieval.engine.search import DEFAULT_LEXICAL_WEIGHT, FashionSearchEngine, QueryError
from modeling.retrieval.engine.vsc import VSCScorer, observation_note, summarise

# The seeds' own example queries, shown in the sample grid and the observation table.
SAMPLE_TEXT_QUERIES = ("red summer dress", "white polo t-shirts", "watches for men", "men formal black shoes")
SAMPLE_COMPOSED = ("Dresses", "is shorter and sleeveless")


def make_engine(name: str, state: dict, items, encoder: SentenceEncoder, vsc: VSCScorer, text_weight: float,
                reranker=None, lexical_weight: float = DEFAULT_LEXICAL_WEIGHT) -> FashionSearchEngine:
    """The engine over the gallery for a loaded model (`state`: model, tokenizer, processor, embeds); item texts
    are encoded for models with a text tower (fused search)."""
    model = state["model"]
    info = {"name": name, "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
    text = has_text_tower(model)
    index = CatalogIndex.build(
        state["embeds"], items, model_info=info,
        text_embeddings=encoder.encode([item_description(r) for r in items.to_dict("records")]) if text else None,
        text_encoder_info={"name": encoder.name, "embedding_dim": encoder.dim} if text else None)
    return FashionSearchEngine(model, state["tokenizer"], state["processor"], index, encoder, text_weight=text_weight,
                               model_name=name, reranker=reranker, vsc=vsc, lexical_weight=lexical_weight)


def result_positions(engine: FashionSearchEngine, results, depth: int) -> np.ndarray:
    """Gallery positions of the ranked results, -1 past the end."""
    row = np.full(depth, -1, dtype=np.int64)
    positions = engine.positions([r.id for r in results[:depth]])
    row[:len(positions)] = positions
    return row


def result_relevance(engine: FashionSearchEngine, results, relevant: np.ndarray, depth: int) -> np.ndarray:
    """Whether each of the top `depth` results is `relevant` (a per-item mask), False past the end."""
    positions = result_positions(engine, results, depth)
    return (positions >= 0) & relevant[np.maximum(positions, 0)]


def _vsc_at(results, k: int) -> float | None:
    return summarise(results[:k])["vsc@k"]


def query_metrics(engine: FashionSearchEngine, queries: list[dict], items, k: int, text_weight: float) -> dict:
    """Text lines: visual-only, item-text-only (dense + keywords), fused, and fused without the keyword match
    (`fused_dense`) rankings, all without query understanding or collapsing; `fused_intent`: fused with the query's
    intents (boosts, negations); `served`: as the app serves it (intents, near-duplicates collapsed). Composed
    lines (`"image"`): composed search with intents (`composed`) and as served (`composed_served`)."""
    plain = {"intent": False, "collapse": False}
    modes = {"visual": (0.0, None, plain), "text": (1.0, None, plain), "fused": (text_weight, None, plain),
             "fused_dense": (text_weight, 0.0, plain), "fused_intent": (text_weight, None, {"collapse": False}),
             "served": (text_weight, None, {})}
    out = {mode: {"per_query": []} for mode in [*modes, "composed", "composed_served"]}
    skipped = []
    for q in tqdm(queries, desc="queries"):
        relevant = relevance_mask(items, q["match"], q.get("exclude"))
        reference = None if q.get("image") is None else str(q["image"])
        if reference is not None:
            try:
                relevant[engine.position(reference)] = False  # the reference never comes back
            except QueryError:
                raise SystemExit(f"query {q['query']!r}: no item {reference!r} in the gallery") from None
        n_relevant = int(relevant.sum())
        if n_relevant == 0:
            skipped.append(q["query"])
            continue
        if reference is not None:
            runs = {"composed": engine.search_composed(item_id=reference, text=q["query"], k=k, collapse=False),
                    "composed_served": engine.search_composed(item_id=reference, text=q["query"], k=k)}
        else:
            runs = {mode: engine.search_text(q["query"], k=k, text_weight=w, lexical_weight=lw, **options)
                    for mode, (w, lw, options) in modes.items()}
        for mode, results in runs.items():
            rel = result_relevance(engine, results, relevant, k)[None]
            out[mode]["per_query"].append({
                "query": q["query"], **({"image": str(q["image"])} if mode.startswith("composed") else {}),
                "relevant": n_relevant, f"p@{k}": float(precision_at_k(rel, k)[0]),
                f"ideal_p@{k}": min(n_relevant, k) / k,
                f"ndcg@{k}": float(ndcg_at_k(rel, np.array([n_relevant]), k)[0]), f"vsc@{k}": _vsc_at(results, k),
                f"cos@{k}": summarise(results)["mean_cosine"]})
    for mode in out:
        rows = out[mode]["per_query"]
        out[mode]["mean"] = {m: (float(np.mean([r[m] for r in rows if r[m] is not None])) if rows else None)
                             for m in (f"p@{k}", f"ideal_p@{k}", f"ndcg@{k}", f"vsc@{k}", f"cos@{k}")}
    for mode in [m for m in out if not out[m]["per_query"]]:
        del out[mode]
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
        for i, item_id in enumerate(tqdm(engine.ids, desc=f"hybrid w={weight:g}")):
            results = engine.search_item(item_id, k=k, rerank_weight=weight, rerank_depth=depth)
            same.append(result_relevance(engine, results, article == article[i], k))
            same_colour.append(result_relevance(engine, results, (article == article[i]) & (colour == colour[i]), k))
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
    reference_positions = engine.positions([str(r["reference_id"]) for r in rows])
    references = items.iloc[reference_positions].reset_index(drop=True)
    changed = [(r["changed_attribute"], r["target_value"]) for r in rows]
    out = {"num_triplets": len(rows), "default": f"{default} + item text",
           "text_weight": engine.model.config.composition_text_weight, "item_text_weight": engine.text_weight,
           "variants": {}}
    for name, (given, kwargs) in table.items():
        hits, exact_hits, positions, vsc = [], [], [], []
        for q, row in enumerate(tqdm(rows, desc=f"composed: {name}")):
            reference = ({"item_id": row["reference_id"]} if given == "item" else
                         {"image": images[int(reference_positions[q])], "exclude_ids": [row["reference_id"]]})
            results = engine.search_composed(text=row["modification"], k=depth, **reference, **kwargs)
            hits.append(result_relevance(engine, results, relevant[q], depth))
            exact_hits.append(result_relevance(engine, results, exact[q], depth))
            positions.append(result_positions(engine, results, depth))
            vsc.append(_vsc_at(results, k))
        metrics = composed_metrics(np.array(hits), np.array(exact_hits), ks=(1, k, depth))
        metrics[f"vsc@{k}"] = float(np.mean(vsc)) if None not in vsc else None
        metrics["consistency"] = attribute_consistency(references, np.array(positions), items, k=k, changed=changed)
        out["variants"][name] = metrics
    return out


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


def sample_grid(engine: FashionSearchEngine, sample_rows: list[dict], images) -> list[dict]:
    """The sample queries' rows as `query_grid` draws them (samples.png)."""
    return [{"text": s["text"], "image": s["image"],
             "results": [{"image": images[engine.position(res.id)], "title": res.title, "score": res.visual_score,
                          "vsc": res.vsc, "relevant": None} for res in s["results"]]} for s in sample_rows]


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


__all__ = ["SAMPLE_COMPOSED", "SAMPLE_TEXT_QUERIES", "composed_report", "hybrid_metrics", "make_engine",
           "observation_table", "query_metrics", "result_positions", "result_relevance", "sample_grid", "samples"]
