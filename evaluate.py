"""Evaluate every model of the project and the baselines on the same gallery, queries and protocols.

    python evaluate.py --all --model runs/dual-encoder --model runs/vae --model runs/autoencoder \
        --rerank-model runs/vae --ood-model runs/dual-encoder-no-kurtas --ood articleType=Kurtas \
        --queries queries/test.jsonl --output runs/eval --model-card model_card.md
    python evaluate.py --model runs/dual-encoder --split val --queries queries/dev.jsonl --output runs/eval-dev

Rows of the comparison table: every `--model` (dual encoder, VAE, plain autoencoder, CLIP+LoRA, ...), random,
the region colour histogram, the colour-histogram + learned-feature hybrid (histogram + the first image-only
model's latents, or the first model's), hybrid re-ranking (`--rerank-model`), and pretrained extractors
(`--pretrained dinov2,resnet,vit`, only where the Hub is reachable). Same split, gallery and queries for all.

Protocols (the gallery is every item of `--split`, a comma-separated list of splits):
- image->image: every gallery item queries the rest (itself excluded); relevant: same articleType. P@10, mAP@10,
  nDCG@10, R@10 (share of the relevant items found), top-1, P@10 for same articleType + baseColour, VSC@10 (query:
  the item's description) beside the mean cosine of the top 10, and per-attribute consistency@10.
- title->image: one query per distinct normalised title (relevant: every item with it): R@1/R@10/MRR; and the
  KAGL protocol of the fashion-CLIP leaderboards (one query per item, its title, single target).
- --queries FILE.jsonl (format in modeling/data/queries.py): shopper queries through the search engine, visual only,
  item text only and fused: P@10, nDCG@10, VSC@10. Lines with `"image": <catalog id>` are composed queries
  (reference item + the text) and get their own section. Writes OUT/queries.json.
- --composed: catalog triplets of the gallery (reference + "make it blue") through the engine's composed search:
  R@1/10/50 (any item of the reference's type and gender in the new colour), exact-target R@K, VSC@10 (query: the
  reference's description with the colour replaced), consistency. Writes OUT/composed.json.
- --rerank-model DIR: hybrid image search (candidates from the first text model, re-ranked by e.g. the VAE) at each
  --rerank-weights value. Writes OUT/hybrid.json.
- --ood FIELD=VALUE: queries generated from the held-out items' titles and attributes against the same forms in
  domain, per text model (add the model trained with `train.py --exclude FIELD=VALUE` as --ood-model).
- --fashion-iq-images DIR / --fashion200k DIR: the published composed-retrieval protocols
  (modeling/evaluation/protocols/).
VSC is the raw cosine of MiniLM sentence embeddings of the query's description and each result's description
(modeling/retrieval/engine/vsc.py); it shares its encoder with the fused item-text score. Reports: OUT/results.json,
OUT/results.md, OUT/comparison.png, OUT/consistency_<model>.png, OUT/samples.png, and with --model-card the
regenerated card.

The run itself is `modeling.evaluation.suite.run_evaluation` (sections through the search engine in
`modeling.evaluation.engine_reports`, reports in `modeling.evaluation.reports.results`); this script is its command
line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modeling.evaluation.reports.results import slug, write_plots
from modeling.evaluation.suite import (EvaluationConfig, Evaluation, cli_command, evaluate_model_folder,
                                       image_to_image, run_evaluation)
from modeling.retrieval.engine.search import DEFAULT_LEXICAL_WEIGHT, DEFAULT_TEXT_WEIGHT, FashionSearchEngine

# Importable from here as before: the row function tests call, the engine, and the run's API.
__all__ = ["Evaluation", "EvaluationConfig", "FashionSearchEngine", "evaluate_model_folder", "image_to_image", "main",
           "parse_args", "run_evaluation", "slug"]


def parse_args(argv=None) -> EvaluationConfig:
    """The command line as an `EvaluationConfig` (`--all` expanded there)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="trained model folder (repeatable)")
    p.add_argument("--catalog", default="../shared/data")
    p.add_argument("--split", default="test", help="gallery split(s), comma-separated")
    p.add_argument("--output", required=True)
    p.add_argument("--all", action="store_true",
                   help="everything: baselines, queries (default queries/<split>.jsonl), composed, VSC table, "
                        "consistency, KAGL, pretrained rows where reachable, plots")
    p.add_argument("--queries", default=None, help="JSONL query file (text and composed lines)")
    p.add_argument("--text-weight", type=float, default=DEFAULT_TEXT_WEIGHT, help="fusion weight of item text")
    p.add_argument("--lexical-weight", type=float, default=DEFAULT_LEXICAL_WEIGHT,
                   help="weight of the BM25 keyword match inside the item-text score")
    p.add_argument("--text-encoder", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="sentence encoder of the item-text match and of VSC")
    p.add_argument("--vsc-source", choices=["title", "caption"], default="title", help="item description of VSC")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-items", type=int, default=None, help="cap the gallery (quick runs, tests)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--hist-weight", type=float, default=0.5, help="colour-histogram share of the hybrid baseline")
    p.add_argument("--composed", action="store_true", help="evaluate composed search on the gallery's triplets")
    p.add_argument("--composed-max", type=int, default=None, help="cap the number of composed triplets")
    p.add_argument("--composed-variants", choices=["main", "all"], default="main",
                   help="main: the engine's default, weighted sum, combiner and an uploaded photo; all: 11 variants")
    p.add_argument("--rerank-model", default=None, help="model folder re-ranking image queries (hybrid search)")
    p.add_argument("--rerank-weights", default="0.1,0.2,0.3,0.5", help="hybrid re-ranking weights to measure")
    p.add_argument("--rerank-depth", type=int, default=100, help="candidates the re-ranker re-scores")
    p.add_argument("--ood", default=None, metavar="FIELD=VALUE", help="out-of-domain analysis of a held-out value")
    p.add_argument("--ood-model", action="append", default=[], help="model trained without it (also a table row)")
    p.add_argument("--pretrained", default="", help="pretrained extractor rows, e.g. dinov2,resnet,vit (Hub)")
    p.add_argument("--fashion-iq-root", default="../shared/data/fashion-iq")
    p.add_argument("--fashion-iq-images", default=None, help="Fashion-IQ image folder: run the Fashion-IQ protocol")
    p.add_argument("--fashion-iq-exclude-reference", action="store_true")
    p.add_argument("--fashion200k", default=None, help="Fashion200K folder (labels/ and images): run its protocol")
    p.add_argument("--plots", action="store_true", help="write the PNG plots and the sample grid")
    p.add_argument("--model-card", default=None, help="regenerate this model card from the run (first model's card)")
    args = p.parse_args(argv)
    return EvaluationConfig(**vars(args), command=cli_command(argv if argv is not None else sys.argv[1:]))


def main(argv=None) -> dict:
    config = parse_args(argv)
    run = run_evaluation(config)  # writes results.json, metrics.json, results.md and the sections' JSON files
    results, out_dir = run.results, Path(config.output)
    if config.plots:
        write_plots(results, out_dir, run.grid)
    if config.model_card:
        from modeling.evaluation.reports.model_card import update_model_card

        update_model_card(config.model_card, results, run.markdown, results["rows"][0])
    print(f"\nwrote {out_dir}/results.json, results.md" + (", plots" if config.plots else "")
          + f" in {results['elapsed_s']:.0f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
