"""evaluate.py's reports: the flat comparison table, results.md, the JSON files, the plots and the stage timings.

`flat_row` turns a model's nested row (`modeling.evaluation.suite`) into one line of the comparison table
(`COLUMNS`), `results_markdown` renders results.md from a run's results, `write_json` writes results.json and the
per-section files, `write_plots` draws comparison.png, consistency_<model>.png and samples.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from modeling.evaluation.analysis import CHANGED
from modeling.evaluation.reports.grids import query_grid
from modeling.evaluation.reports.plots import plot_attribute_consistency, plot_comparison
from modeling.evaluation.reports.tables import markdown_table
from modeling.utils.io import atomic_write_text

COLUMNS = [("model", "model"), ("t2i_r1", "title→img R@1"), ("t2i_r10", "title→img R@10"), ("t2i_mrr", "title MRR"),
           ("kagl_r10", "KAGL R@10"), ("fused_p", "queries P@10 (fused)"), ("fused_vsc", "queries VSC@10"),
           ("i2i_p", "img→img P@10"), ("i2i_map", "img mAP@10"), ("top1", "img top-1"),
           ("i2i_p_expanded", "img→img P@10 (engine, expanded)"), ("top1_expanded", "img top-1 (engine, expanded)"),
           ("i2i_colour", "img P@10 type+colour"), ("i2i_cos", "img cos@10"), ("i2i_vsc", "img VSC@10"),
           ("composed_r10", "composed R@10"), ("composed_r50", "composed R@50"), ("composed_vsc", "composed VSC@10"),
           ("items_per_s", "images/s"), ("index_mb", "index MB")]


class Timings(dict):
    """Seconds per stage of the run (reported in results.json and printed)."""

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        yield
        self[name] = round(self.get(name, 0.0) + time.perf_counter() - started, 1)
        print(f"[{name}: {self[name]:.1f} s]")


def slug(text: str) -> str:
    """A file-name-safe form of a model name (consistency_<slug>.png)."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def json_default(value):
    """numpy scalars and arrays as plain JSON values."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, value) -> Path:
    """`value` as indented JSON at `path`, written atomically."""
    return atomic_write_text(path, json.dumps(value, indent=2, default=json_default))


def flat_row(row: dict, k: int) -> dict:
    """One line of the comparison table (`COLUMNS`) from a nested row of results.json."""
    i2i, t2i = row.get("i2i") or {}, row.get("t2i") or {}
    flat = {"model": row["model"], "i2i_p": i2i.get(f"p@{k}"), "i2i_p_expanded": i2i.get(f"p@{k}_expanded"),
            "top1_expanded": i2i.get("top1_expanded"), "i2i_map": i2i.get(f"map@{k}"),
            "top1": i2i.get("top1"), "i2i_colour": i2i.get(f"p@{k}_colour"), "i2i_vsc": i2i.get(f"vsc@{k}"),
            "i2i_cos": i2i.get(f"cos@{k}"), "t2i_r1": t2i.get("r@1"), "t2i_r10": t2i.get(f"r@{k}"),
            "t2i_mrr": t2i.get("mrr"), "kagl_r10": (t2i.get("kagl") or {}).get("single_target", {}).get(f"r@{k}"),
            "fused_p": ((row.get("queries") or {}).get("fused") or {}).get(f"p@{k}"),
            "fused_vsc": ((row.get("queries") or {}).get("fused") or {}).get(f"vsc@{k}"),
            "items_per_s": round(row["items_per_s"]) if row.get("items_per_s") else None,
            "index_mb": round(row["index_bytes"] / 2**20, 2) if row.get("index_bytes") is not None else None}
    composed = (row.get("composed") or {})
    if composed:
        main = composed["variants"][composed["default"]]
        flat.update(composed_r10=main.get(f"r@{k}"), composed_r50=main.get("r@50"), composed_vsc=main.get(f"vsc@{k}"))
    return flat


def results_markdown(results: dict, flat: list[dict], k: int) -> str:
    """results.md: the comparison table, the observations, per-attribute consistency, out-of-domain and the
    standard protocols, each when the run has it."""
    g = results["gallery"]
    parts = [f"Gallery: {g['items']:,} items of the `{g['split']}` split. VSC: cosine of "
             f"{results['vsc']['encoder']} embeddings of the query's and the result's descriptions "
             f"({results['vsc']['source']}); it shares its encoder with the fused item-text score.",
             markdown_table(flat, COLUMNS, bold_best=["t2i_r10", "i2i_p", "top1", "i2i_colour", "composed_r10"])]
    if results.get("observations"):
        parts += ["Observations (the seeds' format; CosSim = mean cosine of the top 5, VSC = VSC@5, notes relative to "
                  "the medians of these queries):",
                  markdown_table(results["observations"], [("query", "query"), ("cos", "CosSim"), ("vsc", "VSC"),
                                                          ("note", "notes")], digits=2)]
    consistency = []
    for row in results["rows"]:
        for mode, values in (("image", (row.get("i2i") or {}).get("consistency")),
                             ("composed", (row.get("composed") or {}).get("variants", {}).get(
                                 (row.get("composed") or {}).get("default"), {}).get("consistency"))):
            if values:
                consistency.append({"model": f"{row['model']} ({mode})", **values})
    if consistency:
        attrs = ["articleType", "baseColour", "gender", "usage", "season", CHANGED]
        parts += [f"Per-attribute consistency: share of the top {k} keeping the query item's attribute:",
                  markdown_table(consistency, [("model", "model / query"), *[(a, a) for a in attrs]])]
    ood = results.get("ood")
    if ood:
        lines = []
        for name, row in ood["models"].items():
            for metric, values in row.items():
                lines.append({"model": name, "metric": metric, **values})
        parts += [f"Out-of-domain: {ood['field']} = {ood['value']} ({ood['gallery_items_held_out']} gallery items; "
                  f"queries: {ood['num_queries']}), model embeddings alone:",
                  markdown_table(lines, [("model", "model"), ("metric", "metric"), ("held_out", "held out"),
                                         ("in_domain", "in domain"), ("gap", "gap")])]
    lines = []
    for name, protos in results.get("protocols", {}).items():
        fiq = protos.get("fashion_iq")
        if fiq:
            for category, r in [*fiq["categories"].items(), ("average", fiq["average"])]:
                lines.append({"model": name, "protocol": f"Fashion-IQ val {category}", "r@1": None,
                              "r@10": r.get("r@10"), "r@50": r.get("r@50"), "mean": r.get("mean"),
                              "queries": r.get("num_queries", fiq["num_queries"])})
        f200k = protos.get("fashion200k")
        if f200k:
            lines.append({"model": name, "protocol": f"Fashion200K test ({f200k['query_source']} queries)",
                          "r@1": f200k.get("r@1"), "r@10": f200k.get("r@10"), "r@50": f200k.get("r@50"),
                          "mean": None, "queries": f200k.get("num_queries")})
    for row in results["rows"]:
        kagl = (row.get("t2i") or {}).get("kagl")
        if kagl:
            for variant in ("single_target", "any_same_title"):
                lines.append({"model": row["model"], "protocol": f"KAGL title→image, {variant.replace('_', ' ')}",
                              "r@1": kagl[variant]["r@1"], "r@10": kagl[variant].get(f"r@{k}"),
                              "mrr": kagl[variant]["mrr"], "queries": kagl["num_queries"]})
    if lines:
        parts += ["Standard protocols:", markdown_table(lines, [
            ("model", "model"), ("protocol", "protocol"), ("r@1", "R@1"), ("r@10", "R@10"), ("r@50", "R@50"),
            ("mean", "mean(R@10, R@50)"), ("mrr", "MRR"), ("queries", "queries")])]
    return "\n\n".join(parts) + "\n"


def write_plots(results: dict, out_dir: str | os.PathLike, grid: list[dict] | None = None) -> None:
    """comparison.png (the table's main columns), consistency_<model>.png per row with per-attribute consistency,
    and samples.png from `grid` (the sample queries' rows for `query_grid`) when there is one."""
    out_dir, k, flat = Path(out_dir), results["k"], results["table"]
    plot_comparison(flat, [("t2i_r10", f"title→image R@{k}"), ("i2i_p", f"image→image P@{k}"),
                           ("i2i_colour", f"P@{k} type+colour"), ("composed_r10", f"composed R@{k}"),
                           ("i2i_vsc", f"VSC@{k} (image)")], out_dir / "comparison.png",
                    title=f"{results['gallery']['split']} split, {results['gallery']['items']} items")
    for r in results["rows"]:
        consistency = {"image query": (r.get("i2i") or {}).get("consistency")}
        if r.get("composed"):
            consistency["composed query"] = r["composed"]["variants"][r["composed"]["default"]]["consistency"]
        consistency = {key: v for key, v in consistency.items() if v}
        if consistency:
            plot_attribute_consistency(consistency, out_dir / f"consistency_{slug(r['model'])}.png",
                                       title=f"{r['model']}: share of the top {k} keeping the query's attribute")
    if grid:
        query_grid(grid, out_dir / "samples.png")


__all__ = ["COLUMNS", "Timings", "flat_row", "json_default", "results_markdown", "slug", "write_json",
           "write_plots"]
