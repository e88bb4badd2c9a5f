"""The app's memory served from a Qdrant collection alone, against a bare process holding the same collection.

    python benchmarks/store_memory.py --collections runs/storemem-n15000 runs/storemem-n1000000 --queries 40

For each collection (a copy of a synthetic one of `benchmarks/scale.py --backend qdrant-edge`: production schema,
ids "0".."n-1"), in a fresh process each:
- **engine**: `FashionSearchEngine.load(..., vector_store="qdrant-edge")` exactly as the app starts it (the
  serving record read at start, no point), then `--queries` requests through the app's `SearchService`: text
  queries with intents and a gender filter, "more like this", composed edits of catalog items, collapsing on and
  off; every request the engine sends to the collection is recorded;
- **bare**: the same libraries and models loaded, the collection opened (`QdrantStore.open`) and the recorded
  requests replayed on it: what the store itself holds (a Qdrant server would hold it in another process).
Both apply `app.py`'s allocator and thread settings once loaded (`tune_as_the_app`).
Each prints its RSS split into anonymous memory and mapped files (`/proc/self/status`), and the engine process the
size of each structure it holds that could grow with the catalog (deep `sys.getsizeof`, numpy `nbytes`, pandas
`memory_usage(deep=True)`).
The figure of issue 26: (engine - bare) at the large collection minus (engine - bare) at the small one.

The synthetic collections carry the model fingerprint "synthetic" and no serving record: `stamp` gives a collection
(modify a copy only) the fingerprint of a tiny random dual encoder (`--model`, made when absent, 256-d, no heads),
the sentence encoder's identity for its 384-d `title` vectors, and the serving record the build would write
(`write_serving_record`: the parser's vocabulary from the payloads, no intent heads; VSC off, or with `--vsc` on
the `title` vectors, which hold the same kind of 384-d sentence embeddings).
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NAME = "fashion-search-synthetic"
TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
WORDS = ["for", "men", "women", "in", "item", "make", "it", "colour", "type", "shoes", "shirt", "red", "blue"]
STRUCTURES = ("index.items", "index.record", "index.lookup._rows", "index.lookup._positions",
              "index.catalog_values.values", "catalog._records", "_table._records", "intents._codes",
              "consistency._catalog", "duplicates._groups", "duplicates._order", "duplicates._keys",
              "vsc.descriptions", "vsc._records")


def tiny_model(folder: Path, dim: int = 256) -> Path:
    """A random dual encoder (tiny BERT text tower, tiny CNN) whose embeddings are `dim`-d, saved once."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

    from modeling import DualEncoderImageProcessor, DualEncoderModel

    torch.manual_seed(0)
    text = folder / "text"
    text.mkdir(parents=True, exist_ok=True)
    (text / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab=str(text / "vocab.txt")).save_pretrained(text)
    BertModel(BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(text)
    model = DualEncoderModel.from_text_pretrained(str(text), projection_dim=dim, text_projection_hidden_size=24,
                                                  image_size=[20, 16], cnn_stem_channels=8, cnn_channels=[8, 16],
                                                  cnn_blocks_per_stage=[1, 1])
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(text).save_pretrained(folder)
    DualEncoderImageProcessor(image_size=model.config.image_size).save_pretrained(folder)
    return folder


def config_of(folder: Path):
    from modeling.retrieval.backends.qdrant.store import QdrantConfig

    return QdrantConfig(path=str(folder), edge=True, collection=NAME)


def stamp(folder: Path, model_dir: Path, vsc: bool = False) -> None:
    """Give a synthetic collection the model's identity and a serving record (see the module docstring)."""
    from modeling.encoders.loading import embedding_dim, load_model, model_fingerprint
    from modeling.retrieval.backends.qdrant.catalog import (SERVING_FORMAT, SERVING_KEY, catalog_facts,
                                                            write_serving_record)
    from modeling.retrieval.backends.qdrant.schema import create_payload_indexes
    from modeling.retrieval.backends.qdrant.store import COMPLETE_KEY, METADATA_KEY
    from modeling.retrieval.engine.stored import read_back
    from modeling.retrieval.understanding.parser import INTENT_ATTRIBUTES
    from modeling.retrieval.understanding.vocabulary import catalog_vocabulary

    model = load_model(model_dir)[0]
    client = config_of(folder).connect()
    try:
        everything = client.get_collection(NAME).config.metadata or {}
        identity = dict(everything[METADATA_KEY])
        info = {"name": str(model_dir), "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
        wanted_vsc = {"vector": "title", "source": "title", "encoder": TEXT_ENCODER} if vsc else None
        record = everything.get(SERVING_KEY) or {}
        # a record of the parser's vocabulary before it left out digit-only words is written again
        current = (not any(w.isdigit() for w in (record.get("parser") or {}).get("known_words", ["0"]))
                   and record.get("format_version") == SERVING_FORMAT)
        if identity.get("model") == info and record.get("vsc", False) == wanted_vsc and current:
            return
        identity.update(model=info, text_encoder={"name": TEXT_ENCODER, "embedding_dim": 384}, named_texts=[])
        client.update_collection(NAME, metadata={METADATA_KEY: identity})
        create_payload_indexes(client, NAME)  # idempotent: the `position` index of this version
        items, _ = read_back(client, NAME, identity.get("attributes", ()), False)
        parser = catalog_vocabulary(items, INTENT_ATTRIBUTES)
        write_serving_record(client, NAME, {
            "model_fingerprint": info["fingerprint"], "catalog_signature": identity.get("catalog", {}).get("signature"),
            "num_items": everything[COMPLETE_KEY]["num_items"], "parser": parser,
            "groups": None, "intent_heads": None, "vsc": wanted_vsc,
            **catalog_facts(items, identity.get("attributes", ()))})
    finally:
        client.close()


def requests(n: int, count: int) -> list[tuple[str, dict]]:
    """(service method, keywords) of `count` requests over a collection of `n` synthetic items."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        item = str(int(rng.integers(0, n)))
        kind = i % 4
        if kind == 0:
            out.append(("search_text", {"query": f"colour{rng.integers(46)} type{rng.integers(140)} for women",
                                        "k": 10, "gender": "Women"}))
        elif kind == 1:
            out.append(("search_text", {"query": f"type{rng.integers(140)} not colour{rng.integers(46)}", "k": 10,
                                        "collapse": False}))
        elif kind == 2:
            out.append(("search_item", {"item_id": item, "k": 10}))
        else:
            out.append(("search_composed", {"item_id": item, "text": f"in colour{rng.integers(46)}", "k": 10}))
    return out


def memory() -> dict:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}


def deep_size(obj, seen: set | None = None) -> int:
    """Bytes held by `obj` and what it references (containers, numpy arrays, pandas objects), each object once."""
    import pandas as pd

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        usage = obj.memory_usage(deep=True, index=True)
        return int(usage.sum() if isinstance(usage, pd.Series) else usage)
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes) + (sum(deep_size(x, seen) for x in obj.ravel()) if obj.dtype == object else 0)
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(x, seen) for x in obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith("modeling"):
        size += deep_size(vars(obj), seen)
    return size


def structures(engine) -> dict:
    """MB held by each per-item structure the engine keeps (those it has; see `STRUCTURES`)."""
    out = {}
    for path in STRUCTURES:
        owner, found = engine, True
        for part in path.split("."):
            owner = getattr(owner, part, None)
            found = found and owner is not None
        if found:
            out[path] = round(deep_size(owner) / 2**20, 2)
    return out


def tune_as_the_app() -> None:
    """The allocator and thread settings `app.py` applies before serving (its defaults)."""
    from modeling.serving.tuning import cap_malloc_arenas, limit_threads, return_large_blocks

    limit_threads(1)
    cap_malloc_arenas(2)
    return_large_blocks()


def serve_engine(folder: Path, model_dir: Path, count: int, record: Path, vsc: bool = False) -> dict:
    from modeling.retrieval.engine.search import FashionSearchEngine
    from modeling.serving.registry import EngineRegistry
    from modeling.serving.service import SearchService

    before = memory()
    start = time.perf_counter()
    engine = FashionSearchEngine.load(model_dir, None, vector_store="qdrant-edge", qdrant=config_of(folder),
                                      text_encoder=TEXT_ENCODER, vsc_source="title" if vsc else None)
    load_s = time.perf_counter() - start
    tune_as_the_app()
    calls = []
    client = engine.backend.store.client
    for method in ("query_points", "retrieve", "scroll", "count"):
        original = getattr(client, method)
        setattr(client, method, lambda *a, _f=original, _m=method, **kw: calls.append((_m, a, kw)) or _f(*a, **kw))
    service = SearchService(EngineRegistry.from_engines({"synthetic": engine}))
    service.filter_choices()
    n = len(engine.index)
    start = time.perf_counter()
    for method, keywords in requests(n, count):
        if method == "search_text":
            gender = keywords.pop("gender", None)
            keywords["filters"] = service.filters(gender=gender) if gender else None
        getattr(engine, method)(**keywords)
    serve_s = time.perf_counter() - start
    record.write_bytes(pickle.dumps(calls))
    return {"process": "engine", "collection": str(folder), "items": n, "load_s": round(load_s, 1),
            "serve_ms_per_request": round(1000 * serve_s / max(count, 1), 1), "store_calls": len(calls),
            "before_load_mb": before, **memory(), "structures_mb": structures(engine)}


def serve_bare(folder: Path, model_dir: Path, record: Path) -> dict:
    """The same libraries and models, the collection opened, the engine's recorded requests replayed."""
    from modeling.encoders.loading import embedding_dim, load_model, model_fingerprint
    from modeling.encoders.sentence import SentenceEncoder
    from modeling.retrieval.backends.qdrant.store import QdrantStore

    model = load_model(model_dir)[0]
    encoder = SentenceEncoder(TEXT_ENCODER)
    info = {"name": str(model_dir), "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model)}
    store = QdrantStore.open(config_of(folder), info, text_dim=encoder.dim)
    tune_as_the_app()
    calls = pickle.loads(record.read_bytes())
    for method, args, keywords in calls:
        getattr(store.client, method)(*args, **keywords)
    return {"process": "bare", "collection": str(folder), "items": store.num_items, "store_calls": len(calls),
            **memory()}


def in_subprocess(*argv: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", nargs="+", type=Path, help="synthetic collection folders (copies: stamped)")
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "storemem-model")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--vsc", action="store_true",
                        help="VSC on: the serving record names the 384-d `title` vectors as VSC's (synthetic titles)")
    parser.add_argument("--serve", choices=("engine", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        folder = args.collections[0]
        row = (serve_engine(folder, args.model, args.queries, args.record, args.vsc) if args.serve == "engine"
               else serve_bare(folder, args.model, args.record))
        print(json.dumps(row))
        return 0
    tiny_model(args.model)
    rows = []
    for folder in args.collections:
        stamp(folder, args.model, args.vsc)
        record = folder.parent / f"{folder.name}-calls.pkl"
        common = ["--collections", str(folder), "--model", str(args.model), "--record", str(record)]
        engine = in_subprocess("--serve", "engine", "--queries", str(args.queries), *common, *["--vsc"] * args.vsc)
        bare = in_subprocess("--serve", "bare", *common)
        row = {"collection": str(folder), "items": engine["items"], "engine": engine, "bare": bare,
               "engine_minus_bare_mb": round(engine["VmRSS"] - bare["VmRSS"], 1),
               "engine_minus_bare_anon_mb": round(engine["RssAnon"] - bare["RssAnon"], 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if len(rows) > 1:
        small, large = min(rows, key=lambda r: r["items"]), max(rows, key=lambda r: r["items"])
        summary = {"items": [small["items"], large["items"]],
                   "app_beyond_store_difference_mb": round(large["engine_minus_bare_mb"] - small["engine_minus_bare_mb"], 1),
                   "app_beyond_store_anon_difference_mb": round(large["engine_minus_bare_anon_mb"]
                                                                - small["engine_minus_bare_anon_mb"], 1),
                   "engine_rss_difference_mb": round(large["engine"]["VmRSS"] - small["engine"]["VmRSS"], 1)}
        print(json.dumps(summary))
        rows.append(summary)
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
