"""Serving several models: which models an app offers, each loaded once (the default at start, others on first use).

    registry = EngineRegistry([ModelSpec.parse("runs/dual-encoder"), ModelSpec.parse("vae=runs/vae")],
                              catalog="../shared/data", rerank_model="runs/vae")
    registry.get()          # the default model's engine (loaded, its index built when absent)
    registry.get("vae")     # loaded on first call, then reused

Every engine indexes the same catalog, so an item id means the same product under every model (the app's compare
view and "click a result to search with it" rely on that). The sentence encoder (fused text score and VSC) is
loaded once and shared by all engines; a re-ranking model's index is shared with that model's own engine.

With `vector_store="qdrant"` every engine ranks in its model's collection (one per model fingerprint) at the server
or local folder `qdrant` names, through one client shared by all engines (local mode allows one per folder):

    registry = EngineRegistry([ModelSpec.parse("runs/dual-encoder")], catalog="../shared/data",
                              vector_store="qdrant", qdrant=qdrant_config(path="runs/qdrant"))
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import MODEL_MAPPING, AutoConfig

from modeling.models.configuration_dual_encoder import DEFAULT_TEXT_MODEL
from modeling.retrieval.engine.loading import VECTOR_STORES
from modeling.retrieval.engine.photo_fusion import PHOTO_INDEX
from modeling.retrieval.engine.search import DEFAULT_PHOTO_MODEL, DEFAULT_TEXT_WEIGHT, FashionSearchEngine, QueryError
from modeling.encoders.pretrained import efficientnet_lite0_weights_file
from modeling.encoders.sentence import SentenceEncoder

if TYPE_CHECKING:
    from modeling.retrieval.backends.qdrant.store import QdrantConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A model the app offers: the name users pick (UI and API), its folder or Hub id, and its index folder."""

    name: str
    path: str
    index_dir: str

    @classmethod
    def parse(cls, text: str, index_root: str | os.PathLike | None = None) -> "ModelSpec":
        """`"name=path"` or `"path"` (named after its last path component). The index lives in `<path>/index` for a
        local folder, else (a Hub id, or with `index_root`) in `<index_root or "indexes">/<name>`."""
        text = str(text).strip()
        if not text:
            raise ValueError("empty model specification")
        name, sep, path = text.partition("=")
        if not sep:
            name, path = Path(text.rstrip("/")).name, text
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise ValueError(f"bad model specification {text!r}; use PATH or NAME=PATH")
        if index_root is not None:
            index_dir = Path(index_root) / name
        elif Path(path).is_dir():
            index_dir = Path(path) / "index"
        else:
            index_dir = Path("indexes") / name
        return cls(name=name, path=path, index_dir=str(index_dir))


def with_index_repo(specs: Iterable[ModelSpec], index_repo: str | os.PathLike | None) -> list[ModelSpec]:
    """Point each model at its index in a pushed index dataset (`modeling.hub.push push-index`: `indexes/<name>/`), a Hub
    dataset id or a local copy. Models the dataset has no index for keep their local index folder (built if absent)."""
    specs = list(specs)
    if not index_repo:
        return specs
    root = resolve_index_repo(index_repo, [spec.name for spec in specs])
    out = []
    for spec in specs:
        pushed = root / "indexes" / spec.name
        if (pushed / "manifest.json").is_file():
            out.append(ModelSpec(spec.name, spec.path, str(pushed)))
        else:
            logger.warning("the index dataset %s has no index for %s; using %s", index_repo, spec.name,
                           spec.index_dir)
            out.append(spec)
    return out


def resolve_index_repo(repo_or_dir: str | os.PathLike, names: Sequence[str] | None = None) -> Path:
    """A local folder holding `indexes/<name>/`: `repo_or_dir` itself when it is a folder, else a snapshot of the Hub
    dataset (only the named models' indexes are downloaded)."""
    path = Path(repo_or_dir)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    patterns = [f"indexes/{n}/*" for n in names] if names else ["indexes/*"]
    return Path(snapshot_download(str(repo_or_dir), repo_type="dataset", allow_patterns=patterns + ["README.md"]))


def qdrant_config(url: str | None = None, path: str | os.PathLike | None = None, collection: str | None = None,
                  timeout: float = 10.0, edge: bool = False) -> "QdrantConfig":
    """Where the app's collections live: `url` (a server or cluster) or `path` (local mode), else the environment's
    `FASHION_QDRANT_URL` / `FASHION_QDRANT_PATH`. The API key comes from `FASHION_QDRANT_API_KEY` only: a command
    line is visible to every user of the machine. `collection` overrides the serving name (one model only). `edge`:
    the folder `path` holds qdrant-edge shards (`--vector-store qdrant-edge`)."""
    from modeling.retrieval.backends.qdrant.store import QdrantConfig

    return QdrantConfig.from_environment(url, path, collection=collection, timeout=timeout, edge=edge)


def model_supports_text(path: str | os.PathLike) -> bool:
    """Whether a saved model has a text tower, read from its config alone (no weights loaded)."""
    config = AutoConfig.from_pretrained(path)
    try:
        model_class = MODEL_MAPPING[type(config)]
    except KeyError:
        return False
    return callable(getattr(model_class, "get_text_features", None))


class EngineRegistry:
    """The app's models by name, each engine created once, thread-safely, on first use."""

    def __init__(self, specs: Iterable[ModelSpec], *, catalog=None, rerank_model: str | None = None,
                 text_encoder: str | None = DEFAULT_TEXT_MODEL, text_weight: float = DEFAULT_TEXT_WEIGHT,
                 engines: Mapping[str, FashionSearchEngine] | None = None,
                 onnx: Mapping[str, str] | None = None, vector_store: str = "faiss",
                 qdrant: "QdrantConfig | None" = None, photo_model: str | None = None):
        if vector_store not in VECTOR_STORES:
            raise ValueError(f"unknown vector store {vector_store!r}; use one of {', '.join(VECTOR_STORES)}")
        if vector_store != "faiss" and qdrant is None:
            raise ValueError(f"the {vector_store} vector store needs a QdrantConfig (see `qdrant_config`)")
        self.specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.name in self.specs:
                raise ValueError(f"two models are named {spec.name!r}; name them NAME=PATH")
            self.specs[spec.name] = spec
        self._engines: dict[str, FashionSearchEngine] = dict(engines or {})
        for name in self._engines:
            self.specs.setdefault(name, ModelSpec(name, name, ""))
        if not self.specs:
            raise ValueError("no model to serve")
        self.catalog = catalog
        self.onnx = dict(onnx or {})  # model name -> ONNX export that encodes its missing index
        self.rerank_model = rerank_model
        self.photo_model = photo_model  # a second encoder for photo queries, one index shared by every model
        self.text_encoder = text_encoder
        self.text_weight = float(text_weight)
        self.load_seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._model_locks = {name: threading.Lock() for name in self.specs}
        self._sentence_encoder: SentenceEncoder | None = None
        self._dataset = None
        self._supports_text: dict[str, bool] = {}
        self.vector_store, self.qdrant = vector_store, qdrant
        self._qdrant_client = None  # connected on the first engine's load, shared by all

    @classmethod
    def from_engines(cls, engines: Mapping[str, FashionSearchEngine]) -> "EngineRegistry":
        """A registry over engines already in memory (tests, notebooks)."""
        return cls([], engines=engines)

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    @property
    def default(self) -> str:
        return next(iter(self.specs))

    def is_loaded(self, name: str) -> bool:
        return name in self._engines

    def supports_text(self, name: str | None = None) -> bool:
        """Whether a model searches by text (read from its config; does not load it)."""
        name = self._check(name)
        if name in self._engines:
            return self._engines[name].supports_text
        if name not in self._supports_text:
            self._supports_text[name] = model_supports_text(self.specs[name].path)
        return self._supports_text[name]

    def get(self, name: str | None = None) -> FashionSearchEngine:
        """The engine of model `name` (default: the first), loading it on first use."""
        name = self._check(name)
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        with self._model_locks[name]:
            if name not in self._engines:
                self._engines[name] = self._load(self.specs[name])
            return self._engines[name]

    def _check(self, name: str | None) -> str:
        name = name or self.default
        if name not in self.specs:
            raise QueryError(f"Unknown model {name!r}; choose one of {', '.join(self.specs)}.")
        return name

    def _encoder(self) -> SentenceEncoder | None:
        with self._lock:
            if self._sentence_encoder is None and self.text_encoder:
                self._sentence_encoder = SentenceEncoder(self.text_encoder)
            return self._sentence_encoder

    def _catalog(self):
        """The catalog, loaded once for every engine that needs it (a missing index, images of a pushed index)."""
        with self._lock:
            if self._dataset is None:
                from modeling.data.catalog import load_catalog

                catalog = self.catalog
                self._dataset = load_catalog(catalog) if isinstance(catalog, (str, os.PathLike)) else catalog
            return self._dataset

    def _store_client(self):
        """The one Qdrant client of every engine (None for FAISS); connecting fails clearly here, at start."""
        if self.vector_store == "faiss":
            return None
        with self._lock:
            if self._qdrant_client is None:
                self._qdrant_client = self.qdrant.connect()
            return self._qdrant_client

    def _rerank_index(self) -> str | None:
        """A re-ranking model that is also served shares that engine's index folder."""
        for spec in self.specs.values():
            if self.rerank_model and os.path.realpath(spec.path) == os.path.realpath(self.rerank_model):
                return spec.index_dir
        return str(Path(self.rerank_model) / "index") if self.rerank_model and Path(self.rerank_model).is_dir() \
            else None

    def _photo_options(self) -> dict:
        """The second photo encoder and its index (the first model's `<index>/photo`, the same for every model:
        it depends on the catalog only); {} when off or when its weights package is missing (with a warning)."""
        if not self.photo_model:
            return {}
        if self.photo_model == DEFAULT_PHOTO_MODEL:
            try:
                efficientnet_lite0_weights_file()
            except OSError as error:
                logger.warning("photo search without its second encoder: %s", error)
                return {}
        first = next(iter(self.specs.values()))
        return {"photo_model": self.photo_model, "photo_index": str(Path(first.index_dir) / PHOTO_INDEX)}

    def _load(self, spec: ModelSpec) -> FashionSearchEngine:
        start = time.perf_counter()
        logger.info("loading model %s from %s (index %s)", spec.name, spec.path, spec.index_dir)
        reranker = self.rerank_model
        if reranker and os.path.realpath(reranker) == os.path.realpath(spec.path):
            reranker = None  # a model does not re-rank itself
        engine = FashionSearchEngine.load(spec.path, spec.index_dir, catalog=self._catalog if self.catalog else None,
                                          sentence_encoder=self._encoder(), text_encoder=self.text_encoder,
                                          text_weight=self.text_weight, rerank_model=reranker,
                                          rerank_index=self._rerank_index() if reranker else None,
                                          onnx_dir=self.onnx.get(spec.name), vector_store=self.vector_store,
                                          qdrant=self.qdrant, qdrant_client=self._store_client(),
                                          **self._photo_options())
        engine.model_name = spec.name
        self.load_seconds[spec.name] = time.perf_counter() - start
        logger.info("model %s ready in %.1f s (%d items)", spec.name, self.load_seconds[spec.name], len(engine.index))
        return engine


__all__ = ["DEFAULT_PHOTO_MODEL", "EngineRegistry", "ModelSpec", "model_supports_text", "qdrant_config", "with_index_repo"]
