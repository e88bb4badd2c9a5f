"""Benchmark of the embedded FAISS backend at catalogue scale: today's HNSW against the compressed index.

    python benchmarks/scale.py                               # 1,000,000 vectors at d=256, both indexes
    python benchmarks/scale.py --n 200000 --indexes compressed --output runs/bench/scale-200k.json
    python benchmarks/scale.py --backend qdrant-edge --n 1000000 --workdir runs/qdrant-edge-scale   # benchmarks/scale_qdrant.py

Builds `--n` clustered synthetic vectors at the model's dimension (see [`clustered_vectors`]) and `--queries` held-out
queries drawn the same way, computes the exact top 10 by brute force, then for each index prints: RAM and disk
bytes per item, build time, recall@10 against the exact search (unfiltered, and with a random `--filter` fraction
of the items allowed), and single-query latency p50/p95 through `VectorIndex.search` (the code the search engine
calls), unfiltered and filtered. The compressed index is also timed with its vectors file evicted from the page
cache (`posix_fadvise(DONTNEED)`), the first queries after a cold start. Each index is built, written to
`--workdir` and read back first, so the searches run on what a served catalogue opens. Targets (issue 20):
<= 150 bytes/item in RAM, recall@10 >= 0.95, p95 <= 5 ms unfiltered.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import faiss  # noqa: E402

from modeling.retrieval.backends.faiss import compressed  # noqa: E402
from modeling.retrieval.backends.faiss.index import VectorIndex, l2_normalise  # noqa: E402


def clustered_vectors(
    n: int, dim: int = 256, *, clusters: int = 1_000, alpha: float = 0.75, noise: float = 0.5, seed: int = 0,
    chunk: int = 100_000,
) -> np.ndarray:
    """
    `n` unit vectors around `clusters` centres, float32 `(n, dim)`, reproducible from `seed`.

    Centres and noise both follow a power-law spectrum (the j-th of `dim` directions, in a random rotation, has
    scale `j ** -alpha`), because learnt embeddings are far from isotropic. With the defaults the top 32 principal
    directions hold ~88% of the variance and a query's 10th neighbour among 50,000 items has cosine ~0.90; the
    dual encoder's 14,999 catalogue embeddings hold 99% in 32 directions with a 10th neighbour at ~0.95, so the
    synthetic set is the harder one for quantisation. Isotropic noise (`alpha=0`) would make every neighbour
    nearly equidistant, which no trained model produces.
    """
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scales = (1.0 + np.arange(dim)) ** -alpha
    scales /= np.linalg.norm(scales)
    centres = l2_normalise((rng.standard_normal((clusters, dim)) * scales) @ rotation.T)
    out = np.empty((n, dim), dtype=np.float32)
    for begin in range(0, n, chunk):
        size = min(chunk, n - begin)
        labels = rng.integers(0, clusters, size)
        spread = (rng.standard_normal((size, dim)) * scales) @ rotation.T
        out[begin:begin + size] = l2_normalise(centres[labels] + noise * spread)
    return out


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Positions of the exact top `k` by inner product (brute force), optionally among the `allowed` positions."""
    positions = np.arange(len(data)) if allowed is None else np.flatnonzero(allowed)
    flat = faiss.IndexFlatIP(data.shape[1])
    flat.add(data[positions])
    _, local = flat.search(queries, k)
    return positions[local]


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(f[:k]) & set(e)) / k for f, e in zip(found, exact)]))


def latencies_ms(index: VectorIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> np.ndarray:
    out = []
    for query in queries:
        start = time.perf_counter()
        index.search(query, k, allowed=allowed)
        out.append(time.perf_counter() - start)
    return np.array(out) * 1e3


def build_hnsw(data: np.ndarray, path: Path, say) -> float:
    """Today's HNSW, as `VectorIndex.build` makes it (same faiss class and parameters) but added in chunks to show
    progress; written to `path`. Returns the build time in seconds."""
    defaults = VectorIndex(data.shape[1])
    start = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(data.shape[1], defaults.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = defaults.ef_construction
    hnsw.hnsw.efSearch = defaults.ef_search
    step = 50_000
    for begin in range(0, len(data), step):
        hnsw.add(data[begin:begin + step])
        say(f"HNSW: added {min(begin + step, len(data)):,} / {len(data):,} ({time.perf_counter() - start:.0f} s)")
    build_s = time.perf_counter() - start
    faiss.write_index(hnsw, str(path))
    return build_s


def build_compressed(data: np.ndarray, path: Path, say) -> float:
    """The compressed index, as `VectorIndex.build` makes it at `COMPRESSED_THRESHOLD` items, with progress;
    written to `path` (codes) and beside it (vectors). Returns the build time in seconds."""
    start = time.perf_counter()
    index = compressed.CompressedIndex.build(data, progress=lambda message: say(f"compressed: {message}"))
    build_s = time.perf_counter() - start
    index.write(path)
    return build_s


BUILDERS = {"compressed": build_compressed, "hnsw": build_hnsw}


def measure(kind: str, data: np.ndarray, queries: np.ndarray, exact: dict, allowed: np.ndarray, args, say) -> list:
    """Builds one index, reads it back as a `VectorIndex` and measures it; one row (two for the compressed index:
    warm and cold page cache)."""
    path = Path(args.workdir) / kind / "index.faiss"
    path.parent.mkdir(parents=True, exist_ok=True)
    build_s = BUILDERS[kind](data, path, say)
    index = VectorIndex.read(path)
    n = index.ntotal
    # What faiss loads into memory is index.faiss; the compressed index's vectors file stays memory-mapped.
    ram = path.stat().st_size
    disk = sum(f.stat().st_size for f in path.parent.iterdir())
    say(f"{kind}: built in {build_s:.0f} s, {ram / n:.0f} B/item in RAM; measuring")
    row = {"index": kind, "items": n, "ram_bytes_per_item": ram / n, "disk_bytes_per_item": disk / n,
           "build_s": build_s}
    for name, mask in (("unfiltered", None), ("filtered", allowed)):
        _, found = index.search(queries, args.k, allowed=mask)
        row[f"recall@{args.k}_{name}"] = recall_at_k(found, exact[name])
        times = latencies_ms(index, queries[:args.latency_queries], args.k, mask)
        row[f"p50_ms_{name}"], row[f"p95_ms_{name}"] = np.percentile(times, [50, 95]).tolist()
    rows = [row]
    if index.kind == compressed.COMPRESSED_KIND and hasattr(os, "posix_fadvise"):
        # A fresh open with the float32 vectors evicted from the page cache: each re-rank reads from disk. Pages
        # still mapped are not evicted, so the index is closed first.
        cold = {"index": f"{kind}, cold page cache", "items": n}
        for name, mask in (("unfiltered", None), ("filtered", allowed)):
            del index
            gc.collect()
            fd = os.open(compressed.vectors_path(path), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            index = VectorIndex.read(path)
            times = latencies_ms(index, queries[-args.latency_queries:], args.k, mask)
            cold[f"p50_ms_{name}"], cold[f"p95_ms_{name}"] = np.percentile(times, [50, 95]).tolist()
        rows.append(cold)
    return rows


def markdown(rows: list[dict], k: int) -> str:
    columns = [("index", "index", "{}"), ("ram_bytes_per_item", "RAM B/item", "{:.0f}"),
               ("disk_bytes_per_item", "disk B/item", "{:.0f}"), ("build_s", "build s", "{:.0f}"),
               (f"recall@{k}_unfiltered", f"recall@{k}", "{:.4f}"),
               (f"recall@{k}_filtered", f"recall@{k} filtered", "{:.4f}"),
               ("p50_ms_unfiltered", "p50 ms", "{:.2f}"), ("p95_ms_unfiltered", "p95 ms", "{:.2f}"),
               ("p50_ms_filtered", "p50 ms filtered", "{:.2f}"), ("p95_ms_filtered", "p95 ms filtered", "{:.2f}")]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|:---|" + "---:|" * (len(columns) - 1)]
    for row in rows:
        cells = [fmt.format(row[key]) if key in row else "–" for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="catalogue size")
    parser.add_argument("--dim", type=int, default=256, help="vector dimension (the dual encoder's projection_dim)")
    parser.add_argument("--queries", type=int, default=1_000, help="held-out queries for recall")
    parser.add_argument("--latency-queries", type=int, default=500, help="queries timed one at a time")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--filter", type=float, default=0.05, help="fraction of items a filtered query allows")
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--alpha", type=float, default=0.75, help="power-law decay of the spectrum")
    parser.add_argument("--noise", type=float, default=0.5, help="spread of the items around their centre")
    parser.add_argument("--indexes", default="compressed,hnsw", help=f"comma-separated, of {sorted(BUILDERS)}")
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's own)")
    parser.add_argument("--workdir", default=None, help="where the indexes are written (default: a temp folder)")
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("faiss", "qdrant-edge"), default="faiss",
                        help="qdrant-edge: the served Qdrant ranking on the real engine (benchmarks/scale_qdrant.py)")
    parser.add_argument("--depth", type=int, default=1_000, help="qdrant-edge: prefetch depth per signal")
    parser.add_argument("--boost-prefetches", type=int, default=1,
                        help="qdrant-edge: boost candidate lists per query (QdrantConfig.boost_prefetches)")
    parser.add_argument("--plan", choices=("nested", "two-stage"), default="nested",
                        help="qdrant-edge: the fused query plan (QdrantConfig.plan)")
    parser.add_argument("--batch", type=int, default=1_000, help="qdrant-edge: points per upsert")
    parser.add_argument("--rss-queries", type=int, default=200, help="qdrant-edge: queries the RSS process serves "
                                                                      "(0: no RSS measurement)")
    parser.add_argument("--reuse", action="store_true", help="qdrant-edge: measure the collection <workdir>/n<N> "
                                                             "built by an earlier run instead of building it")
    parser.add_argument("--exact-search", action="store_true", help="qdrant-edge: full scans instead of HNSW")
    parser.add_argument("--rss-baseline", default=None, help="qdrant-edge: another collection folder (e.g. the 15k "
                                                             "one, <workdir>/n15000) served for the RSS difference")
    args = parser.parse_args(argv)
    if args.backend == "qdrant-edge":
        from benchmarks.scale_qdrant import run

        clock = time.perf_counter()
        row = run(args, lambda message: print(f"[{time.perf_counter() - clock:6.0f} s] {message}", flush=True))
        print(json.dumps(row, indent=1))
        if args.output:
            Path(args.output).write_text(json.dumps({"args": vars(args), "load_average": os.getloadavg(), "row": row}))
        return [row]
    kinds = [kind.strip() for kind in args.indexes.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(BUILDERS))
    if unknown:
        parser.error(f"unknown --indexes {unknown}; choose from {sorted(BUILDERS)}")
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    clock = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - clock:6.0f} s] {message}", flush=True)

    temporary = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="scale-bench-")
    try:
        say(f"generating {args.n:,} + {args.queries:,} clustered vectors at d={args.dim}")
        vectors = clustered_vectors(args.n + args.queries, args.dim, clusters=args.clusters, alpha=args.alpha,
                                    noise=args.noise, seed=args.seed)
        data, queries = vectors[:args.n], vectors[args.n:]
        allowed = np.random.default_rng(args.seed + 1).random(args.n) < args.filter
        say(f"exact top {args.k} by brute force ({int(allowed.sum()):,} items allowed by the filter)")
        exact = {"unfiltered": exact_top_k(data, queries, args.k), "filtered": exact_top_k(data, queries, args.k,
                                                                                              allowed)}
        rows = []
        for kind in kinds:
            rows += measure(kind, data, queries, exact, allowed, args, say)
            say(json.dumps(rows[-1]))
            shutil.rmtree(Path(args.workdir) / kind, ignore_errors=True)
    finally:
        if temporary:
            shutil.rmtree(args.workdir, ignore_errors=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\n{args.n:,} vectors, d={args.dim}, {args.clusters:,} clusters (alpha={args.alpha}, noise={args.noise}); "
          f"{args.queries:,} queries for recall, {args.latency_queries} timed one at a time; filter allows "
          f"{args.filter:.0%}; faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average at the end {load}\n")
    print(markdown(rows, args.k))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"args": vars(args), "load_average": load, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
