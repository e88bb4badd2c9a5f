"""ONNX export of each model's encoders, with a parity check against PyTorch on real catalog items.

    python -m modeling.hub.onnx_export MODEL_DIR OUT_DIR --catalog ../shared/data [--parity-items 256]

writes `OUT_DIR/image_encoder.onnx` and, for text models, `OUT_DIR/text_encoder.onnx` (CLIP+LoRA: with the LoRA
updates merged into the weights), the tokenizer and image processor (so ONNX Runtime users preprocess exactly as the
model was trained), and `onnx_config.json` (source model, its fingerprint, opset, and the parity measured). The
export fails, and writes nothing, when an encoder's cosine similarity to PyTorch on real catalog images and titles
falls below `--min-cosine` (0.999) for any item.

`OnnxEncoder(OUT_DIR)` runs the export with ONNX Runtime behind the PyTorch interface the indexer uses
(`get_image_features` / `get_text_features`), so `FashionSearchEngine.load(..., onnx_dir=OUT_DIR)` builds its index
with it; the index records the source model's fingerprint, and an export of another model is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modeling.encoders.onnx import IMAGE_FILE, ONNX_CONFIG, TEXT_FILE, OnnxEncoder

DEFAULT_OPSET = 17
DEFAULT_MIN_COSINE = 0.999


class OnnxParityError(RuntimeError):
    """The ONNX encoders do not reproduce the PyTorch embeddings closely enough (or belong to another model)."""


class _ImageTower(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model.get_image_features(pixel_values=pixel_values)
        return out.pooler_output if hasattr(out, "pooler_output") else out


class _TextTower(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return out.pooler_output if hasattr(out, "pooler_output") else out


def _export_module(model):
    """The module whose towers are exported: CLIP+LoRA with its adapters merged (a plain CLIPModel), else the model,
    with eager attention (the traced graph then holds plain matmuls and softmax)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload().eval()
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"
    return model


def _sample(model, tokenizer, processor):
    size = getattr(processor, "image_size", None)
    if size is None:
        crop = getattr(processor, "crop_size", None) or {"height": 224, "width": 224}
        size = [crop["height"], crop["width"]]
    pixel_values = torch.randn(2, 3, *size)
    text = None
    if tokenizer is not None:
        text = tokenizer(["red summer dress", "men black formal shoes for office"], padding=True,
                         return_tensors="pt")
    return pixel_values, text


def parity_inputs(catalog, n: int):
    """`n` real catalog images and titles (the first `n` items of the test split when there is one)."""
    from modeling.data.catalog import load_catalog

    if isinstance(catalog, (str, os.PathLike)):
        try:
            catalog = load_catalog(catalog, split="test", max_items=n)
        except Exception:  # no test split: any items
            catalog = load_catalog(catalog, max_items=n)
    rows = catalog.select(range(min(n, len(catalog))))
    return list(rows["image"]), [t or "product" for t in rows["title"]]


def measure_parity(model, tokenizer, processor, encoder: "OnnxEncoder", images, texts, batch_size: int = 64) -> dict:
    """Per-item cosine similarity between PyTorch and ONNX Runtime embeddings: `{tower: {min, mean, items}}`."""
    report = {}
    with torch.inference_mode():
        towers = {"image": (images, lambda batch: processor(batch, return_tensors="pt"),
                            model.get_image_features, encoder.get_image_features)}
        if tokenizer is not None and encoder.has_text:
            def tok(batch):
                out = tokenizer(list(batch), padding=True, truncation=True, max_length=64, return_tensors="pt")
                return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
            towers["text"] = (texts, tok, model.get_text_features, encoder.get_text_features)
        for tower, (inputs, prepare, torch_fn, onnx_fn) in towers.items():
            cosines = []
            for start in range(0, len(inputs), batch_size):
                batch = prepare(inputs[start:start + batch_size])
                reference = torch_fn(**batch)
                reference = reference.pooler_output if hasattr(reference, "pooler_output") else reference
                cosines.append(F.cosine_similarity(reference.float(), onnx_fn(**batch).float(), dim=-1).numpy())
            cos = np.concatenate(cosines)
            report[tower] = {"min": float(cos.min()), "mean": float(cos.mean()), "items": int(len(cos))}
    return report


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, catalog=None, parity_items: int = 256,
                min_cosine: float = DEFAULT_MIN_COSINE, opset: int = DEFAULT_OPSET) -> dict:
    """Export the encoders of `model_dir` to `out_dir` (atomically) and check parity on `catalog` items.

    Returns the written `onnx_config.json` content. Raises `OnnxParityError` (nothing written) below `min_cosine`."""
    from modeling.hub.push import staged_folder
    from modeling.encoders.loading import embedding_dim, load_model, model_fingerprint

    model, tokenizer, processor = load_model(model_dir)
    has_text = tokenizer is not None and callable(getattr(model, "get_text_features", None))
    exportable = _export_module(load_model(model_dir)[0])  # a copy: the reference stays as served
    pixel_values, text = _sample(model, tokenizer, processor)
    with staged_folder(out_dir, ONNX_CONFIG) as tmp:
        with torch.inference_mode():
            torch.onnx.export(_ImageTower(exportable).eval(), (pixel_values,), str(tmp / IMAGE_FILE), dynamo=False,
                              input_names=["pixel_values"], output_names=["image_embeds"], opset_version=opset,
                              dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
            if has_text:
                torch.onnx.export(_TextTower(exportable).eval(), (text["input_ids"], text["attention_mask"]),
                                  str(tmp / TEXT_FILE), dynamo=False, input_names=["input_ids", "attention_mask"],
                                  output_names=["text_embeds"], opset_version=opset,
                                  dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                                "attention_mask": {0: "batch", 1: "sequence"},
                                                "text_embeds": {0: "batch"}})
        processor.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        config = {"source": str(model_dir), "model_type": model.config.model_type,
                  "fingerprint": model_fingerprint(model), "embedding_dim": embedding_dim(model), "opset": opset,
                  "towers": ["image"] + (["text"] if has_text else []),
                  "merged_lora": hasattr(model, "merge_and_unload")}
        (tmp / ONNX_CONFIG).write_text(json.dumps(config, indent=2))
        if catalog is not None:
            images, texts = parity_inputs(catalog, parity_items)
            parity = measure_parity(model, tokenizer, processor, OnnxEncoder(tmp), images, texts)
            config["parity"] = parity
            (tmp / ONNX_CONFIG).write_text(json.dumps(config, indent=2))
            failed = {tower: r["min"] for tower, r in parity.items() if r["min"] < min_cosine}
            if failed:
                raise OnnxParityError(f"ONNX export of {model_dir} disagrees with PyTorch: minimum cosine {failed} "
                                      f"< {min_cosine} on {parity_items} catalog items; nothing was written")
    return config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m modeling.hub.onnx_export", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("out_dir")
    p.add_argument("--catalog", default="../shared/data", help="catalog whose images and titles check parity")
    p.add_argument("--parity-items", type=int, default=256)
    p.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        config = export_onnx(args.model_dir, args.out_dir, catalog=args.catalog, parity_items=args.parity_items,
                             min_cosine=args.min_cosine, opset=args.opset)
    except OnnxParityError as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps(config, indent=2))
    return config


__all__ = ["OnnxEncoder", "OnnxParityError", "export_onnx", "measure_parity", "parity_inputs"]

if __name__ == "__main__":
    main(sys.argv[1:])
