"""Indexing at scale: stream a catalog, encode it in batches, write a Qdrant collection in idempotent, resumable
batches, split across processes with Accelerate.

    python -m modeling.retrieval.engine.build_index --model runs/dual-encoder --catalog ../shared/data \\
        --vector-store qdrant --qdrant-path runs/qdrant
    accelerate launch --num_processes 4 -m modeling.retrieval.engine.build_index ... --qdrant-url http://qdrant:6333

Streaming: the catalog is read as a `datasets` stream (local CSV/JSONL/Parquet files in chunks, a Hub dataset with
`streaming=True`), normalised row by row like `load_catalog`; only one batch of images is decoded at a time.

Two passes. BM25 weights need the catalog's document frequencies and average description length before the first
item can be written, so a first pass reads the metadata alone (no image is decoded; memory is the vocabulary, not
the items) and also hashes every (id, description) into the catalog's signature. The second pass encodes.

Batches and processes: batch `b` (rows `b * batch_size` onwards, in catalog order) belongs to process
`b % num_processes`; every process reads the (cheap) metadata stream and decodes and encodes only its own batches.
Each batch is upserted with `wait=True` under point ids derived from the item ids (`point_id`), then the process
records `b + 1` as its progress in the collection's metadata. A killed build resumes after its last recorded batch;
a batch written but not yet recorded is written again, which replaces its points. Local mode (`--qdrant-path`)
serves one process: several processes need a server.

Nothing half-served: a build writes a new physical collection `<name>-<build id>-<time>`; the serving name is an
alias switched to it (in one request) only once every batch is in, and the collection it replaces is then dropped.
The build id hashes the model fingerprint, the text encoder and the catalog signature: an unchanged catalog and
model is "up to date" (nothing to do), an interrupted build of them is resumed.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling.data.catalog import ATTRIBUTES, cell_text, image_ref, plan_columns, parse_splits
from modeling.data.sources import METADATA_FILES, TABLE_BUILDERS, CatalogError
from modeling.data.text import as_text, item_description
from modeling.encoders.sentence import SentenceEncoder
from modeling.retrieval.backends.qdrant.schema import (create_collection, create_payload_indexes,  # noqa: F401
                                                       item_payload)
from modeling.retrieval.backends.qdrant.store import (COMPLETE_KEY, FORMAT_VERSION, KEYWORDS, METADATA_KEY, TITLE,
                                                      VISUAL, KeywordStatistics, QdrantConfig, QdrantStoreError,
                                                      collection_name, models, point_id)

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256
_RGB = datasets.Image(mode="RGB")  # the decoding of `load_catalog`, so both backends see the same pixels


# -- streaming a catalog ----------------------------------------------------------------------------------------
def _table_stream(file: Path) -> datasets.IterableDataset:
    builder = TABLE_BUILDERS[file.suffix.lower()]
    kwargs = {}
    if builder == "csv":  # strings, as load_catalog reads them: ids stay "15970", never 15970.0
        import csv

        with open(file, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        if not header:
            raise CatalogError(f"Catalog file '{file}' is empty.")
        kwargs["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    return datasets.load_dataset(builder, data_files=str(file), split="train", streaming=True, **kwargs)


def stream_source(source: str | os.PathLike, revision: str | None = None
                  ) -> tuple[dict[str, datasets.IterableDataset], str | None]:
    """The raw source as streamed splits (the sources of `modeling.data.sources.load_source`) and the folder that
    relative image paths are resolved against."""
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            for name in METADATA_FILES:
                if (path / name).is_file():
                    return {"train": _table_stream(path / name)}, str(path.resolve())
            files: dict[str, list[str]] = {}
            for file in sorted(path.glob("data/*.parquet")):
                files.setdefault(file.name.split("-")[0], []).append(str(file))
            if files:
                return dict(datasets.load_dataset("parquet", data_files=files, streaming=True)), None
            return dict(datasets.load_dataset("imagefolder", data_dir=str(path), streaming=True)), None
        if path.is_file():
            if path.suffix.lower() not in TABLE_BUILDERS:
                raise CatalogError(f"Unsupported catalog file '{path}': expected one of {', '.join(TABLE_BUILDERS)}.")
            return {"train": _table_stream(path)}, str(path.resolve().parent)
    except CatalogError:
        raise
    except Exception as error:
        raise CatalogError(f"Cannot stream the catalog '{source}': {type(error).__name__}: {error}") from error
    text = os.fspath(source)
    if path.is_absolute() or text.startswith((".", "~")) or path.suffix.lower() in TABLE_BUILDERS:
        raise CatalogError(f"Catalog source '{text}' does not exist.")
    try:
        loaded = datasets.load_dataset(text, revision=revision, streaming=True)
    except Exception as error:
        raise CatalogError(f"Streaming the Hub dataset '{text}' failed ({type(error).__name__}: {error}); check the "
                           "id and that the Hub is reachable (not with HF_HUB_OFFLINE=1).") from error
    return (dict(loaded) if isinstance(loaded, datasets.IterableDatasetDict) else {"train": loaded}), None


def iter_catalog(source: str | os.PathLike, *, split=None, column_map: Mapping[str, str] | None = None,
                 max_items: int | None = None, revision: str | None = None, chunk_size: int = 1024) -> Iterator[dict]:
    """The catalog's rows, one dict at a time, with `load_catalog`'s canonical columns (`image` as `{bytes, path}`,
    not decoded). Rows without an image are skipped (as `load_catalog` drops them); a row without an id takes its
    image file's stem. Memory: one chunk of metadata."""
    parts, root = stream_source(source, revision)
    wanted = parse_splits(split)
    produced = 0
    for split_name, part in parts.items():
        features = part.features
        columns = list(features) if features is not None else list(next(iter(part.take(1)), {}).keys())
        plan = plan_columns(columns, column_map)
        split_column = plan.get("split")
        if wanted and split_column is None and split_name not in wanted:
            continue
        if features is not None and isinstance(features.get(plan["image"]), datasets.Image):
            part = part.cast_column(plan["image"], datasets.Image(decode=False))
        labels = {target: (features[source_column].names if features is not None
                           and isinstance(features.get(source_column), datasets.ClassLabel) else None)
                  for target, source_column in plan.items()}
        for batch in part.iter(batch_size=chunk_size):
            for i in range(len(batch[plan["image"]])):
                if split_column is not None and wanted and as_text(batch[split_column][i]) not in wanted:
                    continue
                ref, path = image_ref(batch[plan["image"]][i], root)
                if ref is None:
                    continue
                row = {"image": ref, "image_path": path, "split": split_name}
                for target, source_column in plan.items():
                    if target != "image":
                        value = batch[source_column][i]
                        if labels[target] is not None or isinstance(value, (str, int, float, bool)) or value is None:
                            row[target] = cell_text(value, labels[target])
                row.setdefault("title", "")
                row["id"] = row.get("id") or Path(ref.get("path") or "").stem or str(produced)
                yield row
                produced += 1
                if max_items is not None and produced >= max_items:
                    return


def scan_catalog(rows: Iterator[dict], k1: float = 1.2, b: float = 0.75
                 ) -> tuple[KeywordStatistics, str, list[str]]:
    """The first pass: BM25 statistics of the descriptions, the catalog's signature (hash of ids and descriptions
    in order) and the filter attributes it has."""
    statistics, digest, attributes = KeywordStatistics(k1, b), hashlib.sha256(), set()
    for row in tqdm(rows, desc="scanning catalog", unit="item"):
        description = item_description(row)
        statistics.add([description])
        digest.update(f"{row['id']}\x1f{description}\x1e".encode())
        attributes.update(a for a in ATTRIBUTES if a in row)
    return statistics, digest.hexdigest()[:16], [a for a in ATTRIBUTES if a in attributes]


def batched(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- encoding ---------------------------------------------------------------------------------------------------
def _decode(ref: dict):
    try:
        return _RGB.decode_example(dict(ref))
    except Exception as error:  # missing, corrupt or not an image: skipped, as load_catalog drops it
        logger.warning("skipping an item whose image cannot be read (%s): %s", ref.get("path") or "embedded", error)
        return None


@torch.inference_mode()
def encode_image_batch(model, processor, images, device: torch.device | str | None = None) -> np.ndarray:
    """Unit image embeddings, on `device` (the process's GPU under `accelerate launch`)."""
    pixel_values = processor(list(images), return_tensors="pt")["pixel_values"]
    if device is not None:
        pixel_values = pixel_values.to(device)
    return F.normalize(model.get_image_features(pixel_values), dim=-1).float().cpu().numpy()


@dataclass
class BuildReport:
    """What a build did: the serving name, the collection behind it, items written by this process, seconds."""

    name: str
    collection: str
    items: int = 0
    seconds: float = 0.0
    up_to_date: bool = False
    total_points: int | None = None

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


class _SingleProcess:
    """`accelerate.PartialState`'s interface for a plain `python -m` run."""

    process_index, num_processes, is_main_process, device = 0, 1, True, torch.device("cpu")

    def wait_for_everyone(self) -> None:
        pass


class _TorchProcesses:
    """Processes of a `torch.distributed` (gloo) group: what `accelerate launch` starts on machines without GPUs,
    where `accelerate.PartialState` sets up no process group and would report one process in each."""

    def __init__(self):
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE from the launcher
        self._dist = dist
        self.process_index, self.num_processes = dist.get_rank(), dist.get_world_size()
        self.is_main_process, self.device = self.process_index == 0, torch.device("cpu")

    def wait_for_everyone(self) -> None:
        self._dist.barrier()


def process_state():
    """This process's place among the build's processes: `accelerate.PartialState` (GPUs, MPI), a gloo group when
    `accelerate launch` / `torchrun` started several CPU processes, or one process."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _TorchProcesses()
    return state


def _progress_key(rank: int, world: int, batch_size: int) -> str:
    return f"{METADATA_KEY}_progress_{rank}_of_{world}_batch_{batch_size}"


def _metadata(client, name: str) -> dict:
    """The collection's whole metadata (identity under METADATA_KEY, completion, progress keys)."""
    return client.get_collection(name).config.metadata or {}


def _alias_target(client, alias: str) -> str | None:
    for entry in client.get_aliases().aliases:
        if entry.alias_name == alias:
            return entry.collection_name
    return None


def build_collection(model, processor, catalog, config: QdrantConfig, *, model_info: Mapping,
                     sentence_encoder: SentenceEncoder | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     split=None, max_items: int | None = None, column_map: Mapping[str, str] | None = None,
                     rebuild: bool = False, state=None, client=None,
                     on_batch: Callable[[int], None] | None = None,
                     named_texts: Mapping[str, Callable[[Mapping], str]] | None = None,
                     finalize: Callable[[Any, str, dict], None] | None = None) -> BuildReport:
    """Stream `catalog` into a Qdrant collection (see the module docstring); returns this process's report.

    Args:
        model, processor: the image model and its image processor; `model_info` its `{name, fingerprint,
            embedding_dim}`. sentence_encoder: MiniLM for the `title` vectors (None: image-only model).
        catalog: a catalog source (folder, file or Hub id), streamed with `split` / `max_items` / `column_map`.
        rebuild: build a new collection even when one of this model and catalog is complete.
        state: an `accelerate.PartialState` (process index, count, device, barrier); default one process.
        client: an open `QdrantClient` (default `config.connect()`); callers passing one share it between
            processes themselves (local mode cannot be opened by several).
        on_batch: called with each batch index once it is recorded (progress hooks; tests interrupt builds here).
        named_texts: more named dense vectors, each the sentence encoder's embedding of a text of the row (the
            engine's `vsc`: the description VSC compares with); part of the build id.
        finalize: called by the main process as `finalize(client, physical, metadata)` once every batch is in,
            before the collection is optimised and marked complete (the engine writes the duplicate groups and
            its serving record there, `modeling.retrieval.engine.store_build`).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    state = state or _SingleProcess()
    world = state.num_processes
    if config.is_local and world > 1 and client is None:  # each process would open the folder: it is locked
        raise QdrantStoreError("local-mode Qdrant (--qdrant-path) is opened by one process only; run one process, "
                               "or give several processes a Qdrant server (--qdrant-url)")
    if client is None:
        client = config.connect()
        try:
            return build_collection(model, processor, catalog, config, model_info=model_info,
                                    sentence_encoder=sentence_encoder, batch_size=batch_size, split=split,
                                    max_items=max_items, column_map=column_map, rebuild=rebuild, state=state,
                                    client=client, on_batch=on_batch, named_texts=named_texts, finalize=finalize)
        finally:
            client.close()  # local mode: releases the folder's lock
    alias = config.collection or collection_name(model_info["fingerprint"], config.prefix)

    def rows():
        return iter_catalog(catalog, split=split, column_map=column_map, max_items=max_items)

    statistics, signature, attributes = scan_catalog(rows())
    if statistics.num_documents == 0:
        raise CatalogError(f"The catalog '{catalog}' has no usable rows.")
    keywords = statistics.encoder()
    text_info = ({"name": sentence_encoder.name, "embedding_dim": sentence_encoder.dim}
                 if sentence_encoder is not None else None)
    named = sorted(named_texts or {}) if sentence_encoder is not None else []
    identity = (model_info["fingerprint"], text_info, signature, keywords.signature()) + ((tuple(named),) if named
                                                                                        else ())
    build_id = hashlib.sha256(repr(identity).encode()).hexdigest()[:12]
    stem = f"{alias}-{build_id}-"

    target = _alias_target(client, alias)
    if not rebuild and target and target.startswith(stem) and _metadata(client, target).get(COMPLETE_KEY):
        logger.info("collection %s (%s) is up to date", alias, target)
        return BuildReport(alias, target, up_to_date=True, total_points=int(client.count(target, exact=True).count))
    metadata = {"format_version": FORMAT_VERSION, "model": dict(model_info), "text_encoder": text_info,
                "keywords": keywords.to_dict(), "catalog": {"source": str(catalog), "signature": signature},
                "attributes": attributes, "named_texts": named}
    physical = _physical_collection(client, config, alias, stem, target, rebuild, state, metadata)
    report = BuildReport(alias, physical)
    device = getattr(state, "device", None)
    if device is not None and str(device) != "cpu":
        model.to(device)
    start = time.perf_counter()
    total = -(-statistics.num_documents // batch_size)
    report.items = _stream(client, physical, rows(), statistics.num_documents, batch_size, state,
                           (model, processor, sentence_encoder, keywords, device,
                            {n: named_texts[n] for n in named}), on_batch)
    report.seconds = time.perf_counter() - start
    state.wait_for_everyone()
    if state.is_main_process:
        report.total_points = _finish(client, alias, physical, target, world, batch_size, total, finalize)
    return report


def _physical_collection(client, config: QdrantConfig, alias: str, stem: str, target, rebuild: bool, state,
                         metadata: dict) -> str:
    """The physical collection this build writes: the main process creates a new one (`metadata` its identity) or
    resumes the newest interrupted build of the same id; the others wait for it and find it."""
    if state.is_main_process:
        names = [c.name for c in client.get_collections().collections]
        if alias in names:
            raise QdrantStoreError(f"{alias!r} at {config.location} is a collection, not an alias; delete it or "
                                   "choose another name (--qdrant-collection)")
        resumable = sorted(n for n in names if n.startswith(stem) and n != target
                           and not _metadata(client, n).get(COMPLETE_KEY))
        if rebuild or not resumable:
            physical = stem + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
            text_info = metadata["text_encoder"]
            create_collection(client, physical, config, metadata["model"]["embedding_dim"],
                              text_info and text_info["embedding_dim"], metadata,
                              {n: text_info["embedding_dim"] for n in metadata["named_texts"]})
            logger.info("building %s into %s", alias, physical)
        else:
            physical = resumable[-1]
            create_payload_indexes(client, physical)  # idempotent; a build killed while creating them lacks some
            logger.info("resuming the interrupted build %s", physical)
    state.wait_for_everyone()
    if not state.is_main_process:  # the main process made or chose it: the newest incomplete build of this id
        names = [c.name for c in client.get_collections().collections]
        physical = sorted(n for n in names if n.startswith(stem) and not _metadata(client, n).get(COMPLETE_KEY))[-1]
    return physical


def _stream(client, physical: str, rows, num_rows: int, batch_size: int, state, encoders, on_batch) -> int:
    """Encode and upsert this process's batches (every `world`-th, from where its progress key says it stopped),
    recording each; returns the items written. `encoders`: (model, processor, sentence encoder, keywords, device,
    named texts)."""
    rank, world = state.process_index, state.num_processes
    key = _progress_key(rank, world, batch_size)
    done, items = int(_metadata(client, physical).get(key, 0)), 0
    bar = tqdm(total=num_rows, desc=f"indexing [{rank}/{world}]", unit="item", position=rank)
    with ThreadPoolExecutor() as pool:
        for index, batch in enumerate(batched(rows, batch_size)):
            if index % world != rank or index < done:
                if index % world == rank:
                    bar.update(len(batch))
                continue
            position = index * batch_size
            images = list(pool.map(_decode, [row["image"] for row in batch]))
            kept = [(position + i, row, image) for i, (row, image) in enumerate(zip(batch, images))
                    if image is not None]
            if kept:
                _upsert(client, physical, *encoders[:4], kept, encoders[4], encoders[5])
            client.update_collection(physical, metadata={key: index + 1})
            items += len(kept)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(index)
    bar.close()
    return items


def _encode_texts(sentence_encoder, texts: list[str]) -> np.ndarray:
    """Each text's embedding, every distinct text encoded once (catalogs repeat titles)."""
    unique = list(dict.fromkeys(texts))
    row = {text: i for i, text in enumerate(unique)}
    return np.asarray(sentence_encoder.encode(unique))[[row[t] for t in texts]]


def _upsert(client, name, model, processor, sentence_encoder, keywords, kept, device, named_texts=None) -> None:
    visual = encode_image_batch(model, processor, [image for _, _, image in kept], device)
    descriptions = [item_description(row) for _, row, _ in kept]
    titles = sentence_encoder.encode(descriptions) if sentence_encoder is not None else None
    named = {n: _encode_texts(sentence_encoder, [text(row) for _, row, _ in kept])
             for n, text in (named_texts or {}).items()}
    points = []
    for j, ((position, row, _), description) in enumerate(zip(kept, descriptions)):
        vector = {VISUAL: visual[j].tolist(), **{n: embeddings[j].tolist() for n, embeddings in named.items()}}
        if titles is not None:
            vector[TITLE] = titles[j].tolist()
        indices, values = keywords.document_vector(description)
        if indices:  # a description without a word has no keyword vector (it scores 0, as in BM25Index)
            vector[KEYWORDS] = models.SparseVector(indices=indices, values=values)
        points.append(models.PointStruct(id=point_id(row["id"]), vector=vector,
                                         payload=item_payload(row, position, description)))
    client.upsert(name, points=points, wait=True)


def _finish(client, alias: str, physical: str, previous: str | None, world: int, batch_size: int,
            total_batches: int, finalize=None) -> int:
    """Check every process finished, `finalize` it, mark it complete, switch the alias, drop the replaced one."""
    metadata = _metadata(client, physical)
    unfinished = [rank for rank in range(world)
                  if int(metadata.get(_progress_key(rank, world, batch_size), 0)) < _last_batch(rank, world,
                                                                                               total_batches)]
    if unfinished:
        raise QdrantStoreError(f"processes {unfinished} did not finish their batches of {physical}; run the build "
                               "again to resume")
    if finalize is not None:
        finalize(client, physical, metadata)
    if hasattr(client, "optimize"):  # an embedded engine (qdrant-edge) builds its HNSW graphs and int8 copies now
        client.optimize(physical)
    points = int(client.count(physical, exact=True).count)
    client.update_collection(physical, metadata={COMPLETE_KEY: {"num_items": points}})
    operations = []
    if previous is not None:
        operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    operations.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=physical,
                                                                                  alias_name=alias)))
    client.update_collection_aliases(change_aliases_operations=operations)
    if previous is not None and previous != physical:
        client.delete_collection(previous)
    return points


def _last_batch(rank: int, world: int, total_batches: int) -> int:
    """1 + the last batch index process `rank` owns (0 when it owns none): its progress once done."""
    owned = [b for b in range(rank, total_batches, world)]
    return owned[-1] + 1 if owned else 0


__all__ = ["BuildReport", "DEFAULT_BATCH_SIZE", "build_collection", "create_collection", "create_payload_indexes",
           "encode_image_batch", "item_payload", "iter_catalog", "process_state", "scan_catalog", "stream_source"]
