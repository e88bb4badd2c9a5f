"""The photo benchmark's served rows (through the search engine), composed search from phone-like photos, and its
report: `photos.json`, `photos.md` (model x remedy x condition tables) and `photos.png` (what the queries look like).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from modeling.evaluation.photo_render import remedy_image, render
from modeling.utils.io import atomic_write_bytes, atomic_write_text


def _engine(args, catalog):
    from modeling.retrieval.engine.search import FashionSearchEngine

    model = args.model[0]
    photo_model = getattr(args, "photo_model", None)
    photo_model = None if str(photo_model).lower() in ("", "none") else photo_model
    return FashionSearchEngine.load(model, args.index or Path(model) / "index", catalog=catalog,
                                    photo_model=photo_model, photo_index=getattr(args, "photo_index", None))


def served_rows(args, catalog, query_pos, queries, types, colours) -> list[dict]:
    """P@10 (type) and type+colour P@10 of the engine's `search_image` answers (the app's photo search): the photos
    as rendered (`none`, the engine isolating the product itself) and cut from the user's `box`."""
    engine = _engine(args, catalog)
    ids = [str(i) for i in catalog["id"]]
    where = {item_id: p for p, item_id in enumerate(ids)}
    rows = []
    for (condition, remedy), images in tqdm(queries.items(), desc="served photo queries"):
        if remedy == "isolate":  # the engine isolates uploads itself: its row is `none`
            continue
        same_type, same_both = [], []
        for p, image in zip(query_pos, images):
            found = np.array([where[str(r.id)] for r in engine.search_image(image, k=10, exclude_ids=[ids[p]])],
                             dtype=int)
            t, c = types[found] == types[p], colours[found] == colours[p]
            same_type.append(t.sum() / 10)
            same_both.append((t & c).sum() / 10)
        rows.append({"model": f"{Path(args.model[0]).name} (served)", "condition": condition, "remedy": remedy,
                     "p@10": float(np.mean(same_type)), "p@10_type_colour": float(np.mean(same_both))})
    return rows


def composed_rows(args, catalog, photos, n: int = 200) -> list[dict]:
    """Composed search (reference photo + "make it <colour>") from clean and phone-like reference photos."""
    from modeling.data.composed import catalog_triplets

    engine = _engine(args, catalog)
    triplets = catalog_triplets(catalog, split=args.split, change="baseColour", seed=args.seed).to_list()
    rng = np.random.default_rng(args.seed)
    picked = [triplets[i] for i in sorted(rng.choice(len(triplets), size=min(n, len(triplets)), replace=False))]
    where = {str(i): p for p, i in enumerate(catalog["id"])}
    rows_of = catalog.select_columns(["articleType", "gender", "baseColour"]).to_list()
    out = []
    for condition, remedy in (("clean", "none"), ("phone", "none"), ("phone", "isolate")):
        hits, precision = [], []
        for i, t in enumerate(tqdm(picked, desc=f"composed ({condition}, {remedy})")):
            ref, target = where[str(t["reference_id"])], where[str(t["target_id"])]
            image, box = render(catalog[ref]["image"], condition, np.random.default_rng([args.seed, i, 99]), photos)
            image = remedy_image(image, box, remedy, np.random.default_rng([args.seed, i, 7]))
            results = engine.search_composed(image=image, text=t["modification"], k=10,
                                             exclude_ids=[str(t["reference_id"])])
            want = rows_of[ref]
            rel = [rows_of[where[str(r.id)]]["articleType"] == want["articleType"]
                   and rows_of[where[str(r.id)]]["gender"] == want["gender"]
                   and rows_of[where[str(r.id)]]["baseColour"] == rows_of[target]["baseColour"]
                   for r in results]
            hits.append(any(rel))
            precision.append(sum(rel) / 10)
        out.append({"condition": condition, "remedy": remedy, "triplets": len(picked),
                    "r@10": float(np.mean(hits)), "p@10": float(np.mean(precision))})
    return out


def markdown(report: dict) -> str:
    rows = report["rows"] + report.get("served", [])
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    lines = [f"Photo benchmark: {report['queries']} {report['split']}-split products as queries over the "
             f"{report['catalog']}-item catalog; backgrounds: {', '.join(report['backgrounds'])}.", ""]
    for key, title in (("p@10", "P@10 (same articleType)"), ("p@10_type_colour", "P@10 (type + colour)")):
        lines += [f"**{title}**", "", "| model | remedy | " + " | ".join(conditions) + " |",
                  "|---|---|" + "---:|" * len(conditions)]
        groups = {}
        for r in rows:
            groups.setdefault((r["model"], r["remedy"]), {})[r["condition"]] = r[key]
        for (model, remedy), values in groups.items():
            cells = [f"{values[c]:.3f}" if c in values else "" for c in conditions]
            lines.append(f"| {model} | {remedy} | " + " | ".join(cells) + " |")
        lines.append("")
    ideal = {r["condition"]: r["ideal"] for r in report["rows"] if "ideal" in r}
    if ideal:
        lines += ["Ideal P@10 (queries with fewer than 10 same-type items cap it): " +
                  ", ".join(f"{v:.3f}" for v in sorted(set(ideal.values()))), ""]
    if report.get("composed"):
        lines += ["**Composed search** (reference photo + \"make it <colour>\")", "",
                  "| reference photo | remedy | R@10 | P@10 |", "|---|---|---:|---:|"]
        lines += [f"| {r['condition']} | {r['remedy']} | {r['r@10']:.3f} | {r['p@10']:.3f} |"
                  for r in report["composed"]]
        lines.append("")
    return "\n".join(lines)


def picture(rendered: dict, queries: dict, n: int = 6, cell: tuple[int, int] = (120, 160)) -> Image.Image:
    """Rows of products; columns: each condition's query photo, then the phone-like photo isolated."""
    columns = [(c, rendered[c]) for c in rendered] + [
        (f"{c} / {r}", [(img, None) for img in queries[(c, r)]]) for (c, r) in queries if r != "none" and c == "phone"]
    sheet = Image.new("RGB", (cell[0] * len(columns), cell[1] * n), "white")
    for col, (_, items) in enumerate(columns):
        for row, (image, _) in enumerate(items[:n]):
            thumb = image.copy()
            thumb.thumbnail(cell)
            sheet.paste(thumb, (col * cell[0] + (cell[0] - thumb.width) // 2, row * cell[1]))
    return sheet


def write_report(report: dict, rendered: dict, queries: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "photos.json", json.dumps(report, indent=2))
    text = markdown(report)
    atomic_write_text(out_dir / "photos.md", text + "\n")
    buffer = io.BytesIO()
    picture(rendered, queries).save(buffer, format="PNG")
    atomic_write_bytes(out_dir / "photos.png", buffer.getvalue())
    print(text)
    print(f"written: {out_dir / 'photos.json'}, photos.md, photos.png ({report['seconds']:.0f} s)")


__all__ = ["composed_rows", "markdown", "picture", "served_rows", "write_report"]
