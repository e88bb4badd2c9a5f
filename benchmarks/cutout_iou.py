"""How well the product is cut out of rendered shopper photos: mask IoU against the product's true pixels, on dev.

    python benchmarks/cutout_iou.py --photo-index runs/photos2-effnet128-index --photo-size 128,96 \
        --split val --backgrounds val,test --queries 150 --output runs/photo24-cutout-iou.json

Dev only: val-split products (the same draw as `benchmarks/photo_settings.py`, seed 0) on the dev background sets;
the held-out sets are refused. The renderer returns what it pasted (`render(..., with_mask=True)`); each photo is
prepared by the engine (`prepare_photo`, the product excluded from what chooses a cut-out) with the centred box
alone (`default`) and with the cut-out chosen among several (`chosen`, `EngineSettings.choose_cutout`). The pixels
searched are the cut-out's mask, or the whole box when nothing was cut out. Prints mean and median IoU, the share
of photos below 0.5 and the time per photo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.photo_settings import add_engine_arguments, load_engine, query_positions  # noqa: E402
from modeling.evaluation.photo_render import CONDITIONS, background_photos, background_sets, render  # noqa: E402

HELD_OUT = ("fresh", "fresh2")  # the held-out sets of earlier rounds (each run once): kept out of cut-out tuning


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_engine_arguments(p, queries=150)
    p.add_argument("--conditions", default="photo,phone")
    p.add_argument("--output", default="runs/photo24-cutout-iou.json")
    return p.parse_args(argv)


def searched_pixels(isolation, shape) -> np.ndarray:
    """(H, W) bool: the cut-out's mask, or the box searched when nothing was cut out."""
    if isolation.mask is not None:
        return isolation.mask
    left, top, right, bottom = isolation.box
    out = np.zeros(shape, bool)
    out[top:bottom, left:right] = True
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def summary(ious, seconds) -> dict:
    ious = np.asarray(ious)
    return {"mean": float(ious.mean()), "median": float(np.median(ious)), "below_0.5": float((ious < 0.5).mean()),
            "seconds_per_photo": float(np.mean(seconds)), "photos": int(len(ious))}


def main(argv=None) -> dict:
    args = parse_args(argv)
    sets = background_sets(args.backgrounds, args.split)
    if args.split == "test" or any(s in HELD_OUT for s in sets):
        raise SystemExit(f"dev only: the test split and the held-out backgrounds {HELD_OUT} are not measured here")
    catalog, engine = load_engine(args)
    ids = np.array(catalog["id"])
    query_pos = query_positions(catalog, args)  # photo_settings.py's draw
    photos = background_photos(",".join(sets))
    variants = {"default": replace(engine.settings, choose_cutout=False),
                "chosen": replace(engine.settings, choose_cutout=True)}
    ious = {name: [] for name in variants}
    seconds = {name: [] for name in variants}
    for c in args.conditions.split(","):
        for i, p in enumerate(query_pos):
            rng = np.random.default_rng([args.seed, i, CONDITIONS.index(c)])  # photo_settings.py's draws
            image, _, truth = render(catalog[int(p)]["image"], c, rng, photos, True)
            scope = engine.catalog.scope(None, [str(ids[p])])
            for name, settings in variants.items():
                engine.settings = settings
                started = time.perf_counter()
                isolation = engine.prepare_photo(image, scope=scope)
                seconds[name].append(time.perf_counter() - started)
                ious[name].append(mask_iou(searched_pixels(isolation, truth.shape), truth >= 128))
        print(c, {name: round(float(np.mean(v[-len(query_pos):])), 3) for name, v in ious.items()}, flush=True)
    report = {name: summary(ious[name], seconds[name]) for name in variants}
    for name, row in report.items():
        print(name, json.dumps(row), flush=True)
    Path(args.output).write_text(json.dumps({"args": vars(args), "report": report}, indent=1))
    return report


if __name__ == "__main__":
    main()
