"""Ship the project to the Hugging Face Hub: model folders, the catalog, the triplets, the index, and the Space.

Every push first writes the exact folder it uploads; `--dry-run DIR` stops there, so the folder can be inspected and
tested offline. Upload is `huggingface_hub.HfApi.upload_folder` of that same folder.

    python -m modeling.hub push MODEL_DIR REPO_ID --results runs/eval/results.json [--dry-run OUT]
    python -m modeling.hub push-catalog CATALOG REPO_ID [--dry-run OUT]
    python -m modeling.hub push-triplets CATALOG REPO_ID [--fashion-iq DIR] [--dry-run OUT]
    python -m modeling.hub push-index REPO_ID --model NAME=DIR ... --catalog CATALOG [--dry-run OUT]
    python -m modeling.hub push-space REPO_ID --model-repo ID --index-repo ID --catalog-repo ID [--dry-run OUT]

A model folder holds safetensors weights (the LoRA adapter, combiner and logit scale only for CLIP+LoRA, whose config
names the base CLIP), config, tokenizer, image processor, a `FashionSearchProcessor` (both in one), the model code
(so `AutoModel.from_pretrained(repo, trust_remote_code=True)` works without this package) and a model card generated
from an evaluate.py run. The push verifies the folder before uploading: it loads it back through both routes
(`modeling` classes and remote code) and compares embeddings of a few images and texts with the source model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from modeling.hub.datasets import write_catalog_dataset, write_index_dataset, write_triplets_dataset  # noqa: F401
from modeling.hub.folders import DATASET_LICENSE_NOTE, HubExportError, staged_folder  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

SPACE_FILES = ("app.py", "README.md", "LICENSE")
SPACE_REQUIREMENTS = "requirements-space.txt"


@contextlib.contextmanager
def auto_classes(*pairs) -> Iterator[None]:
    """Register classes for the Auto API (`(cls, "AutoModel")`, ...) for the duration of a save only: the code files
    and `auto_map` are written by that save, and nothing else saved in this process changes."""
    saved = [(cls, cls.__dict__.get("_auto_class", None), "_auto_class" in cls.__dict__) for cls, _ in pairs]
    try:
        for cls, name in pairs:
            cls.register_for_auto_class(name)
        yield
    finally:
        for cls, value, had in saved:
            if had:
                cls._auto_class = value
            else:
                with contextlib.suppress(AttributeError):
                    delattr(cls, "_auto_class")


def load_model_folder(model_dir: str | os.PathLike):
    """(model, tokenizer or None, image processor) of a saved model folder, with this package's classes."""
    from modeling.encoders.loading import load_model

    return load_model(model_dir)


def find_result_row(results: Mapping, model_dir: str | os.PathLike, name: str | None = None) -> dict:
    """The row of `results` (evaluate.py's results.json) that measured `model_dir` (or the row called `name`)."""
    rows = results.get("rows") or []
    target = os.path.realpath(model_dir)
    for row in rows:
        if name is not None and row.get("model") == name:
            return row
        if name is None and row.get("path") and os.path.realpath(row["path"]) == target:
            return row
    known = ", ".join(f"{r.get('model')} ({r.get('path')})" for r in rows) or "none"
    raise HubExportError(f"the evaluate.py results hold no row for {name or model_dir} (rows: {known}); run "
                         f"`python evaluate.py --model {model_dir} ...` first: the model card reports its figures")


def write_model_folder(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, repo_id: str,
                       results: Mapping | None, row_name: str | None = None,
                       base_model_id: str | None = None) -> Path:
    """Write the folder a push uploads for `model_dir` into `out_dir` (atomically). Returns `out_dir`.

    `base_model_id` renames the base CLIP of an adapter folder (e.g. a local copy used for training ->
    `openai/clip-vit-base-patch32`), so users load the base from the Hub."""
    from modeling.models.image_processing_dual_encoder import DualEncoderImageProcessor
    from modeling.evaluation.reports.model_card import render_pushed_card
    from modeling.models.processing_fashion_search import FashionSearchProcessor
    from modeling.evaluation.reports.cards import check_model_card

    if results is None:
        raise HubExportError("a model card needs evaluate.py results (--results runs/eval/results.json)")
    row = find_result_row(results, model_dir, row_name)
    model, tokenizer, image_processor = load_model_folder(model_dir)
    if base_model_id is not None:
        if not hasattr(model.config, "base_model_name_or_path"):
            raise HubExportError("--base-model-id applies to CLIP+LoRA adapter folders only")
        model.config.base_model_name_or_path = base_model_id
    pairs = [(type(model.config), "AutoConfig"), (type(model), "AutoModel")]
    if isinstance(image_processor, DualEncoderImageProcessor):
        pairs.append((DualEncoderImageProcessor, "AutoImageProcessor"))
    if tokenizer is not None:
        pairs.append((FashionSearchProcessor, "AutoProcessor"))
    with staged_folder(out_dir, "config.json") as tmp, auto_classes(*pairs):
        if tokenizer is not None:
            FashionSearchProcessor(image_processor, tokenizer).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        model.save_pretrained(tmp)  # weights (safetensors), config with auto_map, and the code files
        card = render_pushed_card(tmp, results, row, repo_id)
        check_model_card(card)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        stray = [p.name for p in tmp.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
        if stray:
            raise HubExportError(f"pickle files in the export: {stray}")
    return Path(out_dir)


def _sample_inputs(model_dir: str | os.PathLike, catalog=None, n: int = 8):
    """A few real catalog images and titles when a catalog is given, else synthetic images and shopper texts."""
    from PIL import Image

    if catalog is not None:
        from modeling.data.catalog import load_catalog

        data = load_catalog(catalog, max_items=n) if isinstance(catalog, (str, os.PathLike)) else catalog
        rows = data.select(range(min(n, len(data))))
        return list(rows["image"]), [t or "product" for t in rows["title"]]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)) for _ in range(n)]
    return images, ["red summer dress", "men black formal shoes", "blue denim jacket", "white sneakers"][:n]


@torch.inference_mode()
def _embeddings(model, tokenizer, image_processor, images, texts) -> dict[str, np.ndarray]:
    out = {"image": model.get_image_features(**image_processor(images, return_tensors="pt")).float().numpy()}
    if tokenizer is not None and callable(getattr(model, "get_text_features", None)):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        batch.pop("token_type_ids", None)
        out["text"] = model.get_text_features(**batch).float().numpy()
    return out


REMOTE_CODE_SCRIPT = """
import json, sys
import numpy as np, torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
folder, work = sys.argv[1], sys.argv[2]
spec = json.load(open(work + "/inputs.json"))
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
images = [Image.open(f"{work}/{i}.png").convert("RGB") for i in range(spec["num_images"])]
out = {}
with torch.inference_mode():
    out["image"] = model.get_image_features(**processor(images, return_tensors="pt")).float().numpy()
    if spec["texts"] is not None:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        batch = tokenizer(spec["texts"], padding=True, truncation=True, max_length=64, return_tensors="pt")
        batch.pop("token_type_ids", None)
        out["text"] = model.get_text_features(**batch).float().numpy()
np.savez(work + "/out.npz", **out)
print(type(model).__module__)
"""


def remote_code_embeddings(folder: str | os.PathLike, images, texts) -> tuple[dict[str, np.ndarray], str]:
    """Embeddings from `folder` loaded the way a user without this package loads it: a fresh interpreter, outside
    this repository, `AutoModel.from_pretrained(folder, trust_remote_code=True)`. Returns (embeddings, class module)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        for i, image in enumerate(images):
            image.convert("RGB").save(f"{work}/{i}.png")
        Path(work, "inputs.json").write_text(json.dumps({"num_images": len(images), "texts": texts}))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run([sys.executable, "-c", REMOTE_CODE_SCRIPT, str(Path(folder).resolve()), work],
                              cwd=work, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise HubExportError(f"loading {folder} with trust_remote_code failed:\n{done.stderr[-3000:]}")
        with np.load(f"{work}/out.npz") as data:
            return {key: data[key] for key in data.files}, done.stdout.strip().splitlines()[-1]


def verify_model_folder(folder: str | os.PathLike, source_dir: str | os.PathLike, catalog=None) -> dict:
    """Load `folder` with this package's classes, and with remote code in a fresh interpreter outside this repository;
    both must give the source model's embeddings of the same images and texts.

    Returns `{"package": max_abs_diff, "remote_code": max_abs_diff, "remote_class": module}`; raises
    `HubExportError` when a route differs by more than 1e-5 or the remote route did not use the folder's code."""
    images, texts = _sample_inputs(source_dir, catalog)
    reference = _embeddings(*load_model_folder(source_dir), images, texts)
    got = {"package": _embeddings(*load_model_folder(folder), images, texts)}
    got["remote_code"], module = remote_code_embeddings(folder, images, texts if "text" in reference else None)
    report = {"remote_class": module}
    if not module.startswith("transformers_modules."):
        raise HubExportError(f"the remote-code route loaded {module}, not the folder's code")
    for route, embeds in got.items():
        report[route] = max(float(np.abs(embeds[key] - reference[key]).max()) for key in reference)
        if report[route] > 1e-5:
            raise HubExportError(f"{folder} loaded via {route} gives other embeddings than {source_dir} "
                                 f"(max abs difference {report[route]:.2e})")
    return report


def write_space_folder(out_dir: str | os.PathLike, root: str | os.PathLike = ".") -> Path:
    """The Space: app.py, the `modeling` package, the README (its YAML header configures the Space) with the `docs/`
    it links to, and the Space's requirements (no local constraints file; the text tower comes from the Hub there)."""
    root = Path(root)
    with staged_folder(out_dir, "app.py") as tmp:
        for name in SPACE_FILES:
            if (root / name).exists():
                shutil.copy2(root / name, tmp / name)
        shutil.copytree(root / "modeling", tmp / "modeling", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if (root / "docs").is_dir():
            shutil.copytree(root / "docs", tmp / "docs")
        shutil.copy2(root / SPACE_REQUIREMENTS, tmp / "requirements.txt")
    return Path(out_dir)


# -- upload -------------------------------------------------------------------------------------------------------
def upload(folder: str | os.PathLike, repo_id: str, *, repo_type: str = "model", private: bool | None = None,
           token: str | None = None, commit_message: str | None = None, space_variables: Mapping | None = None):
    """Create the repository if needed and upload `folder` as one commit. Needs the network and a token."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    kwargs = {"space_sdk": "gradio"} if repo_type == "space" else {}
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **kwargs)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                             commit_message=commit_message or f"Upload {Path(folder).name} with modeling.hub")
    for key, value in (space_variables or {}).items():
        api.add_space_variable(repo_id, key, value)
    return info


def _export_folder(stack: contextlib.ExitStack, dry_run: str | os.PathLike | None) -> Path:
    """The folder an export writes: the dry-run folder, or a temporary one removed when `stack` closes."""
    import tempfile

    return Path(dry_run) if dry_run else Path(stack.enter_context(tempfile.TemporaryDirectory())) / "export"


def push_model(model_dir, repo_id: str, *, results: Mapping | None, dry_run: str | os.PathLike | None = None,
               row_name: str | None = None, base_model_id: str | None = None, catalog=None, private=None,
               token=None) -> dict:
    """Write (and unless `dry_run`, upload) the model folder; verify it first. Returns the verification report."""
    with contextlib.ExitStack() as stack:
        folder = _export_folder(stack, dry_run)
        write_model_folder(model_dir, folder, repo_id=repo_id, results=results, row_name=row_name,
                           base_model_id=base_model_id)
        report = {"folder": str(folder), "files": sorted(p.name for p in folder.iterdir())}
        if base_model_id is None:  # a renamed base cannot load offline; the package route was checked when saved
            report.update(verify_model_folder(folder, model_dir, catalog))
        if not dry_run:
            report["commit"] = str(upload(folder, repo_id, private=private, token=token))
        return report


def _read_results(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise HubExportError(f"cannot read evaluate.py results {path}: {error}") from error


def _named_models(specs: Sequence[str]) -> dict[str, str]:
    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/")).name, spec
        models[name] = path
    return models


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m modeling.hub", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(q):
        q.add_argument("--dry-run", metavar="DIR", default=None, help="write the folder to upload here and stop")
        q.add_argument("--private", action="store_true", default=None)
        q.add_argument("--token", default=None, help="Hub token (default: the logged-in user's)")

    q = sub.add_parser("push", help="a trained model folder")
    q.add_argument("model_dir")
    q.add_argument("repo_id")
    q.add_argument("--results", default="runs/eval/results.json", help="evaluate.py results.json for the card")
    q.add_argument("--row", default=None, help="the results row of this model (default: matched by its path)")
    q.add_argument("--base-model-id", default=None, help="CLIP+LoRA: Hub id of the base CLIP to name in the config")
    q.add_argument("--catalog", default=None, help="verify on a few of this catalog's images and titles")
    common(q)
    q = sub.add_parser("push-catalog", help="the catalog as a dataset with an Image feature")
    q.add_argument("catalog")
    q.add_argument("repo_id")
    q.add_argument("--max-items", type=int, default=None)
    common(q)
    q = sub.add_parser("push-triplets", help="composed-retrieval triplets")
    q.add_argument("catalog")
    q.add_argument("repo_id")
    q.add_argument("--fashion-iq", default=None, help="Fashion-IQ folder (captions/, image_splits/)")
    q.add_argument("--change", default="baseColour")
    common(q)
    q = sub.add_parser("push-index", help="embeddings parquet + FAISS indexes of trained models")
    q.add_argument("repo_id")
    q.add_argument("--model", action="append", required=True, help="NAME=DIR or DIR (repeatable)")
    q.add_argument("--catalog", required=True)
    common(q)
    q = sub.add_parser("push-space", help="the Gradio app as a Space")
    q.add_argument("repo_id")
    q.add_argument("--model-repo", default=None, help="FASHION_MODEL of the Space")
    q.add_argument("--extra-model-repo", action="append", default=[], help="FASHION_EXTRA_MODELS entries")
    q.add_argument("--index-repo", default=None, help="FASHION_INDEX_REPO of the Space")
    q.add_argument("--catalog-repo", default=None, help="FASHION_CATALOG of the Space")
    common(q)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    kind = {"push": "model", "push-space": "space"}.get(args.command, "dataset")
    try:
        if args.command == "push":
            report = push_model(args.model_dir, args.repo_id, results=_read_results(args.results),
                                dry_run=args.dry_run, row_name=args.row, base_model_id=args.base_model_id,
                                catalog=args.catalog, private=args.private, token=args.token)
            print(json.dumps(report, indent=2))
            return report
        with contextlib.ExitStack() as stack:
            folder = _export_folder(stack, args.dry_run)
            variables = None
            if args.command == "push-catalog":
                write_catalog_dataset(args.catalog, folder, max_items=args.max_items)
            elif args.command == "push-triplets":
                write_triplets_dataset(args.catalog, folder, args.fashion_iq, change=args.change.split(","))
            elif args.command == "push-index":
                write_index_dataset(_named_models(args.model), args.catalog, folder)
            else:
                write_space_folder(folder)
                variables = {key: value for key, value in {
                    "FASHION_MODEL": args.model_repo, "FASHION_EXTRA_MODELS": ",".join(args.extra_model_repo),
                    "FASHION_INDEX_REPO": args.index_repo, "FASHION_CATALOG": args.catalog_repo}.items() if value}
            if kind == "dataset":  # the card's loading snippet names the repository
                card = folder / "README.md"
                card.write_text(card.read_text().replace("REPO_ID", args.repo_id))
            report = {"folder": str(folder), "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                                                             if p.is_file())[:50]}
            if variables is not None:
                report["space_variables"] = variables
            if not args.dry_run:
                report["commit"] = str(upload(folder, args.repo_id, repo_type=kind, private=args.private,
                                              token=args.token, space_variables=variables))
            print(json.dumps(report, indent=2))
            return report
    except HubExportError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
