"""The compressed index (`modeling.retrieval.backends.faiss.compressed`): recall against exact search at scale,
filtered and not, and its place in `VectorIndex` / `CatalogIndex` (kind selection, files, exact reconstruction,
narrow filters)."""

import json

import faiss
import numpy as np
import pytest

from benchmarks.scale import clustered_vectors, exact_top_k, recall_at_k
from modeling.retrieval.backends.faiss import compressed
from modeling.retrieval.backends.faiss.compressed import CompressedIndex
from modeling.retrieval.backends.faiss.index import CatalogIndex, IndexFormatError, VectorIndex


MODEL = {"name": "fashion-clip-a", "fingerprint": "sha256:aaaa", "embedding_dim": 16}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """faiss on one OpenMP thread for these tests: results do not depend on it, and on a busy 2-core runner the
    barriers of two threads made the builds 3-6x slower (the 200k test: 101 s against 28 s)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.slow
def test_recall_at_10_on_200k_clustered_vectors_filtered_and_not():
    # The benchmark's generator at the model's dimension, scaled down from 1M; queries are held out.
    n, num_queries, k = 200_000, 300, 10
    vectors = clustered_vectors(n + num_queries, 256, seed=3)
    data, queries = vectors[:n], vectors[n:]
    index = VectorIndex.build(data, compressed_threshold=n)
    assert index.kind == "ivfpq"

    _, found = index.search(queries, k)
    assert recall_at_k(found, exact_top_k(data, queries, k)) >= 0.95

    allowed = np.random.default_rng(4).random(n) < 0.05
    _, found = index.search(queries, k, allowed=allowed)
    assert (found >= 0).all() and allowed[found].all()
    assert recall_at_k(found, exact_top_k(data, queries, k, allowed)) >= 0.95


@pytest.fixture(scope="module")
def small():
    """12,000 clustered vectors at d=16 in a compressed index (threshold lowered), and 50 held-out queries."""
    vectors = clustered_vectors(12_050, 16, clusters=50, seed=5)
    data, queries = vectors[:12_000], vectors[12_000:]
    return data, queries, VectorIndex.build(data, compressed_threshold=10_000)


def test_kind_follows_the_thresholds(small):
    data, _, index = small
    assert index.kind == "ivfpq" and index.ntotal == len(data)
    assert VectorIndex.build(data, exact_threshold=10_000, compressed_threshold=20_000).kind == "hnsw"
    assert VectorIndex.build(data[:500], compressed_threshold=10_000).kind == "flat"
    assert compressed.COMPRESSED_THRESHOLD == 1_000_000


def test_reconstruct_is_exact_not_decoded(small):
    data, _, index = small
    # PQ codes would be off by ~1e-2; the float32 file gives back the vectors `build` normalised.
    np.testing.assert_allclose(index.reconstruct_batch([7, 0, 11_999]), data[[7, 0, 11_999]], atol=1e-6)
    np.testing.assert_allclose(index.reconstruct(42), data[42], atol=1e-6)
    with pytest.raises(ValueError, match="positions must lie"):
        index.reconstruct(12_000)


def test_scores_are_exact_inner_products(small):
    data, queries, index = small
    scores, found = index.search(queries, 10)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", data[found], queries), rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_narrow_filter_is_searched_exactly(small):
    data, queries, index = small
    allowed = np.zeros(len(data), dtype=bool)
    allowed[np.random.default_rng(6).choice(len(data), 300, replace=False)] = True
    _, found = index.search(queries, 10, allowed=allowed)
    np.testing.assert_array_equal(found, exact_top_k(data, queries, 10, allowed))

    # Fewer allowed items than k: the rest of the slots are empty.
    scores, found = index.search(queries[:2], 10, allowed=np.array([3, 9_000]))
    assert set(found[0, :2]) == {3, 9_000} and (found[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()


def test_catalog_round_trip_maps_the_vectors_and_records_the_parameters(small, tmp_path):
    data, queries, index = small
    items = [{"id": f"item-{i}", "colour": "red" if i % 10 else "blue"} for i in range(len(data))]
    catalog = CatalogIndex.build(data, items, model_info=MODEL, compressed_threshold=10_000)
    catalog.save(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [
        "index.faiss", "index.vectors.npy", "items.parquet", "manifest.json"]
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["index"]["kind"] == "ivfpq" and manifest["index"]["pq_bytes"] == 16

    loaded = CatalogIndex.load(tmp_path / "index", expected_model=MODEL)
    assert isinstance(loaded.vectors._index.vectors, np.memmap)
    assert loaded.vectors.nbytes == catalog.vectors.nbytes > data.nbytes
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], catalog.search(queries, 10)[1])
    blue = loaded.mask({"colour": "blue"})
    _, found = loaded.search(queries, 10, allowed=blue)
    assert (loaded.items["colour"].to_numpy()[found] == "blue").all()

    (tmp_path / "index" / "index.vectors.npy").unlink()
    with pytest.raises(IndexFormatError, match="index.vectors.npy is missing"):
        CatalogIndex.load(tmp_path / "index")


def test_too_few_vectors_for_the_codebooks():
    with pytest.raises(ValueError, match="at least 10,000 vectors"):
        CompressedIndex.build(clustered_vectors(5_000, 16))


def test_a_single_query_runs_on_one_thread_and_restores_the_setting(small, monkeypatch):
    data, queries, index = small
    seen = []
    search = index._index.codes.search
    monkeypatch.setattr(index._index.codes, "search",
                        lambda *args, **kwargs: seen.append(faiss.omp_get_max_threads()) or search(*args, **kwargs))
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        _, one = index.search(queries[3], 10)
        _, batch = index.search(queries, 10)
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)
    assert seen == [1, 2]
    np.testing.assert_array_equal(one[0], batch[3])
