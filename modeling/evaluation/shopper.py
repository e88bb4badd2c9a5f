"""How the served engine does on the words shoppers type: the before/after table of query understanding.

    python -m modeling.evaluation.shopper --model runs/dual-encoder --catalog ../shared/data

Loads the engine as the app does (the full catalog's index, the learned intent heads) and restricts every result to
the gallery splits (default val+test) with a filter. Per query file:
- text files: `visual`, `item text`, `fused` (what the engine served before query understanding), `fused +
  intent` (boosts and negation penalties, no collapsing) and `served` (intents + near-duplicates collapsed), each
  P@10 beside its ideal and nDCG@10, plus P@10 per tag (negation, gender, misspelling, ...) and, for gender-tagged
  queries, the share of the top 10 of the intended gender;
- composed files ("image" lines): composed search without intents, with them, and as served;
- "more like this" of sampled gallery items, by catalog item and by its photo: type and type+colour P@10 with the
  consistency term off and on (ideal beside);
- whether any served top 10 holds two near-duplicates, and the query-understanding latency (p50/p95).
Writes `report.json` and `report.md` to `--output`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from modeling.data.queries import load_queries, relevance_mask
from modeling.evaluation.metrics import ndcg_at_k
from modeling.retrieval.engine.search import FashionSearchEngine
from modeling.utils.io import atomic_write_text

TEXT_FILES = ("queries/everyday_dev.jsonl", "queries/everyday_test.jsonl", "queries/shopper_dev.jsonl", "queries/shopper_test.jsonl",
              "queries/dev.jsonl", "queries/test.jsonl")
COMPOSED_FILES = ("queries/composed_shopper_dev.jsonl", "queries/composed_shopper_test.jsonl")
K = 10


def _scores(engine, results, relevant: np.ndarray) -> tuple[float, float]:
    hits = np.zeros((1, K), dtype=bool)
    for i, r in enumerate(results[:K]):
        hits[0, i] = relevant[engine.position(r.id)]
    return float(hits.mean()), float(ndcg_at_k(hits, np.array([int(relevant.sum())]), K)[0])


def text_report(engine, queries, gallery: np.ndarray, filters: dict) -> dict:
    modes = {"visual": {"text_weight": 0.0, "intent": False, "collapse": False},
             "item text": {"text_weight": 1.0, "intent": False, "collapse": False},
             "fused": {"intent": False, "collapse": False},
             "fused + intent": {"collapse": False},
             "served": {}}
    rows = {m: defaultdict(list) for m in modes}
    gender_share = {m: [] for m in modes}
    items = engine.index.items
    for q in tqdm(queries, desc="text queries", leave=False):
        relevant = relevance_mask(items, q["match"], q.get("exclude")) & gallery
        for mode, options in modes.items():
            results = engine.search_text(q["query"], k=K, filters=filters, **options)
            p, ndcg = _scores(engine, results, relevant)
            for tag in ["all", *q.get("tags", [])]:
                rows[mode][tag].append(p)
            rows[mode]["ndcg"].append(ndcg)
            rows[mode]["ideal"].append(min(int(relevant.sum()), K) / K)
            if "gender" in q.get("tags", []) and "gender" in q["match"]:
                gender_share[mode].append(np.mean([r.attributes.get("gender") in q["match"]["gender"]
                                                   for r in results]) if results else 0.0)
    return {mode: {"p@10": _mean(v["all"]), "ideal": _mean(v["ideal"]), "ndcg@10": _mean(v["ndcg"]),
                   "by_tag": {t: _mean(x) for t, x in sorted(v.items()) if t not in ("all", "ndcg", "ideal")},
                   "gender_share": _mean(gender_share[mode]) if gender_share[mode] else None}
            for mode, v in rows.items()}


def composed_report(engine, queries, gallery: np.ndarray, filters: dict) -> dict:
    modes = {"composed": {"intent": False, "collapse": False}, "composed + intent": {"collapse": False},
             "served": {}}
    out = {m: {"p": [], "ideal": [], "ndcg": []} for m in modes}
    for q in tqdm(queries, desc="composed queries", leave=False):
        relevant = relevance_mask(engine.index.items, q["match"], q.get("exclude")) & gallery
        relevant[engine.position(q["image"])] = False
        for mode, options in modes.items():
            results = engine.search_composed(item_id=q["image"], text=q["query"], k=K, filters=filters, **options)
            p, ndcg = _scores(engine, results, relevant)
            out[mode]["p"].append(p)
            out[mode]["ndcg"].append(ndcg)
            out[mode]["ideal"].append(min(int(relevant.sum()), K) / K)
    return {m: {"p@10": _mean(v["p"]), "ideal": _mean(v["ideal"]), "ndcg@10": _mean(v["ndcg"])} for m, v in out.items()}


def more_like_this_report(engine, split: str, gallery: np.ndarray, filters: dict, n: int, seed: int = 0) -> dict:
    items = engine.index.items
    article, colour = items["articleType"].to_numpy(), items["baseColour"].to_numpy()
    positions = np.flatnonzero((items["split"].astype(str) == split).to_numpy() & gallery)
    positions = np.random.default_rng(seed).choice(positions, min(n, positions.size), replace=False)
    same_type_n = {a: int(((article == a) & gallery).sum()) for a in set(article[positions])}
    pair_n = {(a, c): int(((article == a) & (colour == c) & gallery).sum()) for a, c in
              zip(article[positions], colour[positions])}
    ideal_type = np.mean([min(same_type_n[article[p]] - 1, K) / K for p in positions])
    ideal_pair = np.mean([min(pair_n[(article[p], colour[p])] - 1, K) / K for p in positions])
    out = {"queries": int(positions.size), "split": split, "ideal_type": float(ideal_type),
           "ideal_type_colour": float(ideal_pair)}
    runs = {
        "item, plain": lambda p: engine.search_item(engine.ids[p], k=K, filters=filters, consistency={},
                                                    collapse=False),
        "item, consistency": lambda p: engine.search_item(engine.ids[p], k=K, filters=filters, collapse=False),
        "photo, plain": lambda p: engine.search_image(items["image_path"].iloc[p], k=K, filters=filters,
                                                      exclude_ids=[engine.ids[p]], consistency={}, collapse=False),
        "photo, consistency": lambda p: engine.search_image(items["image_path"].iloc[p], k=K, filters=filters,
                                                            exclude_ids=[engine.ids[p]], collapse=False),
    }
    for name, run in runs.items():
        same_type = same_pair = 0.0
        for p in tqdm(positions, desc=name, leave=False):
            got = engine.positions(r.id for r in run(p))
            same_type += float((article[got] == article[p]).sum()) / K
            same_pair += float(((article[got] == article[p]) & (colour[got] == colour[p])).sum()) / K
        out[name] = {"type_p@10": same_type / positions.size, "type_colour_p@10": same_pair / positions.size}
    return out


def duplicates_in_served(engine, queries, filters: dict) -> dict:
    groups = engine.duplicates.groups()
    clashes = {"served": 0, "uncollapsed": 0}
    for q in queries:
        for mode, collapse in (("served", True), ("uncollapsed", False)):
            found = [groups[engine.position(r.id)] for r in engine.search_text(q["query"], k=K, filters=filters,
                                                                              collapse=collapse)]
            clashes[mode] += int(len(found) != len(set(found)))
    return {"queries": len(queries), "top10s_with_duplicates": clashes}


def understanding_latency(engine, queries) -> dict:
    """What query understanding adds to a text query: parsing (the learned heads' MiniLM embedding is the one the
    item-text score needs anyway, so it is computed first, as in a search) and the boosts over every item."""
    everything = np.arange(len(engine.ids))
    engine.understand("warm up")
    times = []
    for q in queries:
        engine.understand(q["query"])  # fills the shared embedding cache, as the search's item-text score would
        start = time.perf_counter()
        engine.intents.scores(engine.understand(q["query"]), everything)
        times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "queries": len(times)}


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown(report: dict) -> str:
    lines = ["# Shopper-language evaluation", "", f"Command: `{report['command']}`", "",
             f"Gallery: {', '.join(report['gallery'])} ({report['gallery_size']} items), k = 10.", ""]
    for name, modes in report["text"].items():
        lines += [f"## {name}", "", "| ranking | P@10 | ideal | nDCG@10 | gender share | negation P@10 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for mode, m in modes.items():
            lines.append(f"| {mode} | {_fmt(m['p@10'])} | {_fmt(m['ideal'])} | {_fmt(m['ndcg@10'])} | "
                         f"{_fmt(m['gender_share'])} | {_fmt(m['by_tag'].get('negation'))} |")
        tags = sorted(next(iter(modes.values()))["by_tag"])
        if tags:
            lines += ["", "P@10 by tag: | ranking | " + " | ".join(tags) + " |",
                      "|---|" + "---:|" * len(tags)]
            for mode, m in modes.items():
                lines.append(f"| {mode} | " + " | ".join(_fmt(m["by_tag"][t]) for t in tags) + " |")
        lines.append("")
    for name, modes in report["composed"].items():
        lines += [f"## {name}", "", "| ranking | P@10 | ideal | nDCG@10 |", "|---|---:|---:|---:|"]
        lines += [f"| {mode} | {_fmt(m['p@10'])} | {_fmt(m['ideal'])} | {_fmt(m['ndcg@10'])} |"
                  for mode, m in modes.items()]
        lines.append("")
    mlt = report["more_like_this"]
    lines += [f"## More like this ({mlt['queries']} {mlt['split']} items)", "",
              f"Ideal: type {mlt['ideal_type']:.3f}, type + colour {mlt['ideal_type_colour']:.3f}.", "",
              "| query | type P@10 | type + colour P@10 |", "|---|---:|---:|"]
    lines += [f"| {name} | {mlt[name]['type_p@10']:.3f} | {mlt[name]['type_colour_p@10']:.3f} |"
              for name in mlt if isinstance(mlt[name], dict)]
    d, lat = report["duplicates"], report["latency"]
    lines += ["", f"Top 10s holding two near-duplicates ({d['queries']} queries): served "
              f"{d['top10s_with_duplicates']['served']}, uncollapsed {d['top10s_with_duplicates']['uncollapsed']}.",
              f"Query understanding: p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms per query.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/dual-encoder")
    p.add_argument("--index", default=None, help="default: <model>/index")
    p.add_argument("--catalog", default="../shared/data")
    p.add_argument("--gallery", default="val,test", help="splits results may come from")
    p.add_argument("--text-files", nargs="*", default=list(TEXT_FILES))
    p.add_argument("--composed-files", nargs="*", default=list(COMPOSED_FILES))
    p.add_argument("--image-split", default="test", help="split the more-like-this queries are sampled from")
    p.add_argument("--image-queries", type=int, default=500)
    p.add_argument("--output", default="runs/eval/shopper")
    args = p.parse_args(argv)
    engine = FashionSearchEngine.load(args.model, args.index or Path(args.model) / "index", catalog=args.catalog,
                                      vsc_source=None)
    splits = [s.strip() for s in args.gallery.split(",") if s.strip()]
    filters = {"split": splits}
    gallery = engine.index.items["split"].astype(str).isin(splits).to_numpy()
    texts = {Path(f).name: load_queries(f) for f in args.text_files}
    command = " ".join(["python -m modeling.evaluation.shopper", *(sys.argv[1:] if argv is None else argv)])
    report = {"command": command, "gallery": splits,
              "gallery_size": int(gallery.sum()),
              "text": {name: text_report(engine, qs, gallery, filters) for name, qs in texts.items()},
              "composed": {Path(f).name: composed_report(engine, load_queries(f), gallery, filters)
                           for f in args.composed_files},
              "more_like_this": more_like_this_report(engine, args.image_split, gallery, filters, args.image_queries),
              "duplicates": duplicates_in_served(engine, [q for qs in texts.values() for q in qs], filters),
              "latency": understanding_latency(engine, [q for qs in texts.values() for q in qs])}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "report.md", markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
