"""The Hub datasets: the catalog (`write_catalog_dataset`), composed triplets (`write_triplets_dataset`) and
pushed indexes (`write_index_dataset`), each a folder with parquet splits and a dataset card."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modeling.hub.folders import DATASET_LICENSE_NOTE, HubExportError, staged_folder

def _write_parquet_splits(parts: Mapping[str, Any], folder: Path, prefix: str = "data") -> list[dict]:
    """Write each split as `<prefix>/<split>-00000-of-00001.parquet` with images embedded (what push_to_hub does)."""
    from datasets.table import embed_table_storage

    (folder / prefix).mkdir(parents=True, exist_ok=True)
    files = []
    for split, part in parts.items():
        path = f"{prefix}/{split}-00000-of-00001.parquet"
        part = part.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True,
                                             desc=f"embedding {split} images").with_format(None)
        part.to_parquet(str(folder / path))
        files.append({"split": split, "path": path})
    return files


def _dataset_card(folder: Path, *, pretty_name: str, configs: list[dict], body: str, tags: Sequence[str],
                  task_categories: Sequence[str]) -> None:
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(license="other", pretty_name=pretty_name, tags=list(tags),
                           task_categories=list(task_categories), configs=configs)
    card = DatasetCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + body)
    (folder / "README.md").write_text(str(card), encoding="utf-8")


def write_catalog_dataset(source, out_dir: str | os.PathLike, max_items: int | None = None) -> Path:
    """The catalog as a Hub dataset: one parquet file per split with an `Image` feature (bytes embedded), the
    canonical columns (id, image, title, attributes) and a dataset card. `load_catalog(out_dir)` reads it back."""
    from modeling.data.catalog import load_catalog

    dataset = load_catalog(source, max_items=max_items) if isinstance(source, (str, os.PathLike)) else source
    # Local file paths (the image's own, and e.g. `image_224` of the shared catalog) mean nothing elsewhere.
    dataset = dataset.remove_columns([c for c in dataset.column_names if c.startswith("image") and c != "image"])
    splits = sorted(set(dataset["split"]))
    parts = {split: dataset.filter(lambda s, want=split: s == want, input_columns="split", keep_in_memory=True)
             for split in splits}
    with staged_folder(out_dir, "README.md") as tmp:
        files = _write_parquet_splits(parts, tmp)
        counts = ", ".join(f"{split} {len(part):,}" for split, part in parts.items())
        body = (f"# Fashion search catalog\n\n{len(dataset):,} product photos with their titles and attributes "
                f"({counts}), in the canonical columns of the fashion search project: `id`, `image`, `title`, "
                f"`split`, then {', '.join(c for c in dataset.column_names if c not in ('id', 'image', 'title', 'split'))}."
                f"\n\n```python\nfrom datasets import load_dataset\ncatalog = load_dataset(\"REPO_ID\")\n```\n\n"
                f"The project's `load_catalog(\"REPO_ID\")` and `train.py --catalog REPO_ID` read it directly.\n\n"
                f"## Source and licence\n\n{DATASET_LICENSE_NOTE}\n")
        _dataset_card(tmp, pretty_name="Fashion search catalog", body=body,
                      configs=[{"config_name": "default", "data_files": files}],
                      tags=["fashion", "e-commerce", "image-retrieval"],
                      task_categories=["image-feature-extraction", "text-to-image", "image-classification"])
    return Path(out_dir)


def write_triplets_dataset(source, out_dir: str | os.PathLike, fashion_iq: str | os.PathLike | None = None,
                           change: Sequence[str] = ("baseColour",), seed: int = 0) -> Path:
    """Composed-retrieval triplets as a Hub dataset: catalog triplets per split (reference id, modification text,
    target id, the attributes deciding relevance) and, when given, Fashion-IQ's caption triplets (ids and captions;
    their images are not redistributed). Ids refer to the catalog dataset's `id` column."""
    from modeling.data.composed import catalog_triplets
    from modeling.data.fashion_iq import FASHION_IQ_CATEGORIES, load_fashion_iq
    from modeling.data.catalog import load_catalog

    catalog = load_catalog(source) if isinstance(source, (str, os.PathLike)) else source
    keep = ["reference_id", "target_id", "changed_attribute", "reference_value", "target_value", "modification",
            "articleType", "gender", "split"]
    parts = {}
    for split in sorted(set(catalog["split"])):
        triplets = catalog_triplets(catalog, split=split, change=tuple(change), seed=seed)
        parts[split] = triplets.select_columns([c for c in keep if c in triplets.column_names])
    configs = []
    with staged_folder(out_dir, "README.md") as tmp:
        configs.append({"config_name": "catalog", "data_files": _write_parquet_splits(parts, tmp, "catalog"),
                        "default": True})
        fiq_note = ""
        if fashion_iq is not None:
            fiq = {}
            for split in ("train", "val"):
                rows = load_fashion_iq(fashion_iq, categories=FASHION_IQ_CATEGORIES, split=split)
                fiq[split] = rows.select_columns([c for c in rows.column_names if "image" not in c])
            configs.append({"config_name": "fashion-iq", "data_files": _write_parquet_splits(fiq, tmp, "fashion-iq")})
            fiq_note = (f"\n- `fashion-iq`: the real Fashion-IQ caption triplets (candidate and target ASINs, two "
                        f"captions; train {len(fiq['train']):,}, val {len(fiq['val']):,}), without images.")
        counts = ", ".join(f"{split} {len(part):,}" for split, part in parts.items())
        body = (f"# Composed fashion retrieval triplets\n\nA reference product, a modification text and a target "
                f"product, for composed image retrieval (\"this photo, but make it blue\").\n\n"
                f"- `catalog` ({counts}): pairs of catalog items of the same articleType and gender with another "
                f"{', '.join(change)}; the text names the target's new value. Pairs never cross splits. A result "
                f"is relevant when it has the reference's articleType and gender and the target value."
                f"{fiq_note}\n\nJoin `reference_id` / `target_id` with the catalog dataset's `id` for images.\n\n"
                f"## Source and licence\n\n{DATASET_LICENSE_NOTE}\n")
        _dataset_card(tmp, pretty_name="Composed fashion retrieval triplets", body=body, configs=configs,
                      tags=["fashion", "composed-image-retrieval"], task_categories=["image-to-image"])
    return Path(out_dir)


def write_index_dataset(models: Mapping[str, str | os.PathLike], catalog, out_dir: str | os.PathLike,
                        index_dirs: Mapping[str, str | os.PathLike] | None = None) -> Path:
    """The catalog's embeddings as a Hub dataset, plus every model's FAISS index, ready for the app.

    - `data/embeddings.parquet`: id, title, attributes, and `embedding_<name>` (L2-normalised float32) per model;
    - `indexes/<name>/`: the index folder the app loads (`index.faiss`, `items.parquet`, `manifest.json` with the
      model's fingerprint, item-text embeddings, VSC cache). Local image paths are not shipped; the app takes the
      images from the catalog.

    A model's existing index (`index_dirs[name]`, default `<model>/index`) is reused when it was built by that model;
    otherwise the catalog is encoded."""
    import pandas as pd

    from modeling.retrieval.backends.faiss.index import CatalogIndex
    from modeling.retrieval.engine.search import FashionSearchEngine

    index_dirs = dict(index_dirs or {})
    frame = None
    with staged_folder(out_dir, "README.md") as tmp:
        for name, model_dir in models.items():
            index_dir = Path(index_dirs.get(name) or Path(model_dir) / "index")
            engine = FashionSearchEngine.load(model_dir, index_dir, catalog=catalog, rerank_model=None)
            target = tmp / "indexes" / name
            shutil.copytree(index_dir, target, ignore=shutil.ignore_patterns("rerank", ".*"))
            items = engine.index.items.copy()
            if "image_path" in items:
                items["image_path"] = ""
                items.to_parquet(target / "items.parquet", index=False)
            CatalogIndex.load(target, expected_model=engine.index.manifest["model"])  # the copy loads
            vectors = engine.index.vectors.reconstruct_batch(np.arange(len(items)))
            if frame is None:
                frame = items.drop(columns=[c for c in ("image_path",) if c in items])
            elif list(frame["id"]) != list(items["id"]):
                raise HubExportError(f"the index of {name} holds other items than the first model's; rebuild it "
                                     "from the same catalog")
            frame[f"embedding_{name}"] = list(vectors.astype(np.float32))
        (tmp / "data").mkdir()
        pd.DataFrame(frame).to_parquet(tmp / "data" / "embeddings.parquet", index=False)
        manifest = {name: json.loads((tmp / "indexes" / name / "manifest.json").read_text())["model"]
                    for name in models}
        (tmp / "indexes" / "models.json").write_text(json.dumps(manifest, indent=2))
        body = (f"# Fashion search index\n\nEmbeddings of {len(frame):,} catalog items by "
                f"{', '.join(models)} (one `embedding_<model>` column each, L2-normalised: inner product = cosine), "
                f"and each model's FAISS index under `indexes/<model>/`.\n\nThe app starts from it instead of "
                f"re-encoding the catalog: `FASHION_INDEX_REPO=REPO_ID python app.py` (or `--index-repo`). An index "
                f"records its model's fingerprint and is refused by any other model.\n\n"
                f"## Source and licence\n\n{DATASET_LICENSE_NOTE}\n")
        _dataset_card(tmp, pretty_name="Fashion search index", body=body,
                      configs=[{"config_name": "embeddings",
                                "data_files": [{"split": "train", "path": "data/embeddings.parquet"}]}],
                      tags=["fashion", "embeddings", "faiss"], task_categories=["image-feature-extraction"])
    return Path(out_dir)


__all__ = ["write_catalog_dataset", "write_index_dataset", "write_triplets_dataset"]
