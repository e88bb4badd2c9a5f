import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from modeling.retrieval.backends.faiss import index as index_module
from modeling.retrieval.backends.faiss.index import (
                                                     CatalogIndex,
                                                     IndexFormatError,
                                                     IndexMismatchError,
                                                     VectorIndex,
                                                     l2_normalise,
                                                     )


MODEL = {"name": "fashion-clip-a", "fingerprint": "sha256:aaaa", "embedding_dim": 16}
TEXT_ENCODER = {"name": "minilm", "fingerprint": "sha256:tttt", "embedding_dim": 8}


def brute_force(data: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
    scores = l2_normalise(queries) @ l2_normalise(data).T
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), top


def clustered(rng: np.random.Generator, centers: np.ndarray, n: int, noise: float = 1.0) -> np.ndarray:
    labels = rng.integers(0, len(centers), n)
    return (centers[labels] + noise * rng.standard_normal((n, centers.shape[1]))).astype(np.float32)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(f) & set(e) - {-1}) / k for f, e in zip(found, exact)]))


def make_items(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    colours = ["Red", "Blue", "Black", "navy Blue"]
    types = ["Tshirts", "Shirts", "Jeans"]
    return [
        {
            "id": f"item-{seed}-{i}",
            "title": f"Item {i}",
            "image_path": f"images/{i}.jpg",
            "baseColour": colours[rng.integers(len(colours))],
            "articleType": types[rng.integers(len(types))],
            "gender": None if i % 7 == 0 else ("Men" if i % 2 else "Women"),
        }
        for i in range(n)
    ]


def make_catalog(n: int = 200, seed: int = 0, model: dict = MODEL) -> CatalogIndex:
    rng = np.random.default_rng(seed)
    return CatalogIndex.build(
        rng.standard_normal((n, model["embedding_dim"])).astype(np.float32),
        make_items(n, seed),
        model_info=model,
        text_embeddings=rng.standard_normal((n, 8)).astype(np.float32),
        text_encoder_info=TEXT_ENCODER,
    )


def test_l2_normalise_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalise(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert not np.isnan(out).any()


def test_flat_search_matches_brute_force():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2000, 32)) * 3
    queries = rng.standard_normal((50, 32))
    index = VectorIndex.build(data)
    assert index.kind == "flat" and index.ntotal == 2000 and index.dim == 32

    scores, ids = index.search(queries, 10)
    expected_scores, expected_ids = brute_force(data, queries, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (50, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)

    single_scores, single_ids = index.search(queries[3], 10)
    assert single_ids.shape == (1, 10)
    np.testing.assert_array_equal(single_ids[0], expected_ids[3])


def test_reconstruct_returns_normalised_vectors():
    data = np.random.default_rng(4).standard_normal((30, 8)) * 5
    index = VectorIndex.build(data)
    np.testing.assert_allclose(index.reconstruct(3), l2_normalise(data[3]), atol=1e-6)
    np.testing.assert_allclose(index.reconstruct_batch([5, 0]), l2_normalise(data[[5, 0]]), atol=1e-6)
    assert index.reconstruct_batch([]).shape == (0, 8)
    with pytest.raises(ValueError):
        index.reconstruct(30)


def test_flat_k_larger_than_index_is_padded():
    data = np.random.default_rng(1).standard_normal((5, 8))
    scores, ids = VectorIndex.build(data).search(data[:2], 8)
    assert (ids[:, :5] >= 0).all() and (ids[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all() and np.isfinite(scores[:, :5]).all()


def test_filtered_flat_search():
    rng = np.random.default_rng(2)
    data = rng.standard_normal((3000, 16))
    queries = rng.standard_normal((40, 16))
    index = VectorIndex.build(data)
    allowed = rng.random(3000) < 0.1

    scores, ids = index.search(queries, 10, allowed=allowed)
    expected_scores, expected_ids = brute_force(data, queries, 10, allowed)
    assert allowed[ids].all()
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)

    # Positions instead of a mask give the same result.
    _, ids_from_positions = index.search(queries, 10, allowed=np.flatnonzero(allowed))
    np.testing.assert_array_equal(ids_from_positions, ids)

    few = np.flatnonzero(allowed)[:3]
    scores, ids = index.search(queries, 10, allowed=few)
    assert set(ids[0, :3]) == set(few) and (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()

    scores, ids = index.search(queries, 5, allowed=np.zeros(3000, dtype=bool))
    assert (ids == -1).all()

    with pytest.raises(ValueError):
        index.search(queries, 5, allowed=np.ones(10, dtype=bool))
    with pytest.raises(ValueError):
        index.search(queries, 5, allowed=np.array([3000]))
    with pytest.raises(ValueError):
        index.search(queries[:, :8], 5)


@pytest.fixture(scope="module")
def hnsw_setup():
    rng = np.random.default_rng(42)
    centers = rng.standard_normal((200, 64)).astype(np.float32)
    data = clustered(rng, centers, 20_000)
    queries = clustered(rng, centers, 500)
    start = time.perf_counter()
    index = VectorIndex.build(data, exact_threshold=10_000)
    build_seconds = time.perf_counter() - start
    return data, queries, index, build_seconds


def test_hnsw_recall(hnsw_setup):
    data, queries, index, build_seconds = hnsw_setup
    assert index.kind == "hnsw" and index.ntotal == 20_000
    start = time.perf_counter()
    scores, ids = index.search(queries, 10)
    search_seconds = time.perf_counter() - start
    _, exact_ids = brute_force(data, queries, 10)
    hnsw_recall = recall(ids, exact_ids)
    print(f"hnsw build {build_seconds:.2f}s, 500 queries {search_seconds * 1000:.1f}ms, recall@10 {hnsw_recall:.4f}")
    assert hnsw_recall >= 0.95
    assert (ids >= 0).all() and np.all(np.diff(scores, axis=1) <= 1e-6)


def test_hnsw_filtered_search(hnsw_setup, monkeypatch):
    data, queries, index, _ = hnsw_setup
    rng = np.random.default_rng(7)
    allowed = rng.random(len(data)) < 0.3

    # 30% of the items: must go through the filtered graph search, not the exact fallback.
    def no_fallback(*args, **kwargs):
        raise AssertionError("exact fallback used for a 30% filter")

    with monkeypatch.context() as patch:
        patch.setattr(VectorIndex, "_search_exact_subset", no_fallback)
        _, ids = index.search(queries, 10, allowed=allowed)
    _, exact_ids = brute_force(data, queries, 10, allowed)
    filtered_recall = recall(ids, exact_ids)
    print(f"filtered (30%) hnsw recall@10 {filtered_recall:.4f}")
    assert (ids >= 0).all() and allowed[ids].all()
    assert filtered_recall >= 0.95

    # A tiny filter falls back to exact search over the allowed vectors.
    tiny = np.zeros(len(data), dtype=bool)
    tiny[rng.choice(len(data), 25, replace=False)] = True
    calls = []
    original = VectorIndex._search_exact_subset

    def spy(self, *args):
        calls.append(len(args[-1]))
        return original(self, *args)

    monkeypatch.setattr(VectorIndex, "_search_exact_subset", spy)
    scores, ids = index.search(queries, 30, allowed=tiny)
    expected_scores, expected_ids = brute_force(data, queries, 25, tiny)
    assert calls == [25]
    np.testing.assert_array_equal(ids[:, :25], expected_ids)
    np.testing.assert_allclose(scores[:, :25], expected_scores, atol=1e-5)
    assert (ids[:, 25:] == -1).all() and np.isneginf(scores[:, 25:]).all()


def test_hnsw_write_read_round_trip(hnsw_setup, tmp_path):
    _, queries, index, _ = hnsw_setup
    index.write(tmp_path / "v.faiss")
    restored = VectorIndex.read(tmp_path / "v.faiss")
    assert restored.kind == "hnsw" and restored.ef_search == 128 and restored.hnsw_m == 32
    for original, reread in zip(index.search(queries[:20], 10), restored.search(queries[:20], 10)):
        np.testing.assert_array_equal(original, reread)


def test_default_threshold_is_exact():
    assert index_module.EXACT_THRESHOLD == 50_000
    assert VectorIndex.build(np.eye(4, dtype=np.float32)).kind == "flat"


def test_catalog_round_trip(tmp_path):
    catalog = make_catalog()
    assert catalog.manifest["index"]["kind"] == "flat" and catalog.manifest["num_items"] == 200
    path = catalog.save(tmp_path / "catalog")
    assert sorted(os.listdir(tmp_path)) == ["catalog"]
    assert sorted(os.listdir(path)) == ["index.faiss", "items.parquet", "manifest.json", "text_embeddings.npy"]

    loaded = CatalogIndex.load(path, expected_model=MODEL)
    assert len(loaded) == 200
    pd.testing.assert_frame_equal(loaded.items, catalog.items)
    np.testing.assert_array_equal(loaded.text_embeddings, catalog.text_embeddings)
    assert loaded.text_embeddings.dtype == np.float32
    assert loaded.manifest == catalog.manifest == CatalogIndex.read_manifest(path)
    assert loaded.manifest["text_encoder"] == TEXT_ENCODER and loaded.manifest["format_version"] == 1

    queries = np.random.default_rng(3).standard_normal((5, 16))
    allowed = loaded.mask({"articleType": "jeans"})
    for a, b in zip(catalog.search(queries, 7, allowed), loaded.search(queries, 7, allowed)):
        np.testing.assert_array_equal(a, b)


def test_catalog_without_text_embeddings(tmp_path):
    catalog = CatalogIndex.build(np.eye(16, dtype=np.float32), make_items(16), model_info=MODEL)
    loaded = CatalogIndex.load(catalog.save(tmp_path / "c"))
    assert loaded.text_embeddings is None and not (tmp_path / "c" / "text_embeddings.npy").exists()


def test_load_with_other_model_fails(tmp_path):
    path = make_catalog().save(tmp_path / "catalog")
    other = {"name": "fashion-clip-b", "fingerprint": "sha256:bbbb", "embedding_dim": 16}
    with pytest.raises(IndexMismatchError) as error:
        CatalogIndex.load(path, expected_model=other)
    message = str(error.value)
    assert "fashion-clip-a" in message and "fashion-clip-b" in message and "sha256:aaaa" in message
    assert "rebuild" in message.lower()

    with pytest.raises(IndexMismatchError):
        CatalogIndex.load(path, expected_model={**MODEL, "embedding_dim": 32})
    with pytest.raises(IndexMismatchError):
        CatalogIndex.load(path, expected_model={"name": "fashion-clip-b"})
    # Same weights under another name still match.
    CatalogIndex.load(path, expected_model={**MODEL, "name": "/models/copy-of-a"})


def test_load_missing_or_broken(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        CatalogIndex.load(tmp_path / "nowhere")

    path = make_catalog().save(tmp_path / "catalog")
    (path / "items.parquet").unlink()
    with pytest.raises(IndexFormatError, match="items.parquet"):
        CatalogIndex.load(path)

    path = make_catalog().save(tmp_path / "catalog")
    (path / "text_embeddings.npy").unlink()
    with pytest.raises(IndexFormatError, match="text_embeddings.npy"):
        CatalogIndex.load(path)

    path = make_catalog().save(tmp_path / "catalog")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="JSON"):
        CatalogIndex.load(path)

    path = make_catalog().save(tmp_path / "catalog")
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "num_items": 3}))
    with pytest.raises(IndexFormatError, match="200 vectors"):
        CatalogIndex.load(path)

    path = make_catalog().save(tmp_path / "catalog")
    (path / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexFormatError):
        CatalogIndex.load(path)


@pytest.mark.parametrize("failure", ["to_parquet", "write_index", "final_rename"])
def test_failed_save_keeps_previous_index(tmp_path, monkeypatch, failure):
    path = make_catalog(seed=0).save(tmp_path / "catalog")
    replacement = make_catalog(n=50, seed=1)

    if failure == "to_parquet":
        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    elif failure == "write_index":
        def broken(*args, **kwargs):
            raise RuntimeError("disk full")

        monkeypatch.setattr(index_module.faiss, "write_index", broken)
    else:
        # The temporary directory is complete; moving it into place fails after the old index moved aside.
        real_rename = os.rename

        def broken(src, dst):
            if ".tmp-" in os.fspath(src):
                raise OSError("rename failed")
            return real_rename(src, dst)

        monkeypatch.setattr(index_module.os, "rename", broken)

    with pytest.raises((OSError, RuntimeError)):
        replacement.save(path)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["catalog"]
    loaded = CatalogIndex.load(path, expected_model=MODEL)
    assert len(loaded) == 200 and loaded.items["id"].iloc[0] == "item-0-0"


def test_save_replaces_previous_index(tmp_path):
    path = make_catalog(seed=0).save(tmp_path / "catalog")
    make_catalog(n=50, seed=1).save(path)
    assert sorted(os.listdir(tmp_path)) == ["catalog"]
    loaded = CatalogIndex.load(path)
    assert len(loaded) == 50 and loaded.items["id"].iloc[0] == "item-1-0"


def test_save_refuses_to_replace_other_directories(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_catalog().save(tmp_path / "photos")
    assert os.listdir(tmp_path / "photos") == ["cat.jpg"]


def test_build_validation():
    embeddings = np.zeros((3, 16), dtype=np.float32)
    items = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    with pytest.raises(ValueError, match="strings"):
        CatalogIndex.build(embeddings, [{"id": 1}, {"id": 2}, {"id": 3}], model_info=MODEL)
    with pytest.raises(ValueError, match="unique"):
        CatalogIndex.build(embeddings, [{"id": "a"}, {"id": "a"}, {"id": "c"}], model_info=MODEL)
    with pytest.raises(ValueError, match="3 items but 2"):
        CatalogIndex.build(embeddings[:2], items, model_info=MODEL)
    with pytest.raises(ValueError, match="dimension"):
        CatalogIndex.build(np.zeros((3, 8)), items, model_info=MODEL)
    with pytest.raises(ValueError, match="text embeddings"):
        CatalogIndex.build(embeddings, items, model_info=MODEL, text_embeddings=np.zeros((2, 8)))
    with pytest.raises(ValueError, match="fingerprint"):
        CatalogIndex.build(embeddings, items, model_info={"name": "m", "embedding_dim": 16})


def test_mask():
    catalog = make_catalog()
    items = catalog.items
    assert catalog.mask(None) is None
    assert catalog.mask({}) is None
    assert catalog.mask({"baseColour": "", "gender": None, "articleType": []}) is None

    red = catalog.mask({"baseColour": "rED"})
    np.testing.assert_array_equal(red, (items["baseColour"] == "Red").to_numpy())

    either = catalog.mask({"baseColour": ["red", " NAVY blue "]})
    np.testing.assert_array_equal(either, items["baseColour"].isin(["Red", "navy Blue"]).to_numpy())

    combined = catalog.mask({"baseColour": ["red", "black"], "gender": "men"})
    expected = items["baseColour"].isin(["Red", "Black"]) & (items["gender"] == "Men")
    np.testing.assert_array_equal(combined, expected.to_numpy())
    assert combined.dtype == bool and combined.shape == (len(catalog),)

    with pytest.raises(ValueError, match="allowed keys") as error:
        catalog.mask({"colour": "red"})
    assert "baseColour" in str(error.value)
    # An unknown key without a value filters nothing, like any empty filter.
    assert catalog.mask({"colour": None, "season": []}) is None
