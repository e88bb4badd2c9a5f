"""Shared fixtures: offline environment, tiny random text tower (the transformers ModelTester way), catalog path."""

import os

for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                     "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}.items():
    os.environ.setdefault(_key, _value)
# Example results cached by test apps stay out of the repo's .gradio/ folder.
os.environ.setdefault("GRADIO_EXAMPLES_CACHE", __import__("tempfile").mkdtemp(prefix="gradio-examples-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CATALOG = Path(os.environ.get("FASHION_CATALOG", REPO.parent / "shared" / "data"))

# Words of the shared catalog's titles/captions, enough for a tiny word-level vocabulary.
_WORDS = ("men women boys girls unisex black white blue navy red green pink grey brown yellow purple "
          "shirt shirts tshirts t-shirt dress dresses shoes casual formal sports watch watches kurta kurtas jeans "
          "for summer winter the a and , . - ' s").split()


def tiny_bert_config_dict(vocab_size: int = 99) -> dict:
    return {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 37, "vocab_size": vocab_size, "max_position_embeddings": 64}


@pytest.fixture(scope="session")
def catalog_dir() -> Path:
    if not (CATALOG / "metadata.csv").exists():
        pytest.skip(f"shared catalog not found at {CATALOG} (set FASHION_CATALOG)")
    return CATALOG


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 32) with a word-level tokenizer, saved like a Hub checkpoint."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(_WORDS))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    BertModel(BertConfig(**tiny_bert_config_dict(len(vocab)))).save_pretrained(folder)
    return folder


def tiny_model_kwargs() -> dict:
    """Config kwargs of a tiny dual encoder (fast CNN at 20x16)."""
    return {"projection_dim": 16, "text_projection_hidden_size": 24, "image_size": [20, 16],
            "cnn_stem_channels": 8, "cnn_channels": [8, 16], "cnn_blocks_per_stage": [1, 1]}


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_text_model, tmp_path_factory) -> Path:
    """A saved, untrained tiny dual encoder folder (model, tokenizer, image processor)."""
    from transformers import AutoTokenizer

    from modeling import DualEncoderImageProcessor, DualEncoderModel

    folder = tmp_path_factory.mktemp("model")
    model = DualEncoderModel.from_text_pretrained(str(tiny_text_model), **tiny_model_kwargs())
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_text_model).save_pretrained(folder)
    DualEncoderImageProcessor(image_size=model.config.image_size).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory) -> Path:
    """A saved, untrained tiny VAE folder (image-only model)."""
    import torch

    from modeling import DualEncoderImageProcessor, FashionVaeConfig, FashionVaeModel

    torch.manual_seed(0)
    vae_dir = tmp_path_factory.mktemp("vae")
    FashionVaeModel(FashionVaeConfig(image_size=[20, 16], hidden_channels=[8, 16], latent_size=8)).save_pretrained(
        vae_dir)
    DualEncoderImageProcessor(image_size=[20, 16]).save_pretrained(vae_dir)
    return vae_dir


@pytest.fixture(scope="session")
def small_gallery(catalog_dir):
    from modeling.data.catalog import load_catalog

    return load_catalog(catalog_dir, split="val", max_items=300)


@pytest.fixture(scope="session")
def small_engine(tiny_model_dir, small_gallery, tmp_path_factory):
    """The search engine over 300 real val items with the tiny model and the real MiniLM text matcher."""
    from modeling.retrieval.engine.search import FashionSearchEngine

    return FashionSearchEngine.load(tiny_model_dir, tmp_path_factory.mktemp("idx") / "index", catalog=small_gallery)


@pytest.fixture(scope="session")
def small_vae_engine(tiny_vae_dir, small_gallery, small_engine, tmp_path_factory):
    """An image-only engine (the tiny VAE) over the same 300 items, sharing the text matcher for VSC."""
    from modeling.retrieval.engine.search import FashionSearchEngine

    return FashionSearchEngine.load(tiny_vae_dir, tmp_path_factory.mktemp("vae-idx") / "index", catalog=small_gallery,
                                    sentence_encoder=small_engine.sentence_encoder)


def switch_off_extras(engine, monkeypatch):
    """The engine's plain ranking, what the brute-force references of the fusion tests describe: no query
    understanding, no "more like this" consistency term, no near-duplicate collapsing (restored after the test)."""
    from dataclasses import replace

    monkeypatch.setattr(engine, "settings", replace(engine.settings, use_intents=False, collapse_duplicates=False,
                                                    item_consistency={}, image_consistency={}))
    return engine


@pytest.fixture
def plain_engine(small_engine, monkeypatch):
    """`small_engine` ranking by its plain signals (see `switch_off_extras`)."""
    return switch_off_extras(small_engine, monkeypatch)
