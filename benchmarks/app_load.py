"""Load test of the served app: concurrent clients over plain HTTP, as API clients would call it.

    python benchmarks/app_load.py                          # /api/v1 JSON routes, 1, 8 and 32 clients, 5,000-request soak
    python benchmarks/app_load.py --protocol gradio        # the same searches through Gradio's /gradio_api/run/...
    python benchmarks/app_load.py --clients 1 8 --requests 400 --soak 0
    python benchmarks/app_load.py --overload               # 200 clients at once: admission control (issue 28)
    python benchmarks/app_load.py --model runs/world-40-p035-composed --vector-stores faiss qdrant-edge \
        --qdrant-path runs/qdrant-edge-15k --clients 1 32 --soak 0          # FAISS and qdrant-edge side by side

`app.py` starts in a fresh process on a free port (the default model only, over the shared catalog; the index is
built first when absent). Each client is a thread with one keep-alive connection sending requests back to back:
half text searches (`search_text`), half "more like this item" (`similar_items`), every text query and item
distinct over the whole run (no cache hits). For each number of clients the script prints p50/p95/p99 latency,
throughput of the answered requests, errors, refusals (a 503 of admission control: the client waits its Retry-After)
and the server's memory (RSS); then a soak of `--soak` requests at the largest number of
clients reports the RSS growth. Targets on 2 cores (issue 17): >= 80 req/s at 32 clients with p95 <= 500 ms,
single-client p95 <= 60 ms, no errors, RSS growth <= 10 % over 5,000 requests.

`--overload` drives `--overload-clients` (200) clients sending the same mix on the JSON routes, each waiting
`Retry-After` after a 503 as a well-behaved client does, and prints the share refused, the latency of admitted
requests (target p95 <= 1 s) and of refusals (target p95 <= 50 ms), errors other than 503, and the server's RSS
before, at its peak and after. Targets (issue 28).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.app_latency import (COLOURS, ITEMS, OFFLINE, WHO, ensure_index, free_port, percentiles, rss_mb,
                                    stop, write_report)

STYLES = ["", "cotton ", "printed ", "striped ", "slim fit ", "casual ", "formal ", "solid ", "checked "]
ANY3 = {"gender": "Any", "category": "Any", "colour": "Any"}


def distinct_queries(seed: int = 0) -> list[str]:
    """About 20,000 distinct shopper queries ("striped navy blue casual shirt for men"), shuffled."""
    queries = [f"{s}{c} {i}{w}" for s, c, i, w in itertools.product(STYLES, COLOURS, ITEMS, WHO)]
    random.Random(seed).shuffle(queries)
    return queries


class Workload:
    """Hands out requests: text and item searches alternating, each query and item used once."""

    def __init__(self, queries: list[str], item_ids: list[str], k: int):
        self._queries, self._items = iter(queries), iter(item_ids)
        self._lock = threading.Lock()
        self._n = 0
        self.k = k

    def next(self) -> tuple[str, dict]:
        with self._lock:
            self._n += 1
            if self._n % 2:
                return "search_text", {"query": next(self._queries), "k": self.k, "model": "", **ANY3}
            return "similar_items", {"item_id": next(self._items), "k": self.k, "model": "", **ANY3,
                                     "rerank_weight": 0.0}


GRADIO_ORDER = {"search_text": ("search_text_data", ["query", "k", "model", "gender", "category", "colour"]),
                "similar_items": ("similar_items_data",
                                  ["item_id", "k", "model", "gender", "category", "colour", "rerank_weight"])}


def request(connection: http.client.HTTPConnection, protocol: str, endpoint: str,
            fields: dict) -> tuple[bool, float | None]:
    """One search: (whether it answered with results, the Retry-After seconds of a 503 refusal, else None)."""
    if protocol == "gradio":
        name, order = GRADIO_ORDER[endpoint]
        path, body = f"/gradio_api/run/{name}", {"data": [fields[f] for f in order]}
    else:
        path, body = f"/api/v1/{endpoint}", fields
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    if response.status == 503:  # admission control: busy, come back after Retry-After
        return False, float(response.getheader("Retry-After") or 1)
    if response.status != 200:
        return False, None
    data = json.loads(payload)
    data = data["data"][0] if protocol == "gradio" else data
    return len(data.get("results") or []) == fields["k"], None


def drive(port: int, clients: int, total: int, one_request) -> float:
    """`clients` threads, each with one keep-alive connection, calling `one_request(connection)` back to back until
    `total` calls were made between them; a connection that failed (OSError, HTTPException) is replaced after
    `one_request` recorded the failure. Returns the seconds taken."""
    lock, remaining = threading.Lock(), [total]

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            if not one_request(connection):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def run_clients(port: int, protocol: str, clients: int, total: int, work: Workload) -> dict:
    """`clients` threads sending `total` requests between them, back to back; a client refused by admission control
    (503) waits its Retry-After, as a well-behaved client does. Throughput and latencies are of the answered
    requests; refusals are counted apart from errors."""
    latencies, errors, refused = [], [0], [0]
    lock = threading.Lock()

    def one_request(connection) -> bool:
        endpoint, fields = work.next()
        start, alive, wait = time.perf_counter(), True, None
        try:
            ok, wait = request(connection, protocol, endpoint, fields)
        except (OSError, http.client.HTTPException, ValueError):
            ok = alive = False
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            if wait is not None:
                refused[0] += 1
            else:
                latencies.append(elapsed)
                errors[0] += not ok
        if wait is not None:
            time.sleep(wait)
        return alive

    seconds = drive(port, clients, total, one_request)
    answered = total - refused[0]
    return {"clients": clients, "requests": total, "errors": errors[0], "refused": refused[0], "seconds": seconds,
            "throughput": answered / seconds, "latency_ms": percentiles(latencies)}


def start_app(args, port: int, store: str) -> subprocess.Popen:
    """app.py for the default model only, on `store` (`faiss`, or `qdrant-edge` / `qdrant` in `--qdrant-path`)."""
    command = [sys.executable, str(REPO / "app.py"), "--model", args.model, "--catalog", args.catalog,
               "--port", str(port), "--extra-model", args.model]  # only the default model: nothing else loads
    if store != "faiss":
        command += ["--vector-store", store, "--qdrant-path", args.qdrant_path]
    return subprocess.Popen(command, cwd=REPO, env={**os.environ, **OFFLINE}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(server: subprocess.Popen, port: int, args, work: Workload) -> float:
    """Seconds until the app answers a search."""
    start = time.perf_counter()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited during start-up:\n{server.stderr.read()[-3000:]}")
        if time.perf_counter() - start > args.startup_timeout:
            raise RuntimeError(f"no answer within {args.startup_timeout} s")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if request(connection, args.protocol, *work.next())[0]:
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.2)


def measure_store(args, store: str, work: Workload) -> dict:
    """Start the app on `store`, warm it, run every level of clients and the soak; the store's report."""
    port = free_port()
    server = start_app(args, port, store)
    report = {"vector_store": store, "levels": []}
    try:
        seconds = wait_for(server, port, args, work)
        print(f"[{store}] {args.protocol} protocol · app answering after {seconds:.1f} s · "
              f"load average {os.getloadavg()[0]:.2f} · {os.cpu_count()} CPUs", flush=True)
        run_clients(port, args.protocol, 8, 200, work)  # warm-up: threads, lazy structures, allocator
        for clients in args.clients:
            level = run_clients(port, args.protocol, clients, args.requests or 300 + 40 * clients, work)
            level["server_rss_mb"] = rss_mb(server.pid)
            report["levels"].append(level)
            lat = level["latency_ms"]
            print(f"[{store}] {clients:3d} clients: {level['requests']:5d} requests  {level['throughput']:6.1f} req/s  "
                  f"p50 {lat['p50']:6.1f}  p95 {lat['p95']:6.1f}  p99 {lat['p99']:6.1f} ms  "
                  f"errors {level['errors']}  refused {level['refused']}  RSS {level['server_rss_mb']:.0f} MB",
                  flush=True)
        if args.soak:
            clients = max(args.clients)
            before = rss_mb(server.pid)
            soak = run_clients(port, args.protocol, clients, args.soak, work)
            after = rss_mb(server.pid)
            soak.update(rss_before_mb=before, rss_after_mb=after, rss_growth=(after - before) / before)
            report["soak"] = soak
            print(f"[{store}] soak: {args.soak} requests at {clients} clients, {soak['throughput']:.1f} req/s, "
                  f"errors {soak['errors']}, RSS {before:.0f} -> {after:.0f} MB ({soak['rss_growth']:+.1%})",
                  flush=True)
    finally:
        stop(server)
    return report


def targets_met(report: dict) -> bool:
    """32 clients >= 80 req/s and p95 <= 500 ms; 1 client p95 <= 60 ms; no errors; RSS growth <= 10 %."""
    levels = {level["clients"]: level for level in report["levels"]}
    checks = []
    if 32 in levels:
        checks.append(levels[32]["throughput"] >= 80 and levels[32]["latency_ms"]["p95"] <= 500)
    if 1 in levels:
        checks.append(levels[1]["latency_ms"]["p95"] <= 60)
    checks.append(all(level["errors"] == 0 for level in report["levels"]))
    if "soak" in report:
        checks.append(report["soak"]["errors"] == 0 and report["soak"]["rss_growth"] <= 0.10)
    return all(checks)


def side_by_side(stores: list[dict]) -> str:
    """One row per store and number of clients."""
    lines = ["| vector store | clients | req/s answered | p50 ms | p95 ms | errors | refused (503) | server RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for report in stores:
        for level in report["levels"]:
            lat = level["latency_ms"]
            lines.append(f"| {report['vector_store']} | {level['clients']} | {level['throughput']:.1f} | "
                         f"{lat['p50']:.1f} | {lat['p95']:.1f} | {level['errors']} | {level['refused']} | "
                         f"{level['server_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/dual-encoder")
    p.add_argument("--catalog", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--protocol", choices=["json", "gradio"], default="json",
                   help="json: the /api/v1 routes; gradio: Gradio's /gradio_api/run/<endpoint>")
    p.add_argument("--vector-stores", nargs="+", default=["faiss"], choices=["faiss", "qdrant-edge", "qdrant"],
                   help="each measured in turn, one app process each, side by side at the end")
    p.add_argument("--qdrant-path", default="runs/qdrant-edge-15k", help="the collection folder of qdrant stores")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=None, help="per level (default 300 + 40 per client)")
    p.add_argument("--soak", type=int, default=5000, help="requests of the memory soak (0: none)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--startup-timeout", type=float, default=300)
    p.add_argument("--output", default="runs/bench/app_load.json")
    p.add_argument("--overload", action="store_true", help="the admission-control run instead (see above)")
    p.add_argument("--overload-clients", type=int, default=200)
    p.add_argument("--overload-requests", type=int, default=4000)
    args = p.parse_args(argv)
    os.environ.update(OFFLINE)
    ensure_index(args.model, args.catalog)
    import pandas as pd

    item_ids = pd.read_parquet(Path(args.model) / "index" / "items.parquet", columns=["id"])["id"].astype(str)
    item_ids = item_ids.sample(frac=1.0, random_state=0).tolist()
    queries = distinct_queries()
    if args.overload:
        from benchmarks.app_overload import run_overload

        return run_overload(args, Workload(queries, item_ids * 3, args.k))
    report = {"protocol": args.protocol, "model": args.model, "cpu_count": os.cpu_count(),
              "loadavg_before": os.getloadavg(), "stores": []}
    share = len(queries) // len(args.vector_stores)
    for i, store in enumerate(args.vector_stores):  # distinct queries per store too: no cache hits
        work = Workload(queries[i * share:(i + 1) * share], item_ids * 3, args.k)
        report["stores"].append(measure_store(args, store, work))
        report["stores"][-1]["targets_met"] = targets_met(report["stores"][-1])
    report["loadavg_after"] = os.getloadavg()
    if len(report["stores"]) == 1:  # the single-store report keeps its former shape
        report.update(report["stores"][0])
    print(side_by_side(report["stores"]))
    for store in report["stores"]:
        print(f"targets [{store['vector_store']}] (32 clients >= 80 req/s and p95 <= 500 ms; 1 client p95 <= 60 ms; "
              f"no errors; RSS growth <= 10 %): {'OK' if store['targets_met'] else 'MISSED'}")
    write_report(args.output, report)
    return report


if __name__ == "__main__":
    main()
