"""evaluate.py's command line and `modeling.evaluation.suite`: same flags and defaults, one code path for the CLI and
`evaluate_model_folder`, and the image->image row's engine columns ranked through the engine."""

import dataclasses

import numpy as np
import pytest

import evaluate
from modeling.evaluation import suite
from modeling.retrieval.engine import batch

# evaluate.py's flags and their defaults before the evaluation logic moved to modeling/evaluation (Makefile, README).
FLAG_DEFAULTS = {
    "catalog": "../shared/data", "split": "test", "all": False, "queries": None, "text_weight": 0.7,
    "lexical_weight": 0.4, "text_encoder": "sentence-transformers/all-MiniLM-L6-v2", "vsc_source": "title", "k": 10,
    "max_items": None, "no_baselines": False, "hist_weight": 0.5, "composed": False, "composed_max": None,
    "composed_variants": "main", "rerank_model": None, "rerank_weights": "0.1,0.2,0.3,0.5", "rerank_depth": 100,
    "ood": None, "ood_model": [], "pretrained": "", "fashion_iq_root": "../shared/data/fashion-iq",
    "fashion_iq_images": None, "fashion_iq_exclude_reference": False, "fashion200k": None, "plots": False,
    "model_card": None,
}


def test_cli_flags_keep_their_defaults_and_match_the_config():
    config = evaluate.parse_args(["--model", "runs/m", "--output", "out"])
    values = dataclasses.asdict(config)
    assert values.pop("model") == ["runs/m"] and values.pop("output") == "out"
    assert values.pop("command") == "python evaluate.py --model runs/m --output out"
    assert values == FLAG_DEFAULTS
    defaults = suite.EvaluationConfig(model=["runs/m"], output="out", command=config.command)
    assert config == defaults  # the config's own defaults are the flags'


def test_all_turns_on_the_full_run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "val.jsonl").write_text("")
    config = evaluate.parse_args(["--all", "--model", "m", "--output", "o", "--split", "val"])
    assert config.composed and config.plots and config.queries == "queries/val.jsonl"
    assert set(config.pretrained.split(",")) == set(suite.PRETRAINED_EXTRACTORS)
    assert "--all" in config.command


def test_evaluate_model_folder_is_the_cli_run(monkeypatch, tmp_path):
    """`evaluate_model_folder` runs exactly what `evaluate.py --model M --catalog C --split S --no-baselines
    --output O` runs (the same config through `run_evaluation`), and returns its results."""
    seen = []

    def fake_run(config):
        seen.append(config)
        return suite.Evaluation({"rows": [], "elapsed_s": 0.0}, "")

    monkeypatch.setattr(suite, "run_evaluation", fake_run)
    monkeypatch.setattr(evaluate, "run_evaluation", fake_run)
    out = tmp_path / "eval"
    assert suite.evaluate_model_folder(tmp_path / "model", "data", "test", out) == {"rows": [], "elapsed_s": 0.0}
    evaluate.main(["--model", str(tmp_path / "model"), "--catalog", "data", "--split", "test", "--no-baselines",
                   "--output", str(out)])
    assert seen[0] == seen[1] and seen[0].no_baselines and seen[0].model == [str(tmp_path / "model")]


def test_image_to_image_engine_columns_rank_through_the_engine(small_engine, monkeypatch):
    engine = small_engine
    items = engine.index.items
    embeds = engine.item_vectors()
    calls = []
    original = suite.engine_item_rankings

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(suite, "engine_item_rankings", spy)
    through_engine = suite.image_to_image(embeds, items, None, k=10, engine=engine)
    assert calls == [{"depth": 10}]
    without = suite.image_to_image(embeds, items, None, k=10)  # a baseline's features: the same ranking function
    assert through_engine == without
    top = batch.item_rankings(engine, depth=10)
    article = items["articleType"].to_numpy()
    assert through_engine["p@10_expanded"] == pytest.approx(float((article[top] == article[:, None]).mean()))
    assert through_engine["top1_expanded"] == pytest.approx(float((article[top[:, 0]] == article).mean()))
    assert np.isfinite(through_engine["p@10"])
