"""Photo-search settings on dev: the served engine's answers to rendered shopper photos under a grid of
`EngineSettings` (the second encoder's fusion weight, the type vote, the type term's weight), each photo encoded once.

    python benchmarks/photo_settings.py --model runs/world-40-p035-composed --refine --fusion 0.5,0.6 \
        --type-vote 0.5,1.0 --type-weight 0.3,0.6 --split val --backgrounds val,test --output runs/photos2-grid.json

Dev only: val-split products on the dev background sets (`modeling.evaluation.photo_render.BACKGROUNDS`). Each query
photo is prepared as the engine prepares it (isolated; or cut from the product's jittered box, `box`; or, as an
upper bound for any cut-out, the product's true mask put on white, `oracle`), both
encoders' vectors are memoised, and every setting ranks the same photos through `search_image`. Prints P@10 (type)
and type + colour P@10 per condition and remedy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling.data.catalog import load_catalog  # noqa: E402
from modeling.evaluation.photo_render import (CONDITIONS, background_photos, background_sets,  # noqa: E402
                                              remedy_image, render)
from modeling.retrieval.engine.search import DEFAULT_PHOTO_MODEL, FashionSearchEngine  # noqa: E402


def add_engine_arguments(p: argparse.ArgumentParser, queries: int) -> None:
    """The arguments the photo benchmarks share: the served engine, the catalog, the query products' draw."""
    p.add_argument("--model", default="runs/world-40-p035-composed")
    p.add_argument("--index", default=None)
    p.add_argument("--photo-model", default=DEFAULT_PHOTO_MODEL)
    p.add_argument("--photo-index", default=None)
    p.add_argument("--photo-size", default=None, help="HEIGHT,WIDTH the second encoder reads (default its own)")
    p.add_argument("--catalog", default="../shared/data")
    p.add_argument("--split", default="val")
    p.add_argument("--backgrounds", default="val,test")
    p.add_argument("--queries", type=int, default=queries)
    p.add_argument("--max-items", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def load_engine(args):
    """(catalog, the served engine over it, its second encoder reading `--photo-size`)."""
    catalog = load_catalog(args.catalog, max_items=args.max_items)
    engine = FashionSearchEngine.load(args.model, args.index or Path(args.model) / "index", catalog=catalog,
                                      photo_model=args.photo_model, photo_index=args.photo_index)
    if args.photo_size and engine.photo_fusion is not None:
        engine.photo_fusion.processor.image_size = [int(v) for v in args.photo_size.split(",")]
    return catalog, engine


def query_positions(catalog, args) -> np.ndarray:
    """The query products: `--queries` catalog positions of `--split`, drawn with `--seed` (sorted)."""
    in_split = np.flatnonzero(np.array(catalog["split"]) == args.split)
    rng = np.random.default_rng(args.seed)
    return np.sort(rng.choice(in_split, size=min(args.queries, len(in_split)), replace=False))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_engine_arguments(p, queries=200)
    p.add_argument("--refine", action="store_true", help="photos isolated twice (EngineSettings.refine_photos)")
    p.add_argument("--one-cutout", action="store_true", help="the centred cut-out alone, not the best of several "
                   "(EngineSettings.choose_cutout off: the default before it)")
    p.add_argument("--flip", action="store_true", help="each photo's vectors averaged with its mirror image's")
    p.add_argument("--conditions", default="clean,photo,phone")
    p.add_argument("--remedies", default="none,box", help="none (the engine's own isolation), box (GrabCut from the "
                   "product's jittered box), oracle (the product's true mask on white: an upper bound for cut-outs)")
    p.add_argument("--fusion", default="0,0.3,0.5,0.7")
    p.add_argument("--type-vote", default="0,0.5")
    p.add_argument("--type-weight", default="0.3,0.6")
    p.add_argument("--output", default="runs/photos2-grid.json")
    return p.parse_args(argv)


def memoised(encode, memo: dict):
    """An encoder that reads prepared photos' vectors from `memo` (by object), encoding the others."""
    return lambda images: np.stack([memo[id(i)] if id(i) in memo else encode([i])[0] for i in images])


def encode(encoder, images, flip: bool) -> np.ndarray:
    """Unit vectors of `images`; with `flip`, of each image plus its mirror image."""
    vectors = encoder(images)
    if flip:
        vectors = vectors + encoder([ImageOps.mirror(i) for i in images])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    catalog, engine = load_engine(args)
    engine.settings = replace(engine.settings, refine_photos=args.refine, choose_cutout=not args.one_cutout)
    types, colours, ids = (np.array(catalog[c]) for c in ("articleType", "baseColour", "id"))
    query_pos = query_positions(catalog, args)
    photos = background_photos(",".join(background_sets(args.backgrounds, args.split)))
    queries = {}
    for c in args.conditions.split(","):
        for r in args.remedies.split(","):
            if r != "none" and c in ("clean", "zoom", "light"):
                continue
            prepared = []
            for i, p in enumerate(query_pos):
                image, box, mask = render(catalog[int(p)]["image"], c,
                                          np.random.default_rng([args.seed, i, CONDITIONS.index(c)]), photos, True)
                image = remedy_image(image, box, r, np.random.default_rng([args.seed, i, 7]), mask) if r != "none" \
                    else image
                # The product itself is excluded from the answers, and so from what chooses its cut-out.
                prepared.append(engine.prepare_photo(image, scope=engine.catalog.scope(None, [str(ids[p])])))
            queries[(c, r)] = prepared
    everything = [q.image for qs in queries.values() for q in qs]
    started = time.perf_counter()
    first = dict(zip(map(id, everything), encode(engine.encode_images, everything, args.flip)))
    second = dict(zip(map(id, everything), encode(engine.photo_fusion.encode_images, everything, args.flip)))
    print(f"encoded {len(everything)} photos twice in {time.perf_counter() - started:.0f} s", flush=True)
    engine.encode_images = memoised(engine.encode_images, first)
    engine.photo_fusion.encode_images = memoised(engine.photo_fusion.encode_images, second)
    base = engine.settings
    rows = []
    grid = itertools.product(*(map(float, v.split(",")) for v in (args.fusion, args.type_vote, args.type_weight)))
    for fusion, vote, type_weight in grid:
        engine.settings = replace(base, photo_fusion=fusion, photo_type_vote=vote, image_consistency={
            **base.image_consistency, "articleType": type_weight})
        for (c, r), prepared in queries.items():
            t, tc = [], []
            for p, q in zip(query_pos, prepared):
                found = engine.positions(x.id for x in engine.search_image(q, k=10, exclude_ids=[str(ids[p])]))
                t.append(np.mean(types[found] == types[p]))
                tc.append(np.mean((types[found] == types[p]) & (colours[found] == colours[p])))
            rows.append({"fusion": fusion, "type_vote": vote, "type_weight": type_weight, "condition": c,
                         "remedy": r, "p@10": float(np.mean(t)), "p@10_type_colour": float(np.mean(tc))})
            print(json.dumps(rows[-1]), flush=True)
    Path(args.output).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
