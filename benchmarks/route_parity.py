"""Route parity: what the served app's structured endpoints answer, dumped to compare two versions of the code.

    python benchmarks/route_parity.py --out runs/route-parity-before.json
    python benchmarks/route_parity.py --out runs/route-parity-after.json --compare runs/route-parity-before.json

Serves the app (`app.build_demo` + `app.serve`, as `python app.py` does) over one model and the shared catalog
(model folder `runs/parity-model`, its index in `runs/route-parity-index`, built on first use), then sends a fixed
set of requests: every `/api/v1` JSON route (text queries of queries/shopper_dev.jsonl with and without filters,
"more like this" items, composed items, refused requests, the image route) and the Gradio API's structured-data
endpoints (`/search_text_data`, `/similar_items_data`, `/composed_item_data`, Gradio's two-request protocol) and
the Gradio API page (`/gradio_api/info`: every endpoint's parameters, types and defaults). Each
answer's status and JSON body is written (`took_ms` left out: it is a timing); `--compare` reports every
difference against an earlier dump (scores within `--tolerance`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx  # noqa: E402

ANY3 = ["Any", "Any", "Any"]


def strip_timing(data):
    if isinstance(data, dict):
        return {k: strip_timing(v) for k, v in data.items() if k != "took_ms"}
    if isinstance(data, list):
        return [strip_timing(v) for v in data]
    return data


def requests_to_send(items, queries: list[str]) -> list[tuple[str, str, object]]:
    """(transport, endpoint, payload): json routes take a body (dict, or raw text for malformed bodies), Gradio
    endpoints a list of positional values."""
    ids = [str(items["id"].iloc[i]) for i in (0, 7, 123, 1000, 4321, len(items) - 1)]
    out = []
    filters = [{}, {"gender": "Women"}, {"colour": "black"}, {"category": "Tshirts", "gender": "Men"}]
    for i, query in enumerate(queries[:30]):
        out.append(("json", "search_text", {"query": query, "k": 10 if i % 3 else 5, **filters[i % len(filters)]}))
    for i, item in enumerate(ids):
        out.append(("json", "similar_items", {"item_id": item, "k": 8, **filters[i % len(filters)]}))
    for item, text in zip(ids, ["make it blue", "in black instead", "shorter and sleeveless", "for men",
                                "a brown one", "with stripes"]):
        out.append(("json", "composed_item", {"item_id": item, "text": text, "k": 6}))
    # refused
    out += [("json", "search_text", {"query": "red dress", "k": 0}),
            ("json", "search_text", {"query": "red dress", "k": 3.7}),
            ("json", "search_text", {"query": "", "k": 5}),
            ("json", "search_text", {"query": "red dress", "gender": "Nobody"}),
            ("json", "search_text", {"query": "red dress", "model": "nope"}),
            ("json", "search_text", {"query": "red dress", "ignore": ["gender"]}),
            ("json", "search_text", {"query": "red dress", "k": 3, "model": None}),
            ("json", "search_text", {"query": "red dress", "k": 3, "model": False}),
            ("json", "search_text", {"k": 5}),
            ("json", "search_text", "{not json"),
            ("json", "search_text", "[1, 2]"),
            ("json", "similar_items", {"item_id": "no-such-item"}),
            ("json", "similar_items", {"item_id": "7" * 1000}),
            ("json", "similar_items", {"item_id": ids[0], "rerank_weight": 0.5}),
            ("json", "similar_items", {"item_id": ids[0], "rerank_weight": "abc"}),
            ("json", "composed_item", {"item_id": None, "text": "make it blue"}),
            ("json", "composed_item", {"item_id": ids[0]}),
            ("json", "composed_item", {"item_id": ids[0], "text": "", "k": 5})]
    out += [("image", "images", ids[0]), ("image", "images", "no-such-item")]
    out.append(("info", "gradio_api/info", None))  # the API page: every endpoint's parameters, types, defaults
    # the Gradio API's structured-data endpoints
    for query in queries[30:36]:
        out.append(("gradio", "search_text_data", [query, 5, "", *ANY3]))
    out.append(("gradio", "search_text_data", ["red dress", 5, "", "Women", "Any", "Red"]))
    out.append(("gradio", "similar_items_data", [ids[1], 5, "", *ANY3, 0.0]))
    out.append(("gradio", "similar_items_data", [ids[2], 5, "", "Men", "Any", "Any", 0.0]))
    out.append(("gradio", "composed_item_data", [ids[3], "make it blue", 5, "", *ANY3]))
    out += [("gradio", "search_text_data", ["red dress", 0, "", *ANY3]),
            ("gradio", "similar_items_data", [ids[0], 5, "", *ANY3, "abc"]),
            ("gradio", "composed_item_data", [None, "make it blue", 5, "", *ANY3]),
            ("gradio", "search_text_data", ["red dress"])]
    return out


def gradio_call(base: str, name: str, data) -> tuple[str, object]:
    response = httpx.post(f"{base}/gradio_api/call/{name}", json={"data": data}, timeout=120)
    if response.status_code != 200:
        return f"http {response.status_code}", response.json()
    stream = httpx.get(f"{base}/gradio_api/call/{name}/{response.json()['event_id']}", timeout=120).text
    event = re.findall(r"^event: (\w+)", stream, flags=re.MULTILINE)[-1]
    return event, json.loads(re.findall(r"^data: (.*)$", stream, flags=re.MULTILINE)[-1])


def send(base: str, transport: str, endpoint: str, payload) -> dict:
    if transport == "json":
        body = payload if isinstance(payload, str) else json.dumps(payload)
        response = httpx.post(f"{base}/api/v1/{endpoint}", content=body,
                              headers={"Content-Type": "application/json"}, timeout=120)
        return {"status": response.status_code, "body": strip_timing(response.json())}
    if transport == "image":
        response = httpx.get(f"{base}/api/v1/images/{payload}", timeout=60)
        body = (hashlib.sha1(response.content).hexdigest() if response.status_code == 200
                else response.json())
        return {"status": response.status_code, "body": body}
    if transport == "info":
        response = httpx.get(f"{base}/{endpoint}", timeout=60)
        return {"status": response.status_code, "body": response.json()}
    event, data = gradio_call(base, endpoint, payload)
    return {"status": event, "body": strip_timing(data)}


def differences(before, after, tolerance: float, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        if set(before) != set(after):
            return [f"{path}: keys {sorted(set(before) ^ set(after))}"]
        return [d for k in before for d in differences(before[k], after[k], tolerance, f"{path}.{k}")]
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{path}: length {len(before)} != {len(after)}"]
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, tolerance, f"{path}[{i}]")]
    if (isinstance(before, float) or isinstance(after, float)) and isinstance(before, (int, float)) \
            and isinstance(after, (int, float)) and not isinstance(before, bool):
        return [] if math.isclose(before, after, rel_tol=0, abs_tol=tolerance) else [f"{path}: {before} != {after}"]
    return [] if before == after else [f"{path}: {str(before)[:120]!r} != {str(after)[:120]!r}"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/parity-model")
    p.add_argument("--index", default="runs/route-parity-index")
    p.add_argument("--catalog", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--queries", default=str(ROOT / "queries" / "shopper_dev.jsonl"))
    p.add_argument("--out", required=True)
    p.add_argument("--compare", default=None, help="an earlier dump to compare with")
    p.add_argument("--tolerance", type=float, default=1e-6)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import app
    from modeling.serving.registry import EngineRegistry, ModelSpec
    from modeling.serving.service import SearchService

    registry = EngineRegistry([ModelSpec("parity-model", args.model, args.index)], catalog=args.catalog)
    items = registry.get().index.items
    service = SearchService(registry)
    demo = app.build_demo(registry, service)
    allowed = sorted({str(Path(p).parent) for p in items.get("image_path", []) if p})
    app.serve(demo, service, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True,
              allowed_paths=allowed, css=app.CSS)
    base = demo.local_url.rstrip("/")
    queries = [json.loads(line)["query"] for line in Path(args.queries).read_text().splitlines() if line.strip()]
    answers = []
    try:
        for transport, endpoint, payload in requests_to_send(items, queries):
            answers.append({"transport": transport, "endpoint": endpoint, "request": payload,
                            **send(base, transport, endpoint, payload)})
    finally:
        demo.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(answers, indent=1, default=str))
    statuses = {}
    for a in answers:
        statuses[str(a["status"])] = statuses.get(str(a["status"]), 0) + 1
    print(f"{len(answers)} requests ({sum(a['transport'] == 'json' for a in answers)} JSON routes, "
          f"{sum(a['transport'] == 'image' for a in answers)} image route, "
          f"{sum(a['transport'] == 'gradio' for a in answers)} Gradio API); statuses {statuses} -> {args.out}")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        found = differences(before, json.loads(json.dumps(answers, default=str)), args.tolerance)
        for line in found[:50]:
            print("DIFF", line)
        print(f"route parity: {len(found)} differences on {len(answers)} requests (tolerance {args.tolerance:g})")
        if found:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
