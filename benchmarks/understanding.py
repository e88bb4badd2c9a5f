"""What query understanding adds per query: parsing time (spelling, phrases, negations, context) with each context
finder, p50 / p95 over the dev query files.

    python benchmarks/understanding.py [--catalog ../shared/data] [--repeats 3]

The parser is built over the catalog once (as the engine does); each query of queries/shopper_dev.jsonl,
queries/everyday_dev.jsonl and queries/dev.jsonl is parsed `--repeats` times after a warm-up, one at a time.
Rows: no context finder (spelling and phrases only), the rules (`context.RuleContext`, served) and spaCy's small
English pipeline (`context.SpacyContext`). Target: <= 5 ms p95 for what is served. Writes runs/bench/understanding.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling.data.queries import load_queries  # noqa: E402
from modeling.retrieval.understanding.parser import CONTEXT_FINDER, QueryParser  # noqa: E402
from modeling.utils.io import atomic_write_text  # noqa: E402

FILES = ("queries/shopper_dev.jsonl", "queries/everyday_dev.jsonl", "queries/dev.jsonl")


def timings(parser: QueryParser, queries: list[str], repeats: int) -> np.ndarray:
    for query in queries[:20]:  # warm-up: lazy loads, caches
        parser.parse(query)
    times = []
    for _ in range(repeats):
        for query in queries:
            start = time.perf_counter()
            parser.parse(query)
            times.append(1000 * (time.perf_counter() - start))
    return np.array(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", default="../shared/data", help="folder holding metadata.csv")
    p.add_argument("--files", nargs="*", default=list(FILES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", default="runs/bench/understanding.json")
    args = p.parse_args(argv)
    items = pd.read_csv(Path(args.catalog) / "metadata.csv", dtype=str).fillna("")
    queries = [q["query"] for f in args.files if Path(f).exists() for q in load_queries(f)]
    print(f"{len(queries)} queries x {args.repeats}; served context finder: {CONTEXT_FINDER}\n")
    print("| context finder | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|")
    report = {"queries": len(queries), "repeats": args.repeats}
    for finder in (None, "rules", "spacy"):
        t = timings(QueryParser.from_items(items, context=finder), queries, args.repeats)
        report[str(finder)] = {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95)),
                               "max_ms": float(t.max())}
        r = report[str(finder)]
        print(f"| {finder or 'none'} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['max_ms']:.1f} |", flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
