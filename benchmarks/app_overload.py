"""`benchmarks/app_load.py --overload`: 200 clients at once against the JSON routes, for admission control (issue 28).

    python benchmarks/app_load.py --overload --model runs/dual-encoder
    python benchmarks/app_load.py --overload --overload-clients 200 --overload-requests 4000

The app starts alone in a fresh process (`benchmarks/upload_memory.start_app`); after a warm-up, the clients send
`app_load`'s mix (text searches and "more like this item", every query and item distinct), each on one keep-alive
connection and each waiting the `Retry-After` of a 503 before its next request, as a well-behaved client does. It
prints the share refused, the latency of admitted requests (target p95 <= 1 s) and of refusals (target p95 <= 50
ms), errors other than 503, and the server's RSS before, at its peak (/proc/PID/clear_refs reset) and after.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.app_latency import percentiles, stop, write_report  # noqa: E402
from benchmarks.app_load import Workload, drive, run_clients  # noqa: E402


def overload_clients(port: int, clients: int, total: int, work: Workload) -> dict:
    """`clients` threads sending `total` JSON requests between them; a 503 is counted as refused and its client
    waits its Retry-After before the next request."""
    admitted, refused, errors, retry_after = [], [], [0], set()
    lock = threading.Lock()

    def one_request(connection) -> bool:
        endpoint, fields = work.next()
        start = time.perf_counter()
        try:
            connection.request("POST", f"/api/v1/{endpoint}", json.dumps(fields), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            status, wait = response.status, response.getheader("Retry-After")
        except (OSError, http.client.HTTPException):
            status, wait = None, None
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            if status == 200:
                admitted.append(elapsed)
            elif status == 503:
                refused.append(elapsed)
                retry_after.add(wait)
            else:
                errors[0] += 1
        if status == 503:
            time.sleep(float(wait or 1))
        return status is not None

    seconds = drive(port, clients, total, one_request)
    return {"clients": clients, "requests": total, "seconds": seconds, "admitted": len(admitted),
            "refused": len(refused), "refused_share": len(refused) / total, "errors": errors[0],
            "admitted_per_s": len(admitted) / seconds, "retry_after": sorted(str(v) for v in retry_after),
            "admitted_ms": percentiles(admitted) if admitted else None,
            "refused_ms": percentiles(refused) if refused else None}


def probe(port: int, seconds: float, pause_s: float = 0.005, stop: threading.Event | None = None) -> dict:
    """One client of its own (run in a process of its own by `run_overload`, away from the 200 client threads and
    their interpreter lock): a text search every `pause_s` for `seconds` or until `stop` is set; the latencies of
    its 503s and 200s."""
    refused, admitted = [], []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    end = time.perf_counter() + seconds
    for n in itertools.count():
        if time.perf_counter() > end or (stop is not None and stop.is_set()):
            break
        start = time.perf_counter()
        try:
            connection.request("POST", "/api/v1/search_text", json.dumps({"query": f"probe {n} red summer dress"}),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            break
        (refused if response.status == 503 else admitted).append((time.perf_counter() - start) * 1000)
        time.sleep(pause_s)
    connection.close()
    return {"refused_ms": percentiles(refused) if refused else None,
            "admitted_ms": percentiles(admitted) if admitted else None}


def run_overload(args, work: Workload) -> dict:
    """The `--overload` run: the app started alone, a warm-up, then `overload_clients` with the server's memory and
    a `probe` client in a process of its own."""
    from benchmarks.upload_memory import memory_mb, reset_peak, start_app

    server, port = start_app(args.model, args.catalog, args.startup_timeout)
    try:
        run_clients(port, "json", 8, 200, work)  # warm-up, as the other levels
        before = memory_mb(server.pid)["VmRSS"]
        reset_peak(server.pid)
        # the probe runs as long as the clients do (a line on its stdin stops it), 120 s at most
        prober = subprocess.Popen([sys.executable, __file__, str(port), "120"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            result = overload_clients(port, args.overload_clients, args.overload_requests, work)
        except BaseException:
            prober.kill()
            raise
        result["probe"] = json.loads(prober.communicate("stop\n", timeout=180)[0])
        after = memory_mb(server.pid)
        result.update(rss_before_mb=before, rss_peak_mb=after["VmHWM"], rss_after_mb=after["VmRSS"],
                      cpu_count=os.cpu_count(), loadavg=os.getloadavg())
    finally:
        stop(server)
    report(result)
    write_report(args.output, {"overload": result, "model": args.model})
    return result


def report(result: dict) -> None:
    a, r = result["admitted_ms"] or {}, result["refused_ms"] or {}
    pr = result["probe"]["refused_ms"] or {}
    print(f"{result['clients']} clients, {result['requests']} requests in {result['seconds']:.1f} s: "
          f"{result['refused_share']:.1%} refused (503, Retry-After {','.join(result['retry_after']) or '-'}), "
          f"{result['errors']} errors; admitted {result['admitted']} ({result['admitted_per_s']:.1f}/s) "
          f"p50 {a.get('p50', 0):.0f} p95 {a.get('p95', 0):.0f} max {a.get('max', 0):.0f} ms; refusals "
          f"p50 {r.get('p50', 0):.1f} p95 {r.get('p95', 0):.1f} ms as the 200 threads saw them, "
          f"p50 {pr.get('p50', 0):.1f} p95 {pr.get('p95', 0):.1f} ms (n={pr.get('n', 0)}) as a client of its own "
          f"did; RSS {result['rss_before_mb']:.0f} -> peak {result['rss_peak_mb']:.0f} -> "
          f"{result['rss_after_mb']:.0f} MB; load average {result['loadavg'][0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)
    ok = result["errors"] == 0 and a.get("p95", 0) <= 1000 and pr.get("p95", 0) <= 50
    print(f"targets (no errors, admitted p95 <= 1 s, the own client's refusals p95 <= 50 ms): "
          f"{'OK' if ok else 'MISSED'}")


def main(argv=None) -> None:
    """The probe client: `python benchmarks/app_overload.py PORT SECONDS` prints its latencies as JSON after SECONDS
    or once a line arrives on its standard input."""
    port, seconds = (argv if argv is not None else sys.argv[1:])[:2]
    stop = threading.Event()
    threading.Thread(target=lambda: sys.stdin.readline() and stop.set(), daemon=True).start()  # "" at EOF
    print(json.dumps(probe(int(port), float(seconds), stop=stop)))


if __name__ == "__main__":
    main()
