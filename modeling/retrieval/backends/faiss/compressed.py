# coding=utf-8
"""Compressed vector index for catalogues of a million items and more: OPQ + IVF-PQ codes in memory, exact
re-ranking of a shortlist from the full float32 vectors, memory-mapped from disk.

Why this design
---------------
`IndexHNSWFlat` (the index below `COMPRESSED_THRESHOLD`) keeps every float32 vector and its graph in RAM: about
1,300 bytes per item at dimension 256, 1.3 GB per million items. Here only a 32-byte product-quantisation code and
its 8-byte id stay in RAM per item (45 bytes at 1M items with the coarse centroids and the OPQ rotation); the search
scans the codes of the `nprobe` nearest IVF lists, keeps a shortlist (`max(SHORTLIST_MIN, SHORTLIST_PER_RESULT * k)`
candidates) and re-ranks it with exact inner products read from `<index file stem>.vectors.npy`, an `np.memmap`.
Only the shortlisted rows are paged in (100 rows of 1 KB for k=10), so the page cache keeps the hot part of the
catalogue and the kernel may evict the rest; the file also makes [`~CompressedIndex.reconstruct_batch`] exact, which
the search engine relies on for displayed cosines, "more like this" and the Hub export.

Candidates measured on 200,000 clustered synthetic vectors at d=256 (`benchmarks/scale.py`'s generator; shared
2-core CPU, single queries, k=10, nprobe=16, 5% random filter in brackets), bytes per item of RAM:

* OPQ32 + IVF1024-PQ32, exact re-rank of 100: 48 B, recall@10 0.998 (0.999); without OPQ 0.995 (0.999) at 1,024
  lists but 0.958-0.981 at 512 and 2,048 lists (the shortlist, not nprobe, limits it), against 0.990-0.999 with OPQ;
* IVF-PQ64x4 fast-scan (32 B codes), re-rank of 100: 48 B, 0.959 (0.973): 4-bit codes rank the shortlist worse;
* IVF-RaBitQ 4-bit, no re-rank: 161 B, 0.965 (0.984); IVF-SQ4, no re-rank: 141 B, 0.780 (0.940): near the 150 B
  budget only without a re-rank, and then not exact enough (nor can they give back the exact vectors);
* HNSW32 over SQ8 would hold 256 B of codes plus ~260 B of graph links per item (computed, not measured): over
  the budget before any recall.

So OPQ stays, trained on `OPQ_TRAIN_POINTS` vectors in `OPQ_ITERATIONS` rounds (same recall as faiss's heavier
defaults), and the PQ is built without polysemous training (`PQ32np`): faiss enables it by default for IVF-PQ, it
only serves Hamming-distance filtering, which this index does not use, and it made training 80x slower (12,000
vectors: 82 s against 1 s).
At 1M items (4,096 lists, nprobe 64) the measured figures are in docs/scale.md.

Filters are applied inside the IVF scan (an `IDSelectorBitmap` in `SearchParametersIVF`), so `k` results come back
whenever `k` items are allowed near the query: `nprobe` is scaled by `1 / allowed_fraction`, at most
`FILTERED_NPROBE_MAX_SCALE` (8) times, and each visited code costs one bitmap test. Measured at 1M items (one thread,
load ~5): a 5% random filter gives recall@10 1.000 at scale 4, 8 or 20 (p50 1.3, 1.7, 3.1 ms of IVF search), a 1%
filter 0.9993 at scale 4 and 1.000 at 8. Sets of at most `FILTERED_EXACT_MAX` allowed items are searched exactly
instead: fewer rows to read than the IVF scan would visit.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from modeling.utils.topk import topk_indices

COMPRESSED_THRESHOLD = 1_000_000
COMPRESSED_KIND = "ivfpq"
MIN_ITEMS = 10_000
SHORTLIST_MIN = 100
SHORTLIST_PER_RESULT = 4
FILTERED_EXACT_MAX = 2_048
FILTERED_NPROBE_MAX_SCALE = 8
RERANK_CHUNK_ROWS = 16_384
VECTORS_SUFFIX = ".vectors.npy"
# faiss asks for at least 39 training vectors per centroid; 40 keeps k-means clear of its warning.
TRAIN_PER_LIST = 40
# The OPQ rotation is learnt on a sample this large, in this many alternations; faiss's defaults are 65,536 and 50,
# and 65,536 with 20 measured the same recall@10 at 200k items (0.990 against 0.989) for a longer training.
OPQ_TRAIN_POINTS = 32_768
OPQ_ITERATIONS = 10


def default_nlist(num_items: int) -> int:
    """Number of IVF lists: the power of two nearest `4 * sqrt(num_items)` (4,096 at 1M items), at most
    `num_items / TRAIN_PER_LIST` so k-means has enough points per centroid."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(num_items, 1))))
    while nlist > 1 and nlist * TRAIN_PER_LIST > num_items:
        nlist //= 2
    return nlist


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 64 at 4,096 lists (about 16,000 codes scanned at 1M items), never fewer than 16."""
    return max(16, nlist // 64)


def vectors_path(index_path: str | os.PathLike) -> Path:
    """Where the float32 vectors of the compressed index written to `index_path` live: `index.faiss` ->
    `index.vectors.npy`."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.stem + VECTORS_SUFFIX)


class CompressedIndex:
    """
    OPQ + IVF-PQ inner-product index with exact re-ranking from (memory-mapped) float32 vectors; see the module
    docstring. Built by [`~CompressedIndex.build`], or by `VectorIndex.build` at `COMPRESSED_THRESHOLD` items.

    Args:
        codes (`faiss.Index`):
            A trained and filled inner-product IVF index (optionally behind an `IndexPreTransform`, e.g. OPQ).
        vectors (`np.ndarray` of shape `(codes.ntotal, codes.d)`):
            The L2-normalised float32 vectors, in index order; an `np.memmap` after [`~CompressedIndex.read`].
    """

    kind = COMPRESSED_KIND

    def __init__(self, codes: faiss.Index, vectors: np.ndarray):
        if not self.wraps(codes) or codes.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"codes must be an inner-product IVF index, got {type(codes).__name__}")
        if vectors.dtype != np.float32 or vectors.shape != (codes.ntotal, codes.d):
            raise ValueError(
                f"vectors must be float32 of shape ({codes.ntotal}, {codes.d}), got {vectors.dtype} {vectors.shape}"
            )
        self.codes = codes
        self.vectors = vectors
        self._ivf = faiss.extract_index_ivf(codes)

    @staticmethod
    def wraps(index: faiss.Index) -> bool:
        """Whether `index` is an IVF index (possibly behind a pre-transform): what this class stores its codes in."""
        try:
            faiss.extract_index_ivf(index)
        except RuntimeError:
            return False
        return True

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        *,
        pq_bytes: int = 32,
        opq: bool = True,
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> "CompressedIndex":
        """
        Trains the codes on a sample of `vectors` and encodes all of them.

        Args:
            vectors (`np.ndarray` of shape `(num_items, dim)`):
                L2-normalised float32 vectors (`VectorIndex.build` normalises them); at least `MIN_ITEMS` rows,
                because 256-centroid PQ codebooks and the IVF lists need that many training points.
            pq_bytes (`int`, *optional*, defaults to 32):
                Bytes of PQ code per item; lowered to the largest divisor of `dim` that is not larger.
            opq (`bool`, *optional*, defaults to `True`):
                Learn an OPQ rotation first (slower to train, better shortlists).
            nlist (`int`, *optional*):
                Number of IVF lists; [`default_nlist`] when not given.
            nprobe (`int`, *optional*):
                Lists visited per unfiltered query (stored in the index file); [`default_nprobe`] when not given.
            seed (`int`, *optional*, defaults to 0):
                Seed of the training sample and of k-means, so a rebuild gives the same index.
            progress (`Callable[[str], None]`, *optional*):
                Called with a line of text at each stage, for long builds.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        num_items, dim = vectors.shape
        if num_items < MIN_ITEMS:
            raise ValueError(f"a compressed index needs at least {MIN_ITEMS:,} vectors, got {num_items:,}")
        m = max(b for b in range(1, min(pq_bytes, dim) + 1) if dim % b == 0)
        nlist = nlist or default_nlist(num_items)
        say = progress or (lambda message: None)
        codes = faiss.index_factory(dim, f"{f'OPQ{m},' if opq else ''}IVF{nlist},PQ{m}np", faiss.METRIC_INNER_PRODUCT)
        if opq:
            rotation = faiss.downcast_VectorTransform(codes.chain.at(0))
            rotation.niter, rotation.max_train_points = OPQ_ITERATIONS, OPQ_TRAIN_POINTS
        ivf = faiss.extract_index_ivf(codes)
        ivf.cp.seed = seed
        ivf.nprobe = nprobe or default_nprobe(nlist)

        rng = np.random.default_rng(seed)
        # 65,536 = 256 points for each of the 256 centroids of a PQ codebook, faiss's own cap for PQ training.
        sample_size = min(num_items, max(TRAIN_PER_LIST * nlist, 65_536))
        sample = vectors[np.sort(rng.choice(num_items, sample_size, replace=False))]
        start = time.perf_counter()
        say(f"training {'OPQ + ' if opq else ''}IVF{nlist} + PQ{m} on {sample_size:,} vectors")
        codes.train(sample)
        say(f"trained in {time.perf_counter() - start:.0f} s; encoding {num_items:,} vectors")
        step = 100_000
        for begin in range(0, num_items, step):
            codes.add(vectors[begin:begin + step])
            say(f"encoded {min(begin + step, num_items):,} / {num_items:,} ({time.perf_counter() - start:.0f} s)")
        return cls(codes, vectors)

    @property
    def ntotal(self) -> int:
        return int(self.codes.ntotal)

    @property
    def d(self) -> int:
        return int(self.codes.d)

    @property
    def metric_type(self) -> int:
        return int(self.codes.metric_type)

    @property
    def nlist(self) -> int:
        return int(self._ivf.nlist)

    @property
    def nprobe(self) -> int:
        return int(self._ivf.nprobe)

    @property
    def params(self) -> dict:
        """What the manifest records about the index."""
        pq = faiss.downcast_index(self._ivf).pq
        return {"nlist": self.nlist, "nprobe": self.nprobe, "pq_bytes": int(pq.code_size),
                "opq": isinstance(self.codes, faiss.IndexPreTransform), "rerank": "exact float32 (memory-mapped)"}

    @property
    def memory_bytes(self) -> int:
        """Bytes that stay in RAM: the serialised codes, ids, centroids and rotation (not the mapped vectors)."""
        return int(faiss.serialize_index(self.codes).size)

    @property
    def nbytes(self) -> int:
        """Bytes on disk: the codes plus the float32 vectors."""
        return self.memory_bytes + int(self.vectors.nbytes)

    def search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        The `k` best items per L2-normalised query (`(num_queries, d)` float32), restricted to `mask` (a boolean
        array of shape `(ntotal,)`) when given. Returns scores (float32, descending; `-inf` in empty slots) and
        positions (int64; `-1` in empty slots), both `(num_queries, k)`.
        """
        num_allowed = self.ntotal if mask is None else int(mask.sum())
        if mask is not None and num_allowed <= FILTERED_EXACT_MAX:
            positions = np.flatnonzero(mask)
            candidates = np.broadcast_to(positions, (len(queries), num_allowed))
            return _top_k(queries @ self.vectors[positions].T, candidates, k)
        scale = min(self.ntotal / num_allowed, FILTERED_NPROBE_MAX_SCALE)
        params = faiss.SearchParametersIVF(nprobe=min(self.nlist, math.ceil(self.nprobe * scale)))
        if num_allowed < self.ntotal:
            # Kept alive by this frame while faiss reads it.
            bitmap = np.packbits(mask, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(bitmap)
        shortlist = max(SHORTLIST_MIN, SHORTLIST_PER_RESULT * k)
        with _one_thread_if(len(queries) == 1):
            _, candidates = self.codes.search(queries, shortlist, params=params)
        scores = np.empty(candidates.shape, dtype=np.float32)
        # Chunks bound the gathered rows (RERANK_CHUNK_ROWS * d floats) when many queries come at once.
        step = max(1, RERANK_CHUNK_ROWS // shortlist)
        for begin in range(0, len(queries), step):
            found = candidates[begin:begin + step]
            rows = self.vectors[np.maximum(found, 0).ravel()].reshape(*found.shape, self.d)
            scores[begin:begin + step] = np.matmul(rows, queries[begin:begin + step, :, None])[..., 0]
        return _top_k(scores, candidates, k)

    def reconstruct_batch(self, positions: np.ndarray) -> np.ndarray:
        """The exact stored vectors at `positions` (read from the float32 file, not decoded from the codes)."""
        return np.array(self.vectors[np.asarray(positions, dtype=np.int64)], dtype=np.float32)

    def write(self, path: str | os.PathLike) -> None:
        """Writes the codes to `path` and the float32 vectors beside it ([`vectors_path`])."""
        faiss.write_index(self.codes, str(path))
        np.save(vectors_path(path), np.ascontiguousarray(self.vectors), allow_pickle=False)

    @classmethod
    def read(cls, codes: faiss.Index, path: str | os.PathLike) -> "CompressedIndex":
        """Opens the vectors beside `path` (memory-mapped) for `codes`, the index read from `path`."""
        path = vectors_path(path)
        if not path.is_file():
            raise ValueError(f"{path.name} is missing: the compressed index re-ranks with the vectors stored there")
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        return cls(codes, vectors)


@contextlib.contextmanager
def _one_thread_if(condition: bool):
    """Runs the block on one OpenMP thread when `condition` holds. One query gains nothing from a second thread
    (faiss parallelises over queries), but the OPQ product and the IVF scan still open parallel regions, whose
    barriers wait for a descheduled thread on a busy machine: measured at 1M items with the load at 5 on 2 cores,
    p50 7.3 ms and p95 44.5 ms with 2 threads against 1.1 ms and 5.2 ms with one. `omp_set_num_threads` changes the
    calling thread's setting only, so concurrent searches on other threads are unaffected."""
    if not condition:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _top_k(scores: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best of each row of `scores` (num_queries, num_candidates) and their `candidates` positions (`-1`
    marks a missing candidate), padded with `-inf` / `-1` when there are fewer than `k`; ties go to the lower
    catalog position (`modeling.utils.topk.topk_indices`)."""
    scores = np.where(candidates >= 0, scores, -np.inf).astype(np.float32)
    top = min(k, scores.shape[1])
    best = topk_indices(scores, top, tie_key=candidates)
    out_scores = np.full((len(scores), k), -np.inf, dtype=np.float32)
    out_indices = np.full((len(scores), k), -1, dtype=np.int64)
    out_scores[:, :top] = np.take_along_axis(scores, best, 1)
    out_indices[:, :top] = np.where(out_scores[:, :top] > -np.inf, np.take_along_axis(candidates, best, 1), -1)
    return out_scores, out_indices


def read_index(path: str | os.PathLike) -> faiss.Index | CompressedIndex:
    """Reads what [`write_index`] wrote: a faiss index, or a [`CompressedIndex`] when the file holds IVF codes."""
    index = faiss.read_index(str(path))
    return CompressedIndex.read(index, path) if CompressedIndex.wraps(index) else index


def write_index(index: faiss.Index | CompressedIndex, path: str | os.PathLike) -> None:
    """Writes a faiss index to `path`, or a [`CompressedIndex`] to `path` and its vectors file."""
    if isinstance(index, CompressedIndex):
        index.write(path)
    else:
        faiss.write_index(index, str(path))


def index_nbytes(index: faiss.Index | CompressedIndex) -> int:
    """Bytes that [`write_index`] puts on disk."""
    return index.nbytes if isinstance(index, CompressedIndex) else int(faiss.serialize_index(index).size)
