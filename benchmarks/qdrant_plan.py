"""The bounded Qdrant query plan, measured: recall@10 and latency of the served query against the exact ranking.

    python benchmarks/qdrant_plan.py --model runs/world-40-p035-composed --qdrant-path runs/qdrant-edge-15k \\
        --depths 1000,250,100,50 --output runs/qdrant-edge-plan.json

The reference is the FAISS engine on the same model and catalog: exact fused scoring of every item (the catalog is
below `EXACT_FUSION_LIMIT`). The store is the model's collection, built by `python -m
modeling.retrieval.engine.build_index --vector-store qdrant-edge --qdrant-path DIR` (or `--vector-store qdrant` with
`--qdrant-url`). Every text and composed line of `queries/*.jsonl` is served both ways with the engine's default
settings (intents, negations, fusion with keywords, near-duplicate collapsing); for each prefetch depth per signal
(`QdrantConfig.prefetch_depth`) the script prints recall@10 (the share of the exact top 10 the store returns), how
many queries lost anything (and which), and the p50 / p95 latency of the served query. Every query is served once
before the timed passes, so both engines' query-encoding caches are warm and the latencies compare the ranking
(what the plan changes); query encoding adds the same to both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def workload(query_dir: Path, limit: int | None = None) -> list[tuple[str, dict]]:
    """(kind, line) of every text and composed query line, in a fixed order."""
    from modeling.data.queries import load_queries

    lines = [("composed" if "image" in line else "text", line)
             for path in sorted(query_dir.glob("*.jsonl")) for line in load_queries(path)]
    return lines[:limit] if limit else lines


def serve(engine, kind: str, line: dict, k: int = 10) -> tuple[list[str], float]:
    """The top-k ids of one served query and its latency in ms."""
    start = time.perf_counter()
    if kind == "composed":
        results = engine.search_composed(text=line["query"], item_id=str(line["image"]), k=k)
    else:
        results = engine.search_text(line["query"], k=k)
    return [r.id for r in results], 1000 * (time.perf_counter() - start)


def measure(store, queries, exact: list[list[str]], depth: int, plan: str = "nested", boosts: int = 1) -> dict:
    """recall@10 and latency of the store at one prefetch depth, query plan (`QdrantConfig.plan`) and number of
    boost candidate lists (`QdrantConfig.boost_prefetches`)."""
    config = store.backend.store.config
    config.prefetch_depth, config.plan, config.boost_prefetches = depth, plan, boosts
    recalls, times = [], []
    for (kind, line), want in zip(queries, exact):
        got, ms = serve(store, kind, line)
        recalls.append(len(set(got) & set(want)) / max(len(want), 1))
        times.append(ms)
    missed = [f"{line['query']!r} ({kind}): {recall:.1f}"
              for (kind, line), recall in zip(queries, recalls) if recall < 1]
    recalls = np.array(recalls)
    return {"depth": depth, "plan": plan, "boost_prefetches": boosts, "missed": missed,
            "recall@10": float(recalls.mean()), "min_recall": float(recalls.min()), "queries_below_1": int((recalls < 1).sum()),
            "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def markdown(rows: list[dict], faiss_row: dict, queries: int, store_name: str) -> str:
    lines = [f"| plan ({queries} queries) | recall@10 | worst query | queries < 1 | p50 ms | p95 ms |",
             "|---|---:|---:|---:|---:|---:|",
             f"| FAISS, exact (the reference) | 1.000 | 1.00 | 0 | {faiss_row['p50_ms']:.1f} | "
             f"{faiss_row['p95_ms']:.1f} |"]
    lines += [f"| {store_name}, {r['depth']:,} per signal, {r['plan']}, {r['boost_prefetches']} boost list(s) | "
              f"{r['recall@10']:.4f} | "
              f"{r['min_recall']:.2f} | {r['queries_below_1']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/world-40-p035-composed")
    parser.add_argument("--index", default=None, help="the FAISS index folder (default <model>/index)")
    parser.add_argument("--catalog", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--vector-store", choices=("qdrant-edge", "qdrant"), default="qdrant-edge")
    parser.add_argument("--qdrant-path", default="runs/qdrant-edge-15k")
    parser.add_argument("--qdrant-url", default=None)
    parser.add_argument("--queries", default=str(ROOT / "queries"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N query lines")
    parser.add_argument("--depths", default="1000,250,100,50")
    parser.add_argument("--plans", default="nested", help="query plans to compare (nested,two-stage)")
    parser.add_argument("--boost-prefetches", default="1", help="boost candidate lists to compare (e.g. 0,1,2)")
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    from modeling.retrieval.backends.qdrant.store import QdrantConfig
    from modeling.retrieval.engine.search import FashionSearchEngine

    index = args.index or str(Path(args.model) / "index")
    faiss = FashionSearchEngine.load(args.model, index, catalog=args.catalog)
    config = QdrantConfig(url=args.qdrant_url, path=None if args.qdrant_url else args.qdrant_path,
                          edge=args.vector_store == "qdrant-edge")
    store = FashionSearchEngine.load(args.model, index, catalog=args.catalog, sentence_encoder=faiss.sentence_encoder,
                                     vector_store=args.vector_store, qdrant=config)
    queries = workload(Path(args.queries), args.limit)
    exact = [serve(faiss, kind, line)[0] for kind, line in queries]  # also caches FAISS's query encodings
    for kind, line in queries:  # the store's engine caches its own: every row then times the ranking
        serve(store, kind, line)
    times = [serve(faiss, kind, line)[1] for kind, line in queries]
    print(f"FAISS: {len(queries)} queries served", flush=True)
    faiss_row = {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}
    rows = []
    for depth, plan, boosts in ((int(d), p, int(b)) for d in args.depths.split(",") for p in args.plans.split(",")
                                for b in args.boost_prefetches.split(",")):
        rows.append(measure(store, queries, exact, depth, plan, boosts))
        print(json.dumps({key: value for key, value in rows[-1].items() if key != "missed"}), flush=True)
        print("  queries missing anything: " + "; ".join(rows[-1]["missed"][:12]), flush=True)
    print(markdown(rows, faiss_row, len(queries), args.vector_store))
    if args.output:
        Path(args.output).write_text(json.dumps({"faiss": faiss_row, "rows": rows, "queries": len(queries)},
                                                indent=1))
    return rows


if __name__ == "__main__":
    main()
