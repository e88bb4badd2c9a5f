"""Where a Qdrant collection lives and how it is created and searched: `QdrantConfig` (a server, qdrant-client's
local mode, or qdrant-edge shards in a folder) and `QdrantStoreError`, the one error of a misconfigured store."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

try:  # an optional extra: `pip install .[qdrant]`
    from qdrant_client import QdrantClient
except ImportError:  # pragma: no cover - exercised only without the extra
    QdrantClient = None

COLLECTION_PREFIX = "fashion-search"
DEFAULT_PREFETCH_DEPTH = 1_000  # per signal: the query plan stays bounded as the catalog grows
QUERY_PLANS = ("nested", "two-stage")  # how fused queries re-score their candidates (`QdrantStore.plan`)

class QdrantStoreError(ValueError):
    """The Qdrant backend cannot be used as configured (unreachable, refused key, wrong or incomplete collection)."""


def _require_client() -> None:
    if QdrantClient is None:
        raise ImportError("the Qdrant backend needs qdrant-client: pip install 'fashion-search[qdrant]' "
                          "(or pip install qdrant-client)")


@dataclass(repr=False)
class QdrantConfig:
    """Where the collection lives and how it is created and searched.

    Args:
        url (`str`, *optional*): a Qdrant server or cluster (`http://host:6333`); exclusive with `path`.
        path (`str`, *optional*): a folder for `qdrant-client`'s embedded local mode (one process at a time, brute
            force, no payload indexes: development and tests). `":memory:"` keeps it in RAM.
        api_key (`str`, *optional*): the server's API key. Never shown by `repr`/`str` or in any message.
        collection (`str`, *optional*): the serving name; default `collection_name(fingerprint, prefix)`.
        prefix (`str`, defaults to `"fashion-search"`): prefix of the default collection name.
        timeout (`float`, defaults to 10): seconds before a request to the server fails.
        shard_number (`int`, defaults to 1): shards of the collection, set at creation: a cluster spreads them over
            its nodes (a rule of thumb is one or two per node); more shards, more parallel search and writes.
        replication_factor (`int`, defaults to 1): copies of each shard on a cluster (2 survives one node down).
        on_disk (`bool`, defaults to True): keep the original float32 vectors memory-mapped on disk; only the int8
            copies stay in RAM (about 4x less memory; rescoring reads the originals of the few candidates).
        quantization (`bool`, defaults to True): int8 scalar quantization of the dense vectors, kept in RAM.
        quantile (`float`, defaults to 0.99): the quantization range excludes the most extreme 1% of values.
        rescore (`bool`, defaults to True) and oversampling (`float`, defaults to 2.0): search the int8 vectors for
            `oversampling * limit` candidates, then re-score them with the original vectors, so the scores returned
            are exact cosines.
        prefetch_depth (`int`, defaults to 1,000): candidates per signal of fused queries (at least k); every
            candidate's fused score is exact (`QdrantStore.plan`); recall@10 against the exact ranking is measured
            by `benchmarks/qdrant_plan.py`.
        exact (`bool`, defaults to False): force a full scan on the server instead of its HNSW graph.
        edge (`bool`, defaults to False): with `path`, the folder holds `qdrant-edge-py` shards (the real Qdrant
            engine in process, `modeling.retrieval.backends.qdrant.edge`) instead of qdrant-client's local mode.
        hnsw_ef (`int`, *optional*): the HNSW beam width of each search (the engine's default when None).
        boost_prefetches (`int`, defaults to 1): fused queries with payload boosts (query intents) add a candidate
            list per boost, for this many of the heaviest ones: the heavier dense signal's allowed top
            `prefetch_depth` among the items the boost favours (`QdrantStore.plan`); 0 = none.
        plan (`str`, defaults to "nested"): how a fused query re-scores the union of the signals' candidates:
            "nested" (one request; every signal's re-scoring prefetch repeats the `prefetch_depth` searches of all
            signals, 9 searches for 3 signals) or "two-stage" (the 3 searches once, their union's ids back, then a
            second request scoring every signal over those points alone); `benchmarks/qdrant_plan.py --plans`.
    """

    url: str | None = None
    path: str | None = None
    api_key: str | None = None
    collection: str | None = None
    prefix: str = COLLECTION_PREFIX
    timeout: float = 10.0
    shard_number: int = 1
    replication_factor: int = 1
    on_disk: bool = True
    quantization: bool = True
    quantile: float = 0.99
    rescore: bool = True
    oversampling: float = 2.0
    prefetch_depth: int = DEFAULT_PREFETCH_DEPTH
    exact: bool = False
    edge: bool = False
    hnsw_ef: int | None = None
    boost_prefetches: int = 1
    plan: str = "nested"
    extra: dict = field(default_factory=dict)  # passed on to QdrantClient (e.g. grpc options)

    def __post_init__(self):
        if (self.url is None) == (self.path is None):
            raise QdrantStoreError("give the Qdrant backend exactly one of url (a server) or path (local mode)")
        for name in ("shard_number", "replication_factor", "prefetch_depth"):
            if int(getattr(self, name)) < 1:
                raise QdrantStoreError(f"{name} must be at least 1, got {getattr(self, name)}")
        if int(self.boost_prefetches) < 0:
            raise QdrantStoreError(f"boost_prefetches must be at least 0, got {self.boost_prefetches}")
        if self.plan not in QUERY_PLANS:
            raise QdrantStoreError(f"plan must be one of {', '.join(QUERY_PLANS)}, got {self.plan!r}")
        if self.edge and (self.path is None or self.path == ":memory:"):
            raise QdrantStoreError("the qdrant-edge vector store keeps its shards in a folder: give --qdrant-path DIR")

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def location(self) -> str:
        return self.url if self.url is not None else f"{'edge' if self.edge else 'local'}:{self.path}"

    @property
    def store_name(self) -> str:
        """The `--vector-store` value that opens this configuration."""
        return "qdrant-edge" if self.edge else "qdrant"

    @property
    def native(self) -> bool:
        """Whether the Qdrant engine itself answers (a server, an edge shard): search parameters and payload indexes
        mean something there, not in qdrant-client's local mode."""
        return self.edge or not self.is_local

    def __repr__(self) -> str:
        hidden = "'***'" if self.api_key else "None"
        return (f"QdrantConfig(url={self.url!r}, path={self.path!r}, api_key={hidden}, collection={self.collection!r}, "
                f"shard_number={self.shard_number}, replication_factor={self.replication_factor}, "
                f"on_disk={self.on_disk}, quantization={self.quantization}, edge={self.edge})")

    __str__ = __repr__

    @classmethod
    def from_environment(cls, url: str | None = None, path: str | os.PathLike | None = None,
                         **options) -> "QdrantConfig":
        """`url` (a server or cluster) or `path` (local mode), else the environment's `FASHION_QDRANT_URL` /
        `FASHION_QDRANT_PATH`; the API key only from `FASHION_QDRANT_API_KEY` (a command line is visible to every
        user of the machine). `options`: the other fields. The one place the app and the build command read the
        environment's Qdrant settings."""
        url = url or (None if path else os.environ.get("FASHION_QDRANT_URL"))
        path = path or (None if url else os.environ.get("FASHION_QDRANT_PATH"))
        if options.get("edge"):
            url, path = None, path or os.environ.get("FASHION_QDRANT_PATH")
            if not path:
                raise QdrantStoreError("--vector-store qdrant-edge needs --qdrant-path DIR (or FASHION_QDRANT_PATH)")
        if not url and not path:
            raise QdrantStoreError("--vector-store qdrant needs --qdrant-url URL (or FASHION_QDRANT_URL) for a "
                                   "server, or --qdrant-path DIR (or FASHION_QDRANT_PATH) for local mode")
        return cls(url=url, path=None if url else str(path), api_key=os.environ.get("FASHION_QDRANT_API_KEY"),
                   **options)

    def scrub(self, text: str) -> str:
        """`text` with the API key masked: client exceptions may echo request details."""
        return text.replace(self.api_key, "***") if self.api_key else text

    def connect(self) -> "QdrantClient":
        """A client, checked with one request: an unreachable server or a refused key fails here, clearly."""
        _require_client()
        if self.is_local:
            try:
                if self.edge:
                    from modeling.retrieval.backends.qdrant.edge import EdgeClient

                    return EdgeClient(self.path, self)
                return QdrantClient(location=":memory:") if self.path == ":memory:" else QdrantClient(path=self.path)
            except RuntimeError as error:  # the storage folder is locked by another process
                raise QdrantStoreError(f"cannot open the local Qdrant storage at {self.path}: "
                                       f"{str(error).rstrip('.')}. Local mode serves one process; use a Qdrant "
                                       "server (--qdrant-url) to share it") from None
        # The probe below reports an unreachable server clearly; the client's own version check would only warn.
        client = QdrantClient(url=self.url, api_key=self.api_key, timeout=max(1, math.ceil(self.timeout)),
                              check_compatibility=False, **self.extra)
        try:
            client.get_collections()
        except Exception as error:  # httpx/grpc connection errors, or an HTTP error status
            status = getattr(error, "status_code", None)
            if status in (401, 403):
                raise QdrantStoreError(
                    f"the Qdrant server at {self.url} refused the API key (HTTP {status}); check "
                    "FASHION_QDRANT_API_KEY") from None
            raise QdrantStoreError(
                f"cannot reach Qdrant at {self.url} ({type(error).__name__}: {self.scrub(str(error))[:200]}); check "
                "the URL (FASHION_QDRANT_URL / --qdrant-url) and that the server runs") from None
        return client


__all__ = ["COLLECTION_PREFIX", "DEFAULT_PREFETCH_DEPTH", "QdrantConfig", "QdrantStoreError"]
