"""The Qdrant backend at catalogue scale on the real engine (qdrant-edge): `benchmarks/scale.py --backend qdrant-edge`.

    python benchmarks/scale.py --backend qdrant-edge --n 1000000 --workdir runs/qdrant-edge-scale-1m

Builds a synthetic collection of `--n` items with the production schema (`create_collection`, `item_payload`,
`point_id`): `visual` (256-d) and `title` (384-d) clustered unit vectors (`scale.clustered_vectors`), a sparse
`keywords` vector of six Zipf-drawn words per item, the filter attributes, and a `group` payload putting every tenth
item with the one before (near-duplicates). Upserted in batches, then optimized (HNSW graphs, int8 copies) as the
build command does. Then the served ranking of `--queries` synthetic queries, as `QdrantBackend.rank` sends it:
fusion `0.3 visual + 0.7 (title + 0.4 keywords / max keywords)`, a gender filter, two intent boosts (article type
+0.10, colour +0.05) as payload terms, the bounded plan (`--depth` per signal), near-duplicates collapsed by the
`group` payload over the top `max(4 k, 50)`. The exact reference is the same formula, filter, boosts and collapse
in numpy over every item. Prints build time, disk bytes per item, recall@10 and p50 / p95 latency, and the RSS of a
fresh process that opens the collection and serves the queries, in all and split into anonymous memory (the
process's own) and mapped files (the shards' memory-mapped vectors, payloads and graphs: page cache the kernel can
drop); `--rss-baseline DIR` measures the same for another collection (e.g. the 15k one) for the difference.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GENDERS = ["Men", "Women", "Unisex", "Boys", "Girls"]
COLOURS = [f"colour{i}" for i in range(46)]
TYPES = [f"type{i}" for i in range(140)]
VOCABULARY, WORDS_PER_ITEM, TEXT_DIM = 5_000, 6, 384
NAME = "fashion-search-synthetic"


class SyntheticKeywords:
    """The store's keyword encoder for synthetic queries: a query text is its word ids ("12 407")."""

    def query_vector(self, text: str) -> tuple[list[int], list[float]]:
        ids = sorted({int(t) for t in text.split()})
        return ids, [1.0] * len(ids)


def synthetic_catalog(n: int, dim: int, seed: int = 0) -> dict:
    """Vectors, attributes, groups and sparse keyword weights of `n` synthetic items (see the module docstring)."""
    from scipy import sparse

    from benchmarks.scale import clustered_vectors

    rng = np.random.default_rng(seed)
    words = np.minimum(rng.zipf(1.3, size=(n, WORDS_PER_ITEM)), VOCABULARY) - 1
    rows = np.repeat(np.arange(n), WORDS_PER_ITEM)
    matrix = sparse.csr_matrix((np.ones(n * WORDS_PER_ITEM, np.float32), (rows, words.ravel())), shape=(n, VOCABULARY))
    matrix.sum_duplicates()
    frequency = np.asarray((matrix > 0).sum(0)).ravel()
    idf = np.log(1 + (n - frequency + 0.5) / (frequency + 0.5)).astype(np.float32)
    matrix = (matrix.multiply(idf[None]) / (matrix.multiply(idf[None]).sum(1) + 1e-9) * 3).tocsr().astype(np.float32)
    group = np.arange(n)
    group[10::10] = group[9::10][: len(group[10::10])]
    return {"visual": clustered_vectors(n, dim, seed=seed), "title": clustered_vectors(n, TEXT_DIM, seed=seed + 1),
            "gender": rng.integers(0, len(GENDERS), n), "colour": rng.integers(0, len(COLOURS), n),
            "type": rng.integers(0, len(TYPES), n), "group": group, "keywords": matrix}


def build(catalog: dict, folder: Path, batch: int, say) -> tuple[float, object]:
    """Create the collection with the production schema, upsert every item, optimize; (seconds, open client)."""
    from qdrant_client import models

    from modeling.retrieval.backends.qdrant.ingest import create_collection, item_payload
    from modeling.retrieval.backends.qdrant.store import (COMPLETE_KEY, FORMAT_VERSION, KEYWORDS, TITLE, VISUAL,
                                                          QdrantConfig, point_id)

    shutil.rmtree(folder, ignore_errors=True)
    config = QdrantConfig(path=str(folder), edge=True, collection=NAME)
    client = config.connect()
    n, dim = catalog["visual"].shape
    metadata = {"format_version": FORMAT_VERSION, "model": {"name": "synthetic", "fingerprint": "synthetic",
                                                            "embedding_dim": dim},
                "attributes": ["gender", "articleType", "baseColour"]}
    start = time.perf_counter()
    create_collection(client, NAME, config, dim, TEXT_DIM, metadata)
    keywords = catalog["keywords"]
    for begin in range(0, n, batch):
        points = []
        for i in range(begin, min(begin + batch, n)):
            row = {"id": str(i), "title": f"item {i}", "gender": GENDERS[catalog["gender"][i]],
                   "articleType": TYPES[catalog["type"][i]], "baseColour": COLOURS[catalog["colour"][i]],
                   "group": str(catalog["group"][i])}
            words = keywords[i]
            points.append(models.PointStruct(id=point_id(i), payload=item_payload(row, i, row["title"]), vector={
                VISUAL: catalog["visual"][i].tolist(), TITLE: catalog["title"][i].tolist(),
                KEYWORDS: models.SparseVector(indices=words.indices.tolist(), values=words.data.tolist())}))
        client.upsert(NAME, points=points, wait=True)
        if (begin // batch) % 20 == 0:
            say(f"upserted {min(begin + batch, n):,} / {n:,} ({time.perf_counter() - start:.0f} s)")
    say(f"optimizing (HNSW, int8) ({time.perf_counter() - start:.0f} s)")
    client.optimize(NAME)
    client.update_collection(NAME, metadata={COMPLETE_KEY: {"num_items": n}})
    return time.perf_counter() - start, client


def make_queries(catalog: dict, count: int, seed: int = 1) -> list[dict]:
    """Queries near random items (a perturbed copy of an item's vectors), with words, a filter and two boosts."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(catalog["visual"]), count):
        visual = catalog["visual"][i] + 0.3 * rng.standard_normal(catalog["visual"].shape[1]) / 16
        title = catalog["title"][i] + 0.3 * rng.standard_normal(TEXT_DIM) / 20
        words = catalog["keywords"][i].indices[:2].tolist()
        out.append({"visual": (visual / np.linalg.norm(visual)).astype(np.float32),
                    "title": (title / np.linalg.norm(title)).astype(np.float32), "words": words,
                    "gender": int(rng.integers(0, 2)), "type": int(catalog["type"][i]),
                    "colour": int(rng.integers(0, len(COLOURS)))})
    return out


def exact_top(catalog: dict, query: dict, k: int = 10) -> list[str]:
    """The exact served ranking in numpy: fused score, filter, boosts, collapse by group."""
    keywords = np.asarray(catalog["keywords"][:, query["words"]].sum(1)).ravel() if query["words"] else 0.0
    top = float(np.max(keywords)) if query["words"] else 0.0
    lexical = keywords / top if top > 0 else 0.0
    score = 0.3 * (catalog["visual"] @ query["visual"]) + 0.7 * (catalog["title"] @ query["title"] + 0.4 * lexical)
    score = score + 0.10 * (catalog["type"] == query["type"]) + 0.05 * (catalog["colour"] == query["colour"])
    score = np.where(catalog["gender"] == query["gender"], score, -np.inf)
    order = np.argsort(-score, kind="stable")[:50 * k]
    return collapse([(str(i), str(catalog["group"][i])) for i in order], k)


def collapse(ranked: list[tuple[str, str]], k: int) -> list[str]:
    """The first item of each group, in rank order: the engine's near-duplicate collapsing."""
    seen, out = set(), []
    for item, group in ranked:
        if group not in seen:
            seen.add(group)
            out.append(item)
    return out[:k]


def served_top(store, query: dict, k: int = 10) -> list[str]:
    """The store's served ranking (as `QdrantBackend.rank` asks it) collapsed by the `group` payload."""
    from modeling.retrieval.backends.qdrant.store import payload_boost

    boosts = [payload_boost("articleType", [TYPES[query["type"]]], 0.10),
              payload_boost("baseColour", [COLOURS[query["colour"]]], 0.05)]
    depth = max(4 * k, 50)
    while True:
        hits = store.rank(query["visual"], query["title"], " ".join(map(str, query["words"])), 0.7, 0.4,
                          k=depth + 5, filters={"gender": GENDERS[query["gender"]]}, boosts=boosts)
        ids = collapse([(h.id, h.payload.get("group", h.id)) for h in hits], k)
        if len(ids) >= k or len(hits) < depth + 5:
            return ids
        depth *= 2


def open_store(folder: Path, depth: int, client=None, exact: bool = False, boosts: int = 1, plan: str = "nested"):
    """The collection as the engine's store; `exact`: full scans instead of HNSW (to separate the HNSW search's
    misses from the bounded plan's); `boosts`, `plan`: `QdrantConfig.boost_prefetches`, `QdrantConfig.plan`."""
    from modeling.retrieval.backends.qdrant.store import QdrantConfig, QdrantStore

    config = QdrantConfig(path=str(folder), edge=True, collection=NAME, prefetch_depth=depth, exact=exact,
                          boost_prefetches=boosts, plan=plan)
    store = QdrantStore.open(config, {"fingerprint": "synthetic"}, client=client)
    store.keywords = SyntheticKeywords()
    return store


def serve_rss(folder: Path, queries_file: Path, depth: int, boosts: int = 1, plan: str = "nested") -> dict:
    """Open the collection in this (fresh) process, serve the saved queries, report its memory."""
    store = open_store(folder, depth, boosts=boosts, plan=plan)
    queries = np.load(queries_file, allow_pickle=True)["queries"].tolist()
    for query in queries:
        served_top(store, query)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    mb = {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}
    return {"collection": str(folder), "rss_mb": mb["VmRSS"], "rss_anon_mb": mb["RssAnon"],
            "rss_file_mb": mb["RssFile"], "peak_rss_mb": mb["VmHWM"], "queries": len(queries)}


def rss_in_subprocess(folder: Path, queries_file: Path, depth: int, boosts: int = 1, plan: str = "nested") -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(REPO)!r}); from benchmarks.scale_qdrant import serve_rss; "
            f"from pathlib import Path; print(json.dumps(serve_rss(Path({str(folder)!r}), Path({str(queries_file)!r}), "
            f"{depth}, {boosts}, {plan!r})))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(args, say) -> dict:
    """The whole benchmark (see the module docstring); one result dict."""
    folder = Path(args.workdir or "runs/qdrant-edge-scale") / f"n{args.n}"
    catalog = synthetic_catalog(args.n, args.dim, args.seed)
    say(f"{args.n:,} synthetic items generated")
    if args.reuse and any(folder.glob("collections/*/collection.json")):
        from modeling.retrieval.backends.qdrant.store import QdrantConfig

        build_s, client = None, QdrantConfig(path=str(folder), edge=True, collection=NAME).connect()
        say(f"reusing the collection in {folder} (not built again)")
    else:
        build_s, client = build(catalog, folder, args.batch, say)
    # allocated blocks, not file sizes: the shard preallocates sparse memory-mapped files and WAL segments
    disk = sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file())
    say(f"built in {build_s} s, {disk / args.n:.0f} disk B/item")
    store = open_store(folder, args.depth, client, exact=args.exact_search, boosts=args.boost_prefetches,
                       plan=args.plan)
    queries = make_queries(catalog, args.queries)
    recalls, times = [], []
    for query in queries:
        start = time.perf_counter()
        got = served_top(store, query)
        times.append(1000 * (time.perf_counter() - start))
        want = exact_top(catalog, query)
        recalls.append(len(set(got) & set(want)) / len(want))
    client.close()
    row = {"backend": "qdrant-edge", "items": args.n, "depth_per_signal": args.depth, "build_s": build_s,
           "boost_prefetches": args.boost_prefetches, "plan": args.plan,
           "exact_search": args.exact_search, "items_per_s": args.n / build_s if build_s else None, "disk_bytes_per_item": disk / args.n,
           "recall@10": float(np.mean(recalls)), "min_recall": float(np.min(recalls)),
           "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}
    say(json.dumps(row))
    if not args.rss_queries:
        return row
    queries_file = folder.parent / f"queries-n{args.n}.npz"
    np.savez(queries_file, queries=np.array(queries[:args.rss_queries], dtype=object))
    row["rss"] = rss_in_subprocess(folder, queries_file, args.depth, args.boost_prefetches, args.plan)
    if args.rss_baseline:
        row["rss_baseline"] = rss_in_subprocess(Path(args.rss_baseline), queries_file, args.depth,
                                                args.boost_prefetches, args.plan)
        row["rss_difference_mb"] = row["rss"]["rss_mb"] - row["rss_baseline"]["rss_mb"]
        row["rss_anon_difference_mb"] = row["rss"]["rss_anon_mb"] - row["rss_baseline"]["rss_anon_mb"]
    return row


__all__ = ["collapse", "exact_top", "run", "served_top", "serve_rss", "synthetic_catalog"]
