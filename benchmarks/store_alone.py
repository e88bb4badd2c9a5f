"""The app served from a Qdrant collection alone, checked against the FAISS engine: start `app.py` on a model folder
that has no index folder and a collection (`--vector-store qdrant-edge --qdrant-path DIR`), send the JSON routes the
parity queries (text with intents, negations, misspellings and a filter; "more like this"; composed), compare each
top 10 with the FAISS engine of the reference model folder (its index) in this process, and print the app's RSS.

    mkdir -p runs/store-model && cp runs/world-40-p035-composed/{config.json,model.safetensors,*_config.json,\\
tokenizer.json} runs/store-model/
    python benchmarks/store_alone.py --model runs/store-model --reference runs/world-40-p035-composed \\
        --qdrant-path runs/store-edge-15k
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEXTS = ("black sneakers for women", "running shoes not black", "blak tshrt for men", "red kurta for women",
         "sweter for men", "formal shoes to go with a suit", "handbgs")


def post(port: int, name: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/{name}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def cases(faiss) -> list[tuple[str, dict, object]]:
    """(route, JSON body, the FAISS engine's answer) of every parity request."""
    ids = faiss.ids
    out = [("search_text", {"query": q, "k": 10}, lambda q=q: faiss.search_text(q, k=10)) for q in TEXTS]
    out.append(("search_text", {"query": "casual shirt", "k": 10, "gender": "men"},
                lambda: faiss.search_text("casual shirt", k=10, filters={"gender": "Men"})))
    out += [("similar_items", {"item_id": ids[i], "k": 10}, lambda i=i: faiss.search_item(ids[i], k=10))
            for i in (0, 42, len(ids) // 3, len(ids) - 999)]
    out += [("composed_item", {"item_id": ids[i], "text": text, "k": 10},
             lambda i=i, text=text: faiss.search_composed(item_id=ids[i], text=text, k=10))
            for i, text in ((11, "in blue"), (len(ids) // 5, "make it black"), (len(ids) // 2, "for women"))]
    return out


def wait_ready(app: subprocess.Popen, port: int, log: Path, limit_s: float = 900) -> float:
    start = time.time()
    while True:
        try:
            post(port, "search_text", {"query": "shoes", "k": 1})
            return time.time() - start
        except OSError:
            if app.poll() is not None or time.time() - start > limit_s:
                raise SystemExit(f"the app did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/store-model", help="a model folder without an index folder")
    parser.add_argument("--reference", default="runs/world-40-p035-composed", help="the same model with its index")
    parser.add_argument("--vector-store", choices=("qdrant-edge", "qdrant"), default="qdrant-edge")
    parser.add_argument("--qdrant-path", default="runs/store-edge-15k")
    parser.add_argument("--port", type=int, default=7911)
    parser.add_argument("--log", default="runs/store-app.log")
    args = parser.parse_args(argv)
    if (Path(args.model) / "index").exists():
        raise SystemExit(f"{args.model} has an index folder: copy the model without it")
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = Path(args.log)
    with open(log, "w") as output:
        app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", args.model, "--vector-store",
                                args.vector_store, "--qdrant-path", args.qdrant_path, "--port", str(args.port)],
                               env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        from modeling.retrieval.engine.search import FashionSearchEngine

        faiss = FashionSearchEngine.load(args.reference, Path(args.reference) / "index")
        print(f"app ready after {wait_ready(app, args.port, log):.0f} s")
        same = 0
        requests = cases(faiss)
        for name, body, local in requests:
            got, want = [r["id"] for r in post(args.port, name, body)["results"]], [r.id for r in local()]
            same += got == want
            print(f"{name} {body}: " + ("same top 10" if got == want else
                                        f"DIFFERENT ({len(set(got) & set(want))}/10 shared)"))
        print(f"{same}/{len(requests)} requests: the same top 10 as the FAISS engine")
        status = {line.split(":")[0]: line.split(":")[1].strip() for line in open(f"/proc/{app.pid}/status")}
        print("app process: " + ", ".join(f"{key} {status[key]}" for key in ("VmRSS", "RssAnon", "RssFile")))
        print(f"index folder present after serving: {(Path(args.model) / 'index').exists()}")
        return 0 if same == len(requests) else 1
    finally:
        app.terminate()
        app.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
