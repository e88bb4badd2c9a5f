"""The photo-robustness benchmark: photo search with shopper-like photos, per model and per remedy.

    python -m modeling.evaluation.photos --model runs/dual-encoder --catalog ../shared/data --split test

No real set of shoppers' phone photos of these products can be reached offline, so the benchmark renders them: each
query product's catalog photo (60x80, a studio shot on white) is cut out along its studio background
(`modeling.data.photos.studio_background_mask`), enlarged 3x and composited into a 3:4 or square "phone" frame, under
one of these conditions:

    clean   the catalog photo itself
    zoom    a 70-85% crop of it (zoomed in, shifted), still on white
    light   brighter or darker, contrast, saturation and white balance changed by up to 20%
    plain   on a flat coloured surface with a lighting gradient (the colour sampled from a real photograph)
    photo   on a crop of a real photograph, at 60-95% of the frame's height, shifted
    phone   photo + a 70-100% crop + rotation up to 10 degrees + light + blur + sensor noise + JPEG (quality 45-90)

The backgrounds are real photographs bundled with installed packages, in sets (`--backgrounds`, default the split's
own): `val` and `test`, scikit-image's (a table, a cat on a carpet, a rocket launch, a brick wall / an astronaut,
motorbikes, grass, ...; greyscale ones tinted), both dev now (the first round ran `test` once); `fresh`, the held-out
set of the second round, from other packages (scikit-learn's and matplotlib's sample photographs), dev since it ran
once; `fresh2`, the third round's held-out set (the photographs bundled with Gradio), dev since it ran once
(docs/results.md: a next round needs backgrounds of its own). Training never
sees any of them: its backgrounds are solid colours, gradients, procedural patterns and blurred catalog photos
(`modeling.training.augment`).

Remedies, applied to the query photo before encoding (`modeling.data.photos.isolate_product`): `none`; `isolate`
(GrabCut from a centred box, skipped for studio shots); `box` (GrabCut from the product's true box, jittered by 5%
of its size: a shopper drawing a box around the product).

Rows: each `--model` folder; `--effnet` the frozen ImageNet EfficientNet-Lite0 features; `--fusion W` the first
model's cosine fused with EfficientNet's at weight W. Metrics over the whole catalog as the gallery, the query
product itself excluded: P@10 (same articleType) beside its ideal, type+colour P@10, nDCG@10 (type). With
`--served`, the first model also answers through the search engine (`FashionSearchEngine.search_image`, what the
app serves, with the app's second photo encoder, `--photo-model`) and composed search from clean and phone-like
reference photos is reported (R@10 of any item of the
reference's type and gender in the asked colour, and P@10).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from modeling.data.catalog import load_catalog
from modeling.evaluation.photo_render import (BACKGROUNDS, CONDITIONS, REMEDIES, background_photos, background_sets,
                                              remedy_image, render)
from modeling.evaluation.photo_report import composed_rows, served_rows, write_report
from modeling.utils.io import save_npy

def precision_rows(scores: np.ndarray, query_pos: np.ndarray, types: np.ndarray, colours: np.ndarray,
                   k: int = 10) -> dict:
    """P@10 (type), its ideal, type+colour P@10 and nDCG@10 (type) of (Q, N) scores, each query's product excluded."""
    from modeling.utils.topk import topk_indices

    top = topk_indices(scores, k, self_index=query_pos)
    same_type = types[top] == types[query_pos][:, None]
    same_both = same_type & (colours[top] == colours[query_pos][:, None])
    n_rel = np.array([(types == types[p]).sum() - 1 for p in query_pos])
    discounts = 1 / np.log2(np.arange(2, k + 2))
    ideal_dcg = np.array([discounts[:min(k, r)].sum() for r in n_rel])
    ndcg = np.where(ideal_dcg > 0, (same_type * discounts).sum(1) / np.maximum(ideal_dcg, 1e-9), 0.0)
    return {"p@10": float(same_type.mean()), "ideal": float(np.minimum(n_rel, k).mean() / k),
            "p@10_type_colour": float(same_both.mean()), "ndcg@10": float(ndcg.mean())}


class ImageModel:
    """A model folder (or `efficientnet-lite0`) as an image encoder with its gallery embeddings."""

    def __init__(self, name: str):
        from modeling.encoders.loading import encode_images, load_model
        from modeling.evaluation.baselines import EFFICIENTNET_LITE0, efficientnet_lite0_extractor

        self.name = name
        if name == EFFICIENTNET_LITE0:
            self.encode = efficientnet_lite0_extractor().encode
        else:
            model, _, processor = load_model(name)
            self.encode = lambda images: encode_images(model, processor, images)

    def gallery(self, images, cache: Path | None) -> np.ndarray:
        if cache is not None and cache.is_file():
            return np.load(cache)
        out = np.concatenate([self.encode(images[i:i + 512]) for i in
                              tqdm(range(0, len(images), 512), desc=f"gallery ({Path(self.name).name})")])
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_npy(cache, out)
        return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", default=[], help="a model folder (repeatable)")
    p.add_argument("--effnet", action="store_true", help="add the frozen ImageNet EfficientNet-Lite0 row")
    p.add_argument("--fusion", type=float, action="append", default=[],
                   help="add the first model fused with EfficientNet-Lite0 at this weight (repeatable)")
    p.add_argument("--catalog", default="../shared/data")
    p.add_argument("--split", choices=["val", "test"], default="test",
                   help="query products (and, without --backgrounds, the background set of the same name)")
    p.add_argument("--backgrounds", default=None,
                   help=f"background sets, comma-separated, of {', '.join(BACKGROUNDS)} (default: the split's; "
                        "every set has run once and is dev now: a next held-out round needs a new set)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--max-items", type=int, default=None, help="the catalog's first N items only (quick runs)")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--remedies", default=",".join(REMEDIES))
    p.add_argument("--served", action="store_true", help="also through the search engine, with composed search")
    p.add_argument("--index", default=None, help="the engine's index folder (default MODEL/index)")
    p.add_argument("--photo-model", default="efficientnet-lite0",
                   help="the served engine's second photo encoder, as the app's --photo-model ('none': off)")
    p.add_argument("--photo-index", default=None, help="its index folder (default INDEX/photo, built when absent)")
    p.add_argument("--output", default="runs/photos")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.model and not args.effnet:
        raise SystemExit("give at least one --model folder or --effnet")
    started = time.perf_counter()
    catalog = load_catalog(args.catalog, max_items=args.max_items)
    types, colours = np.array(catalog["articleType"]), np.array(catalog["baseColour"])
    in_split = np.flatnonzero(np.array(catalog["split"]) == args.split)
    rng = np.random.default_rng(args.seed)
    query_pos = np.sort(rng.choice(in_split, size=min(args.queries, len(in_split)), replace=False))
    sets = background_sets(args.backgrounds, args.split)
    photos = background_photos(",".join(sets))
    conditions = [c for c in args.conditions.split(",") if c]
    remedies = [r for r in args.remedies.split(",") if r]
    products = [catalog[int(p)]["image"] for p in query_pos]
    rendered = {c: [render(img, c, np.random.default_rng([args.seed, i, CONDITIONS.index(c)]), photos)
                    for i, img in enumerate(products)] for c in conditions}
    queries = {(c, r): [remedy_image(img, box, r, np.random.default_rng([args.seed, i, 7]))
                        for i, (img, box) in enumerate(rendered[c])]
               for c in conditions for r in remedies
               if not (r != "none" and c in ("clean", "zoom", "light"))}  # studio shots: remedies change nothing
    out_dir = Path(args.output)
    names = list(args.model) + (["efficientnet-lite0"] if args.effnet or args.fusion else [])
    gallery_images = catalog.select_columns(["image"])["image"]
    scores: dict[str, dict] = {}
    for name in names:
        model = ImageModel(name)
        cache = out_dir / "cache" / f"{Path(name).name}-{len(catalog)}.npy" if name == "efficientnet-lite0" else None
        gallery = model.gallery(gallery_images, cache)
        scores[name] = {key: model.encode(images) @ gallery.T for key, images in
                        tqdm(queries.items(), desc=f"queries ({Path(name).name})")}
    rows = []
    labels = {n: Path(n).name for n in names}
    for name in names if args.effnet else args.model:
        for (c, r), s in scores[name].items():
            rows.append({"model": labels[name], "condition": c, "remedy": r,
                         **precision_rows(s, query_pos, types, colours)})
    for w in args.fusion:
        first = args.model[0]
        for key in scores[first]:
            fused = (1 - w) * scores[first][key] + w * scores["efficientnet-lite0"][key]
            rows.append({"model": f"{labels[first]} + EfficientNet-Lite0 ({w:g})", "condition": key[0],
                         "remedy": key[1], **precision_rows(fused, query_pos, types, colours)})
    report = {"split": args.split, "queries": len(query_pos), "catalog": len(catalog), "rows": rows,
              "backgrounds": [n for s in sets for n in BACKGROUNDS[s]]}
    if args.served and args.model:
        report["served"] = served_rows(args, catalog, query_pos, queries, types, colours)
        report["composed"] = composed_rows(args, catalog, photos)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, rendered, queries, out_dir)
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
