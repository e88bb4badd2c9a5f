"""Encoder throughput per backend: PyTorch fp32, PyTorch bf16 and ONNX Runtime, with parity beside each.

    python benchmarks/encoders.py [--model runs/dual-encoder --model runs/vae] [--clip-b32] [--items 512]

For each model and tower (image, text) it encodes the same real catalog images and titles (test split) with each
backend, batch 64 after a warm-up, and prints items/s and the minimum / mean cosine similarity to PyTorch fp32.
`--clip-b32` adds CLIP ViT-B/32 (the shape of openai/clip-vit-base-patch32, random weights: the weights cannot be
downloaded here, and speed does not depend on them) with LoRA merged. Writes runs/bench/encoders.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling.hub.onnx_export import OnnxEncoder, export_onnx, parity_inputs  # noqa: E402
from modeling.retrieval.engine.search import FashionSearchEngine  # noqa: E402


def _features(out):
    return out.pooler_output if hasattr(out, "pooler_output") else out


def _batches(tower, inputs, tokenizer, processor, batch_size):
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        if tower == "image":
            yield processor(chunk, return_tensors="pt")
        else:
            batch = tokenizer(list(chunk), padding=True, truncation=True, max_length=64, return_tensors="pt")
            yield {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def run_backend(fn, batches, cast=None) -> tuple[float, np.ndarray]:
    """items/s (after one warm-up batch) and the embeddings."""
    with torch.inference_mode():
        first = batches[0]
        fn(**(cast(first) if cast else first))
        start, outs = time.perf_counter(), []
        for batch in batches:
            outs.append(_features(fn(**(cast(batch) if cast else batch))).float())
        seconds = time.perf_counter() - start
    return sum(len(o) for o in outs) / seconds, torch.cat(outs).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> dict:
    cos = F.cosine_similarity(torch.from_numpy(a), torch.from_numpy(b), dim=-1).numpy()
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def bench_model(name, model_dir, images, texts, batch_size, workdir) -> list[dict]:
    model, tokenizer, processor = FashionSearchEngine.load_model(model_dir)
    onnx_dir = Path(workdir) / name
    t0 = time.perf_counter()
    export_onnx(model_dir, onnx_dir)
    export_s = time.perf_counter() - t0
    encoder = OnnxEncoder(onnx_dir, threads=torch.get_num_threads())
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    towers = ["image"] + (["text"] if encoder.has_text else [])
    rows = []
    for tower in towers:
        inputs = images if tower == "image" else texts
        batches = list(_batches(tower, inputs, tokenizer, processor, batch_size))
        method = "get_image_features" if tower == "image" else "get_text_features"
        to_bf16 = (lambda b: {k: v.to(torch.bfloat16) for k, v in b.items()}) if tower == "image" else None
        fp32_speed, reference = run_backend(getattr(model, method), batches)
        results = {"pytorch fp32": (fp32_speed, reference),
                   "pytorch bf16": run_backend(getattr(bf16, method), batches, to_bf16),
                   "onnxruntime fp32": run_backend(getattr(encoder, method), batches)}
        for backend, (speed, embeds) in results.items():
            rows.append({"model": name, "tower": tower, "backend": backend, "items_per_s": round(speed, 1),
                         "parity_vs_fp32": cosine(embeds, reference), "items": len(inputs),
                         "onnx_export_s": round(export_s, 1) if backend.startswith("onnx") else None})
    return rows


def make_clip_b32(folder: Path) -> Path:
    """A CLIP ViT-B/32-shaped FashionClipModel folder with random weights (offline stand-in for speed figures)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    from modeling import FashionClipModel

    base = folder / "clip-b32-random-base"
    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).save_pretrained(base)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789-,.'&/ ":
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(f"{char}</w>", len(vocab))
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(base)
    processor = CLIPImageProcessorPil()
    model = FashionClipModel.from_clip_pretrained(str(base), lora_rank=8, combiner_hidden_size=512)
    out = folder / "clip-b32-random"
    model.save_pretrained(out)
    CLIPTokenizer.from_pretrained(base).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None, help="NAME=DIR or DIR (default: dual encoder, VAE)")
    p.add_argument("--clip-b32", action="store_true", help="also CLIP ViT-B/32 (random weights)")
    p.add_argument("--catalog", default="../shared/data")
    p.add_argument("--items", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", default="runs/bench/encoders.json")
    args = p.parse_args(argv)
    specs = args.model or ["dual-encoder=runs/dual-encoder", "vae=runs/vae"]
    images, texts = parity_inputs(args.catalog, args.items)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        models = {}
        for spec in specs:
            name, sep, path = spec.partition("=")
            models[name if sep else Path(spec).name] = path if sep else spec
        if args.clip_b32:
            models["clip-b32 (random weights)"] = make_clip_b32(Path(work))
        for name, path in models.items():
            rows.extend(bench_model(name, path, images, texts, args.batch_size, work))
    print(f"{'model':28} {'tower':6} {'backend':18} {'items/s':>9}  {'min cos':>9}  {'mean cos':>9}")
    for row in rows:
        print(f"{row['model']:28} {row['tower']:6} {row['backend']:18} {row['items_per_s']:9.1f}  "
              f"{row['parity_vs_fp32']['min']:9.6f}  {row['parity_vs_fp32']['mean']:9.6f}")
    report = {"command": "python benchmarks/encoders.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "threads": torch.get_num_threads(), "items": args.items, "batch_size": args.batch_size, "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
