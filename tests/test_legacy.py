"""Compatibility: folders written by the flat `modeling/` layout (before the layered restructure) still load and give
the same numbers. tests/fixtures/legacy/ was written by that code (tests/fixtures/make_legacy.py at commit 85826d9):
a tiny dual encoder and VAE saved with `save_pretrained`, the dual encoder's pushed folder (remote code of the old
layout), and an index over 40 real catalog items with the embeddings and search results the old code produced."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def probe_images(n: int = 4, size=(80, 60)) -> list:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for _ in range(n)]


def _engine(folder: Path, index=None):
    from modeling.encoders.loading import load_model
    from modeling.retrieval.engine.search import FashionSearchEngine
    from modeling.retrieval.engine.settings import EngineSettings

    model, tokenizer, processor = load_model(folder)
    if index is None:
        from modeling.retrieval.backends.faiss.index import CatalogIndex

        index = CatalogIndex.load(LEGACY / "index")
    # The legacy answers were saved before photos were searched by their product: random test photos as they are.
    return FashionSearchEngine(model, tokenizer, processor, index, model_name=folder.name,
                               settings=EngineSettings(isolate_photos=False))


@pytest.mark.parametrize("name", ["dual-encoder", "vae"])
def test_saved_folders_load_with_the_package(name):
    engine = _engine(LEGACY / name)
    expected = EXPECTED["models"][name]
    np.testing.assert_allclose(engine.encode_images(probe_images()), expected["image"], atol=1e-5)
    if "text" in expected:
        np.testing.assert_allclose(engine.encode_texts(EXPECTED["texts"]), expected["text"], atol=1e-5)


def test_model_class_from_pretrained():
    import torch

    from modeling import DualEncoderModel

    model = DualEncoderModel.from_pretrained(LEGACY / "dual-encoder").eval()
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(LEGACY / "dual-encoder")(EXPECTED["texts"], padding=True,
                                                                    return_tensors="pt")
    with torch.no_grad():
        feats = model.get_text_features(**tokens)
    feats = torch.nn.functional.normalize(feats, dim=-1).numpy()
    np.testing.assert_allclose(feats, EXPECTED["models"]["dual-encoder"]["text"], atol=1e-5)


REMOTE = """
import json, sys
import numpy as np, torch
from transformers import AutoModel, AutoTokenizer
folder, texts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
tokens = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    feats = torch.nn.functional.normalize(model.get_text_features(**tokens), dim=-1)
print("RESULT", json.dumps({"module": type(model).__module__, "text": feats.tolist()}))
"""


def test_pushed_folder_loads_with_its_own_remote_code(tmp_path):
    """A fresh interpreter outside the repo (the package not importable) loads the old pushed folder's code."""
    env = {**os.environ, "PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    out = subprocess.run([sys.executable, "-c", REMOTE, str(LEGACY / "dual-encoder-pushed"),
                          json.dumps(EXPECTED["texts"])], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(next(line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")))
    assert not got["module"].startswith("modeling")  # the folder's own code, not this package
    np.testing.assert_allclose(got["text"], EXPECTED["models"]["dual-encoder"]["text"], atol=1e-5)


def test_pushed_folder_loads_with_the_package():
    engine = _engine(LEGACY / "dual-encoder-pushed")
    assert type(engine.model).__module__.startswith("modeling")
    np.testing.assert_allclose(engine.encode_texts(EXPECTED["texts"]), EXPECTED["models"]["dual-encoder"]["text"],
                               atol=1e-5)


def test_old_index_opens_and_searches_the_same(monkeypatch, tmp_path):
    """The old index opens with today's engine (fingerprint accepted) and every query returns the old results
    (today's ranking without the signals added since: query intents, consistency, collapsing)."""
    import shutil

    from modeling.retrieval.engine.search import FashionSearchEngine

    from .conftest import switch_off_extras

    shutil.copytree(LEGACY / "index", tmp_path / "index")  # the engine caches derived files next to an index
    engine = switch_off_extras(FashionSearchEngine.load(LEGACY / "dual-encoder", tmp_path / "index"), monkeypatch)
    reference = next(key[5:] for key in EXPECTED["search"] if key.startswith("item:"))  # the composed reference
    for key, expected in EXPECTED["search"].items():
        mode, _, query = key.partition(":")
        if mode == "text":
            got = engine.search_text(query, k=10)
        elif mode == "item":
            got = engine.search_item(query, k=10)
        else:
            got = engine.search_composed(text=query, item_id=reference, k=10)
        assert [r.id for r in got] == [e["id"] for e in expected], key
        np.testing.assert_allclose([r.score for r in got], [e["score"] for e in expected], atol=1e-5)
        np.testing.assert_allclose([r.vsc for r in got], [e["vsc"] for e in expected], atol=1e-5)

