"""evaluate.py end to end on a small real gallery with tiny models: every section, the reports and the card."""

import json

import pytest
from PIL import Image

import evaluate
from modeling.data.catalog import load_catalog
from modeling.evaluation.tasks import image_to_image_metrics
from modeling.evaluation.reports.cards import check_model_card
from modeling.evaluation.reports.results import slug
from modeling.encoders.loading import encode_images, load_model
from modeling.retrieval.engine.build_index import catalog_items


@pytest.mark.slow
def test_evaluate_all_sections_and_reports(catalog_dir, tiny_model_dir, tiny_vae_dir, tmp_path):
    gallery = load_catalog(catalog_dir, split="val", max_items=150)
    items = catalog_items(gallery)
    held = items["articleType"].value_counts().index[2]  # a type present in the gallery
    some = items.iloc[0]
    queries = tmp_path / "q.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"query": f"{some['articleType'].lower()} for {some['gender'].lower()}",
         "match": {"articleType": [some["articleType"]], "gender": [some["gender"]]}},
        {"query": "black shoes", "match": {"baseColour": ["Black"]}},
        {"query": "make it black", "image": str(some["id"]), "match": {"articleType": [some["articleType"]]}},
    ]) + "\n")
    out, card = tmp_path / "eval", tmp_path / "card.md"
    results = evaluate.main([
        "--all", "--model", str(tiny_model_dir), "--model", str(tiny_vae_dir), "--catalog", str(catalog_dir),
        "--split", "val", "--max-items", "150", "--queries", str(queries), "--composed-max", "12",
        "--rerank-model", str(tiny_vae_dir), "--rerank-weights", "0.3", "--ood", f"articleType={held}",
        "--output", str(out), "--model-card", str(card)])

    names = [r["model"] for r in results["rows"]]
    model, vae = tiny_model_dir.name, tiny_vae_dir.name
    assert names[:2] == [model, vae] and {"random", "colour histogram", f"colour histogram + {vae}"} <= set(names)
    assert any(n.startswith("hybrid:") for n in names)
    assert not any(n.endswith("(pretrained)") for n in names)  # offline: the Hub extractors are skipped, not faked
    assert "pretrained CNN (EfficientNet-Lite0, ImageNet)" in names  # the one pretrained network shipped on PyPI
    rows = {r["model"]: r for r in results["rows"]}

    # The image->image row equals the brute-force-tested reference on the same embeddings.
    m, _, processor = load_model(tiny_model_dir)
    embeds = encode_images(m, processor, gallery["image"])
    labels = {"articleType": items["articleType"].to_numpy(), "baseColour": items["baseColour"].to_numpy()}
    reference = image_to_image_metrics(embeds, labels, k=10)
    assert rows[model]["i2i"]["p@10"] == pytest.approx(reference["p@10"], abs=1e-6)
    assert rows[model]["i2i"]["top1"] == pytest.approx(reference["top1"], abs=1e-6)
    assert -1 <= rows[model]["i2i"]["vsc@10"] <= 1 and rows[vae]["i2i"]["vsc@10"] is not None
    assert "t2i" in rows[model] and "t2i" not in rows[vae]
    assert set(rows[model]["t2i"]["kagl"]) >= {"single_target", "any_same_title"}
    assert rows[model]["items_per_s"] > 0 and rows[model]["index_bytes"] >= 150 * 16 * 4

    report = json.loads((out / "queries.json").read_text())
    for section in ("visual", "text", "fused", "composed"):
        assert "vsc@10" in report[section]["mean"]
    assert report["composed"]["per_query"][0]["image"] == str(some["id"])
    composed = rows[model]["composed"]
    assert composed["num_triplets"] == 12 and composed["default"] in composed["variants"]
    assert "changed attribute matches text" in composed["variants"][composed["default"]]["consistency"]
    ood = json.loads((out / "ood.json").read_text())
    assert ood["value"] == held and set(ood["models"]) == {model, vae}
    assert {"held_out", "in_domain", "gap"} <= set(ood["models"][model]["titles_r@10"])
    assert results["observations"] and {"query", "cos", "vsc", "note"} <= set(results["observations"][0])

    for png in ("comparison.png", "samples.png", f"consistency_{slug(model)}.png"):
        with Image.open(out / png) as image:
            assert image.width > 100 and image.height > 100
    markdown = (out / "results.md").read_text()
    assert "| model |" in markdown and "Out-of-domain" in markdown and "Observations" in markdown
    metadata = check_model_card(card)
    values = {m["type"]: m["value"] for r in metadata["model-index"][0]["results"] for m in r["metrics"]}
    assert values["precision_at_10"] in (round(rows[model]["i2i"]["p@10"], 4),
                                         round(rows[model]["queries"]["fused"]["p@10"], 4))
    assert "evaluate.py --all" in card.read_text()


def test_model_card_usage_snippet_runs(tiny_model_dir):
    from modeling.evaluation.reports.model_card import USAGE

    namespace = {}
    exec(USAGE.replace("runs/dual-encoder", str(tiny_model_dir)), namespace)  # the card's snippet, as printed
    assert namespace["score"].shape == (1,)


@pytest.mark.hub
def test_pretrained_extractor_rows_with_the_hub(catalog_dir, tiny_vae_dir, tmp_path):
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        pytest.skip("needs the Hugging Face Hub")
    results = evaluate.main(["--model", str(tiny_vae_dir), "--catalog", str(catalog_dir), "--split", "val",
                             "--max-items", "60", "--pretrained", "dinov2,resnet,vit", "--output", str(tmp_path)])
    rows = {r["model"]: r for r in results["rows"]}
    for name in ("dinov2 (pretrained)", "resnet (pretrained)", "vit (pretrained)"):
        assert rows[name]["i2i"]["p@10"] > rows["random"]["i2i"]["p@10"]
