"""Same behaviour, measured: dump the engine's rankings on a fixed workload, or compare two dumps.

    python benchmarks/parity.py --model runs/parity-model --index runs/parity-index --out runs/parity-before.json
    python benchmarks/parity.py --compare runs/parity-before.json runs/parity-after.json

The workload, on the shared catalog (`--catalog`, default ../shared/data): every text query of `queries/*.jsonl`
(`search_text`), every composed line (`search_composed` with the line's catalog `image` as `item_id`), "more like
this" for `--items` catalog items drawn with a fixed seed (`search_item`) and photo search for `--photos` catalog
photos (`search_image`). For each query the top-10 ids and every score of each result are written. `--compare`
reports every id difference and every score difference above `--tolerance` (1e-6) and exits 1 when there is any.
`--vector-store qdrant --qdrant-path DIR` runs the same workload on the Qdrant backend (local mode).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCORES = ("score", "visual_score", "text_score", "lexical_score", "rerank_score", "vsc")


def _dump(results) -> list[dict]:
    return [{"id": r.id, "duplicates": list(r.duplicates), **{s: getattr(r, s) for s in SCORES}} for r in results]


def workload(engine, query_dir: Path, items: int, photos: int, seed: int, k: int = 10):
    """(kind, key, thunk) of every query of the workload, in a fixed order."""
    from modeling.data.queries import load_queries

    for path in sorted(query_dir.glob("*.jsonl")):
        for line_no, line in enumerate(load_queries(path)):
            key = f"{path.name}:{line_no}:{line['query']}"
            if "image" in line:
                yield "composed", key, lambda line=line: engine.search_composed(text=line["query"],
                                                                                item_id=str(line["image"]), k=k)
            else:
                yield "text", key, lambda line=line: engine.search_text(line["query"], k=k)
    rng = np.random.default_rng(seed)
    ids = engine.ids
    for position in sorted(rng.choice(len(ids), size=min(items, len(ids)), replace=False).tolist()):
        yield "item", ids[position], lambda item_id=ids[position]: engine.search_item(item_id, k=k)
    chosen = sorted(rng.choice(len(ids), size=min(photos, len(ids)), replace=False).tolist())
    for position, row in zip(chosen, engine.catalog.rows(chosen)):  # a store's engine holds no item table
        yield "image", ids[position], lambda path=str(row["image_path"]): engine.search_image(path, k=k)


def dump(args) -> None:
    from modeling.retrieval.engine.search import FashionSearchEngine

    options = {}
    if args.vector_store == "qdrant":
        from modeling.retrieval.backends.qdrant.store import QdrantConfig

        options = {"vector_store": "qdrant", "qdrant": QdrantConfig(path=args.qdrant_path)}
    engine = FashionSearchEngine.load(args.model, args.index, catalog=args.catalog, **options)
    out, counts = {}, {}
    for kind, key, run in workload(engine, Path(args.queries), args.items, args.photos, args.seed):
        try:
            out[f"{kind}|{key}"] = _dump(run())
        except Exception as error:  # noqa: BLE001 - an error is a behaviour too: it must stay the same
            out[f"{kind}|{key}"] = {"error": f"{type(error).__name__}: {error}"}
        counts[kind] = counts.get(kind, 0) + 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"counts": counts, "results": out}, indent=0))
    print(f"wrote {args.out}: {counts}")


def _close(a, b, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=0.0, abs_tol=tolerance)


def compare(path_a: str, path_b: str, tolerance: float = 1e-6) -> list[str]:
    """Every difference between two dumps, as lines."""
    a, b = (json.loads(Path(p).read_text())["results"] for p in (path_a, path_b))
    problems = [f"only in {path_a}: {key}" for key in a.keys() - b.keys()]
    problems += [f"only in {path_b}: {key}" for key in b.keys() - a.keys()]
    for key in sorted(a.keys() & b.keys()):
        ra, rb = a[key], b[key]
        if isinstance(ra, dict) or isinstance(rb, dict):
            if ra != rb:
                problems.append(f"{key}: {ra} != {rb}")
            continue
        if [r["id"] for r in ra] != [r["id"] for r in rb] or [r["duplicates"] for r in ra] != [
                r["duplicates"] for r in rb]:
            problems.append(f"{key}: ids {[r['id'] for r in ra]} != {[r['id'] for r in rb]}")
            continue
        for rank, (x, y) in enumerate(zip(ra, rb), start=1):
            for score in SCORES:
                if not _close(x[score], y[score], tolerance):
                    problems.append(f"{key}: rank {rank} {score} {x[score]} != {y[score]}")
    return problems


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/parity-model")
    parser.add_argument("--index", default="runs/parity-index")
    parser.add_argument("--catalog", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--queries", default=str(ROOT / "queries"))
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vector-store", choices=("faiss", "qdrant"), default="faiss")
    parser.add_argument("--qdrant-path", default="runs/parity-qdrant")
    parser.add_argument("--out", default="runs/parity.json")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"))
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args(argv)
    if args.compare:
        problems = compare(*args.compare, tolerance=args.tolerance)
        total = len(json.loads(Path(args.compare[0]).read_text())["results"])
        for line in problems:
            print(line)
        print(f"{total} queries compared, {len(problems)} differences (tolerance {args.tolerance})")
        sys.exit(1 if problems else 0)
    dump(args)


if __name__ == "__main__":
    main()
