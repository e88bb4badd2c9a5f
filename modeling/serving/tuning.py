"""CPU tuning of a server: query encoding in bfloat16 where the CPU has it and parity holds
(`choose_query_precision`, `bf16_when_batched`), one thread per operation (`limit_threads`) and a cap on glibc's
malloc arenas (`cap_malloc_arenas`)."""

from __future__ import annotations

from pathlib import Path

QUERY_PRECISIONS = ("fp32", "bf16")
BF16_MIN_COSINE = 0.999
BF16_MIN_BATCH = 8


def _in_bf16(fn, *args):
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn(*args)


def bf16_when_batched(encode, queries):
    # bf16 pays off from about 8 queries a pass (measured on 2 cores, per query: 1 query 29 ms fp32 vs 41 ms bf16,
    # 8: 7.5 vs 7.4, 32: 5.5 vs 3.0 under load); a lone query keeps fp32 and its lower latency.
    return _in_bf16(encode, queries) if len(queries) >= BF16_MIN_BATCH else encode(queries)


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_parity(engine, queries) -> float:
    """The lowest cosine between the fp32 and the bf16-autocast query embeddings of `queries`, over the model's text
    tower and the sentence encoder of the fused score."""
    import numpy as np

    encoders = [engine.encode_texts]
    if engine.sentence_encoder is not None:
        encoders.append(engine.sentence_encoder.encode)
    worst = 1.0
    for encode in encoders:
        full = np.asarray(encode(list(queries)), dtype=np.float32)
        half = np.asarray(_in_bf16(encode, list(queries)), dtype=np.float32)
        cos = (full * half).sum(1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(half, axis=1) + 1e-12)
        worst = min(worst, float(cos.min()))
    return worst


def choose_query_precision(engine, queries, setting: str = "auto", min_cosine: float = BF16_MIN_COSINE
                           ) -> tuple[str, float | None]:
    """("bf16" or "fp32", the measured parity) for serving `engine`'s text queries. "auto" takes bf16 only on a
    CPU with native bf16 and when every probe query's bf16 embedding has cosine >= `min_cosine` with its fp32 one
    (on this repo's default model: >= 0.99995 over 256 shopper queries; 1.8x faster per query in passes of 32 on
    an AMX CPU, slower for a lone query, hence bf16 only for passes of BF16_MIN_BATCH queries or more).
    "fp32" / "bf16" force one (bf16 still refused when parity fails)."""
    if setting not in ("auto", *QUERY_PRECISIONS):
        raise ValueError(f"query precision must be auto, fp32 or bf16, got {setting!r}")
    if setting == "fp32" or not engine.supports_text or (setting == "auto" and not cpu_has_bf16()):
        return "fp32", None
    parity = bf16_parity(engine, queries)
    return ("bf16" if parity >= min_cosine else "fp32"), parity


def limit_threads(threads: int = 1) -> None:
    """One thread per operation in torch and in the BLAS/OpenMP pools (threadpoolctl, when installed) for a server.

    A server runs many requests at once; each numpy product or torch op spreading over every core as well makes
    the threads fight over the cores. Measured with `benchmarks/app_load.py` on 2 cores at 32 clients: 38 req/s
    (p95 3.3 s) with the libraries' default 2 threads per op, 171 req/s (p95 0.40 s) with 1.
    """
    import torch

    torch.set_num_threads(max(1, int(threads)))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the BLAS pool keeps its size (OPENBLAS_NUM_THREADS sets it)
        return
    threadpool_limits(max(1, int(threads)))


def lower_thread_priority(nice: int) -> bool:
    """Raises the calling thread's nice value by `nice` (Linux schedules threads one by one; raising needs no
    privilege); False where it cannot. The server's search and encoder threads run lowered so that, when the cores
    are busy, the event loop thread that answers (and refuses) requests gets a core first."""
    import os
    import threading

    if nice <= 0 or not hasattr(os, "setpriority"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + int(nice)))
        return True
    except OSError:
        return False


def _mallopt(option: int, value: int) -> bool:
    from modeling.utils.memory import libc

    try:
        return bool(libc().mallopt(option, int(value)))
    except AttributeError:  # no C library, or not glibc
        return False


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Caps glibc's malloc arenas (M_ARENA_MAX) for a threaded server; False where it cannot (not glibc).

    glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core) and keeps their freed
    memory: with dozens of request threads the server's memory creeps up with the traffic. Two arenas keep it flat
    at no measurable cost in throughput (the threads mostly wait on the GIL or the batcher anyway)."""
    return _mallopt(-8, arenas)  # -8 = M_ARENA_MAX


def return_large_blocks(threshold: int = 1 << 20) -> bool:
    """Allocations of `threshold` bytes or more get pages of their own, given back to the system when freed
    (M_MMAP_THRESHOLD, fixed); False where it cannot (not glibc).

    glibc raises its threshold to the size of each large block freed (up to 32 MB), so after one large photo the
    next ones (Pillow's 16 MB blocks, the decoder's buffers) come from the heap, which keeps them: the server's
    memory stayed hundreds of MB up after a few large uploads. A fixed threshold turns that off."""
    return _mallopt(-3, threshold)  # -3 = M_MMAP_THRESHOLD


__all__ = ["BF16_MIN_BATCH", "BF16_MIN_COSINE", "QUERY_PRECISIONS", "bf16_parity", "bf16_when_batched",
           "cap_malloc_arenas", "choose_query_precision", "cpu_has_bf16", "limit_threads", "lower_thread_priority",
           "return_large_blocks"]
